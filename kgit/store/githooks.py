"""Installing kgit's git hooks: tiny shims that call the installed kgit, chaining what was there.

The shims' source of truth is ``shim()`` below; the repository's ``hooks/`` folder holds the same
scripts rendered for a ``kgit`` on PATH (a test keeps them equal). An installed shim records the
Python that installed it, so the hook works from GUIs and IDEs whose PATH lacks the venv.

A hook file that is not kgit's (the team's own, or DVC's from ``dvc install``) is moved aside to
``<hook>.kgit-chained`` and run by the shim after kgit's check; uninstall moves it back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kgit.core.errors import KgitError
from kgit.core.fsutil import write_atomic
from kgit.store.git_ops import Repo

HOOKS = ("pre-commit", "pre-merge-commit", "pre-push")  # pre-merge-commit: git merge runs it, not pre-commit
MARKER = "kgit-hook-shim"
CHAINED_SUFFIX = ".kgit-chained"

_TEMPLATE = """\
#!/bin/sh
# {marker} ({hook}): installed by `kgit {group} install`, removed by `kgit {group} uninstall`.
# Runs kgit's check, then the hook that was here before kgit (moved to {hook}{chained}), if any.
# Skip all hooks for one command with --no-verify.
KGIT_PYTHON="{python}"
HOOK={hook}
here=$(cd "$(dirname "$0")" && pwd)
{read_stdin}
if [ -n "$KGIT_PYTHON" ] && [ -x "$KGIT_PYTHON" ] && "$KGIT_PYTHON" -c "import kgit" 2>/dev/null; then
    "$KGIT_PYTHON" -m kgit hook "$HOOK" "$@" {redirect}|| exit $?
elif command -v kgit >/dev/null 2>&1; then
    kgit hook "$HOOK" "$@" {redirect}|| exit $?
else
    echo "kgit: the $HOOK hook cannot find kgit: install it (pip install kgit), or skip this once with --no-verify" >&2
    exit 1
fi
if [ -x "$here/$HOOK{chained}" ]; then
    "$here/$HOOK{chained}" "$@" {redirect}|| exit $?
fi
exit 0
"""

_READ_STDIN = """\
# git gives the pushed refs on stdin: keep a copy for each hook that reads them.
refs=$(mktemp "${TMPDIR:-/tmp}/kgit-pre-push.XXXXXX") || exit 1
trap 'rm -f "$refs"' EXIT
cat > "$refs\""""


READS_STDIN = ("pre-push", "pre-receive")  # hooks git gives the pushed refs on stdin


def shim(hook: str, python: str = "") -> str:
    """The shim script for ``hook``; ``python`` is the interpreter to try first (empty: PATH only)."""
    refs = hook in READS_STDIN
    return _TEMPLATE.format(
        marker=MARKER,
        hook=hook,
        chained=CHAINED_SUFFIX,
        python=python,
        group="server" if hook == "pre-receive" else "hooks",
        read_stdin=_READ_STDIN.replace("kgit-pre-push", f"kgit-{hook}") if refs else "",
        redirect='< "$refs" ' if refs else "",
    )


def hooks_dir(repo: Repo) -> Path:
    """Where git looks for hooks (honours core.hooksPath)."""
    path = Path(repo.git("rev-parse", "--git-path", "hooks"))
    return path if path.is_absolute() else (repo.root / path)


def _is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")[:400]
    except OSError:
        return False


def install(repo: Repo, names: tuple[str, ...] = HOOKS) -> list[str]:
    """Install kgit's shims; idempotent. Returns human-readable changes (empty: nothing to do)."""
    folder = hooks_dir(repo)
    folder.mkdir(parents=True, exist_ok=True)
    changes = []
    for hook in names:
        path = folder / hook
        chained = folder / (hook + CHAINED_SUFFIX)
        text = shim(hook, sys.executable)
        if path.exists() and _is_ours(path):
            if path.read_text() != text:
                write_atomic(path, text, executable=True)
                changes.append(f"updated kgit's {hook} hook")
            continue
        if path.exists() or path.is_symlink():
            if chained.exists():
                raise KgitError(
                    f"{path} is not kgit's, and {chained.name} (an earlier hook kgit chains) exists too: "
                    "merge them by hand, then run `kgit hooks install` again"
                )
            os.replace(path, chained)
            write_atomic(path, text, executable=True)
            changes.append(f"installed kgit's {hook} hook (the existing one still runs after it, as {chained.name})")
        else:
            write_atomic(path, text, executable=True)
            changes.append(f"installed kgit's {hook} hook")
    return changes


def uninstall(repo: Repo, names: tuple[str, ...] = HOOKS) -> list[str]:
    """Remove kgit's shims and put back the hooks they chained."""
    folder = hooks_dir(repo)
    changes = []
    for hook in names:
        path = folder / hook
        chained = folder / (hook + CHAINED_SUFFIX)
        if path.exists() and not _is_ours(path):
            changes.append(f"left the {hook} hook alone (it is not kgit's)")
            continue
        if path.exists():
            path.unlink()
            changes.append(f"removed kgit's {hook} hook")
        if chained.exists() and not path.exists():
            os.replace(chained, path)
            changes.append(f"restored the earlier {hook} hook")
    return changes
