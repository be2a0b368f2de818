"""Where a release comes from, told truthfully: the code that made the model, whether it was
committed, and whether the model is one released before.

- **The entry**: the script or module the model came from. ``--from MODULE:FUNCTION``: that
  module's file; ``kgit.release(model)`` called from Python: the running script (``__main__``) if it
  is in the repository, else the file of the code that called kgit; otherwise the ``--builder``
  module's file; a model released from a file by the command line has no known entry.
- **The code it ran with**: every module the releasing process had imported whose file is in the
  repository (installed packages and kgit itself left out), checked against HEAD with git alone:
  ``untracked`` (not in HEAD), ``modified`` (changed since HEAD, staged or not).
- **Repeated weights**: a digest of the weights and optimizer variables is recorded with each
  release (kgit.models.training_state.weights_digest); a new release whose digest equals an earlier
  version's is released with a warning naming that version. Digests are read from each version's
  ``.dvc`` file at its release commit; versions released before kgit recorded one are not compared.

No TensorFlow, no DVC.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError
from kgit.core.metadata import SourceInfo
from kgit.registry import catalog
from kgit.store.dvc_ops import read_dvc_file
from kgit.store.git_ops import Repo

_INSTALLED = ("site-packages", "dist-packages")
_PATHSPECS_PER_CALL = 500


@dataclass(frozen=True)
class Caller:
    """Who called ``kgit.release`` from Python: the running script and the calling frame's file."""

    main_file: str | None
    frame_file: str | None


def _is_kgit(module_name: str) -> bool:
    return module_name == "kgit" or module_name.startswith("kgit.")


def caller(depth: int = 2) -> Caller | None:
    """The user code that called the function ``depth - 1`` frames up (``kgit.release``); None when
    kgit's command line (or kgit itself) made the call: then no script of the user's is running."""
    frame = sys._getframe(depth)
    while frame is not None and _is_kgit(str(frame.f_globals.get("__name__", ""))):
        if str(frame.f_globals.get("__name__", "")).startswith("kgit.cli"):
            return None
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    main = sys.modules.get("__main__")
    return Caller(getattr(main, "__file__", None), frame.f_code.co_filename)


def _inside(path: str, root: Path) -> str | None:
    """``path`` relative to ``root`` (POSIX), None if it is not a file inside it."""
    if not path or path.startswith("<"):
        return None
    real = Path(os.path.realpath(path))
    try:
        rel = real.relative_to(root)
    except ValueError:
        return None
    if not real.is_file() or rel.parts[:1] == (".git",) or any(p in _INSTALLED for p in rel.parts):
        return None
    return rel.as_posix()


def _module_file(module: str) -> str | None:
    mod = sys.modules.get(module)
    found = getattr(mod, "__file__", None) if mod is not None else None
    if found:
        return str(found)
    try:
        import importlib.util

        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def entry(root: Path, source: Any, builder: str | None, call: Caller | None) -> str | None:
    """The file the model came from (see the module's docstring): relative to ``root`` when it is
    inside, else as Python knows it (an absolute path, ``<stdin>``); None when unknown."""
    found: str | None = None
    if isinstance(source, str) and ":" in source and not os.path.exists(source):
        found = _module_file(source.partition(":")[0])
    elif call is not None:
        candidates = [c for c in (call.main_file, call.frame_file) if c]
        found = next((c for c in candidates if _inside(c, root)), call.frame_file or call.main_file)
    elif builder:
        found = _module_file(builder.partition(":")[0])
    if not found:
        return None
    rel = _inside(found, root)
    if rel is not None:
        return rel
    return found if found.startswith("<") else os.path.realpath(found)


def loaded_files(root: Path) -> list[str]:
    """The repository's files among the modules this process has imported (kgit's own and installed
    packages left out), relative to ``root``."""
    found = set()
    for name, module in list(sys.modules.items()):
        if _is_kgit(name):
            continue
        path = getattr(module, "__file__", None)
        rel = _inside(str(path), root) if isinstance(path, str) else None
        if rel is not None:
            found.add(rel)
    return sorted(found)


def _chunks(paths: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(paths), _PATHSPECS_PER_CALL):
        yield [f":(literal){p}" for p in paths[i : i + _PATHSPECS_PER_CALL]]


def collect(git: Repo, entry_path: str | None, files: Iterable[str]) -> SourceInfo:
    """The source block: ``files`` (and the entry, when it is in the repository) checked against HEAD."""
    head = git.head()
    outside = entry_path is not None and SourceInfo(None, entry_path, False).entry_outside
    wanted = sorted({*files, *([entry_path] if entry_path is not None and not outside else [])})
    in_head: set[str] = set()
    changed: set[str] = set()
    if head is not None:
        for specs in _chunks(wanted):
            listed = git.git("ls-tree", "-r", "-z", "--name-only", "--full-tree", "HEAD", "--", *specs, raw=True)
            in_head.update(p for p in listed.split("\0") if p)
            diffed = git.git("diff", "--name-only", "-z", "--no-renames", "HEAD", "--", *specs, raw=True)
            changed.update(p for p in diffed.split("\0") if p)
    untracked = [p for p in wanted if p not in in_head]
    modified = [p for p in wanted if p in in_head and p in changed]
    return SourceInfo(
        commit=head,
        entry=entry_path,
        dirty=bool(untracked or modified or outside),
        modified=modified,
        untracked=untracked,
    )


def source_info(git: Repo, source: Any, builder: str | None, call: Caller | None) -> SourceInfo:
    """What a release records about its code (see the module's docstring), now."""
    return collect(git, entry(git.root, source, builder, call), loaded_files(git.root))


def source_warning(info: SourceInfo) -> str | None:
    """What a release says when the code that made the model is not all committed."""
    if not info.dirty:
        return None
    if info.uncommitted:
        files = info.uncommitted
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        return (
            f"the code that made the model is not all committed: {shown}; recorded in the release's source "
            "(commit them before releasing for a release that names its code)"
        )
    return f"the model came from {info.entry}, outside the repository: recorded in the release's source"


def same_weights(git: Repo, name: str, digest: str | None) -> list[str]:
    """The versions of model ``name`` whose recorded weights digest is ``digest`` (lowest first), from
    their ``.dvc`` files in git; versions without one are not compared."""
    if not digest:
        return []
    rels = [r for r in catalog.read(git, name).releases if r.valid and r.formats]
    texts = git.show_files([(r.commit, r.dvc_file(next(iter(r.formats)))) for r in rels])
    found = []
    for rel in rels:
        text = texts.get((rel.commit, rel.dvc_file(next(iter(rel.formats)))))
        if text is None or digest not in text:  # a plain search first: most versions never match
            continue
        try:
            meta = (read_dvc_file(text, rel.dvc_file(next(iter(rel.formats)))).get("meta") or {}).get("kgit") or {}
        except (KgitError, AttributeError):
            continue
        if isinstance(meta, dict) and meta.get("weights_sha256") == digest:
            found.append(rel.version)
    return found


def duplicate_warning(name: str, versions: list[str]) -> str | None:
    """``the weights equal mnist@v3's: nothing was trained since?``, or None."""
    if not versions:
        return None
    named = [f"{name}@{v}'s" for v in versions[-3:]]
    shown = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
    earlier = len(versions) - len(named)
    more = f" (and {earlier} earlier version{'s' if earlier != 1 else ''})" if earlier else ""
    return (
        f"the weights and optimizer state equal {shown}{more}: nothing was trained since? "
        "(released anyway; `kgit deprecate` the new version if it was a mistake)"
    )
