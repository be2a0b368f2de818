"""The environments a team promises its releases load in: ``.kgit/compat.yaml``.

::

    serving: ["tensorflow==2.18.*"]                    # TF Serving 2.18 reads the SavedModel
    keras-next: ["keras==3.12.*", "tensorflow==2.21.*"]
    legacy: ["tf-keras==2.21.*"]                       # Keras 2 readers

Each name (lowercase letters, digits, ``-``, ``_``) maps to package requirement specifiers, as
``kgit compat --with`` takes them; ``kgit compat NAME@VERSION --env serving`` checks a release there.
A stage entry of ``.kgit/gates.yaml`` can say ``require_compat: [serving]``: a promotion to that
stage then needs a compat record of the release that loads in an environment meeting every
specifier of ``serving`` *as committed with the gates* (kgit.registry.gates reads both files at one
commit), so widening an environment later does not make old records count for it. Git only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgit.core.errors import KgitError
from kgit.registry.compat_records import parse_requirement

if TYPE_CHECKING:
    from pathlib import Path

    from kgit.store.git_ops import Repo

ENVS_FILE = ".kgit/compat.yaml"
MAX_FILE_BYTES = 100_000
MAX_SPECS = 50


class CompatEnvError(KgitError):
    """``.kgit/compat.yaml`` cannot be read, or names no such environment."""


def parse(text: str | bytes, where: str = ENVS_FILE) -> dict[str, list[str]]:
    """Environment name -> its specifiers; CompatEnvError naming the problem if malformed."""
    from kgit.core import bounded_yaml
    from kgit.registry.versions import check_name

    data = bounded_yaml.load(text, where, max_bytes=MAX_FILE_BYTES, max_nodes=10_000)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CompatEnvError(
            f"{where} must map environment names to lists of package requirements "
            '(e.g. serving: ["tensorflow==2.18.*"])'
        )
    envs: dict[str, list[str]] = {}
    for name, specs in data.items():
        try:
            check_name(name)
        except KgitError:
            raise CompatEnvError(
                f"{where}: {str(name)[:40]!r} is not an environment name (lowercase letters, digits, '-' and '_')"
            ) from None
        if isinstance(specs, str):
            specs = [specs]
        if not isinstance(specs, list) or not specs or len(specs) > MAX_SPECS:
            raise CompatEnvError(f"{where}: environment {name} must list 1 to {MAX_SPECS} package requirements")
        for spec in specs:
            parse_requirement(spec, f"{where}: environment {name}:")
        envs[name] = [str(s) for s in specs]
    return envs


def read_file(path: Path) -> dict[str, list[str]]:
    """The environments in the file at ``path`` (none if it does not exist)."""
    from kgit.core import bounded_yaml

    if not path.exists():
        return {}
    return parse(bounded_yaml.read_bytes(path, ENVS_FILE, max_bytes=MAX_FILE_BYTES), ENVS_FILE)


def read_at(repo: Repo, commit: str, where: str = ENVS_FILE) -> dict[str, list[str]]:
    """The environments committed at ``commit`` (none if the file is absent there)."""
    text = repo.show_file(commit, ENVS_FILE)
    return parse(text, f"{where} (at {commit[:8]})") if text is not None else {}


def lookup(envs: dict[str, Any], name: str, where: str = ENVS_FILE) -> list[str]:
    """The specifiers of environment ``name``; CompatEnvError naming the ones there are if it is not defined."""
    if name not in envs:
        have = ", ".join(sorted(envs)) or "none"
        raise CompatEnvError(
            f"{where} defines no environment {name!r} (it has: {have}); add it, e.g. "
            f'{name}: ["tensorflow==2.18.*"], and commit it'
        )
    return list(envs[name])
