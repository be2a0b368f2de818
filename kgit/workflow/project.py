"""A repository set up for kgit: ``kgit init``, and the dvc.yaml entries kgit owns.

kgit owns two things in ``dvc.yaml``: the validation stage (written once by ``kgit init``) and one
entry per model in the ``artifacts:`` section (updated by each release so that, at a release tag,
it points at that release's folder and ``dvc artifacts get REPO NAME --rev TAG`` fetches it).

This is the one module that uses ruamel.yaml, because it is the one place kgit rewrites a YAML file
someone else owns and must keep that file's comments and key order (``dvc.yaml``, and ``dvc.lock``
at set-up). ruamel has no limits of its own, so kgit.core.bounded_yaml checks the bytes first; every
other YAML read or write goes through kgit.core.bounded_yaml alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError, NotInitialisedError, one_line
from kgit.core.fsutil import write_atomic
from kgit.core.layout import DVC_DIR, DVC_LOCK, DVC_SUFFIX, DVC_YAML, DVC_YAML_ARTIFACTS, STAGE_NAME
from kgit.store import dvc_ops, dvc_remotes
from kgit.store.git_ops import Repo

# The validation stage, exactly as `kgit init` writes it (the repository's own dvc.yaml holds it too).
VALIDATE_STAGE: dict[str, Any] = {
    "desc": "Round-trip validation of kgit model releases: check file hashes, reload each released "
    "version in a fresh process, rerun its reference inputs and compare with its recorded outputs.",
    "cmd": "kgit validate --all",
    "always_changed": True,
}


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 120
    return y


def _round_trip(path: Path, what: str, fix: str) -> Any:
    """The YAML file at ``path`` as ruamel reads it for rewriting (comments and order kept), None if it
    does not exist. kgit's bounded reader sees the bytes first: size, values with aliases expanded and
    nesting are checked before ruamel, which has no such limits, parses anything."""
    from kgit.store.dvc_ops import MAX_DVC_FILE, MAX_DVC_VALUES

    if not path.exists():
        return None
    raw = bounded_yaml.read_bytes(path, what, max_bytes=MAX_DVC_FILE, fix=fix)
    bounded_yaml.check(raw, what, max_bytes=MAX_DVC_FILE, max_nodes=MAX_DVC_VALUES, fix=fix)
    from ruamel.yaml import YAMLError

    try:
        data = _yaml().load(raw.decode("utf-8"))
    except (YAMLError, UnicodeDecodeError) as exc:
        raise KgitError(f"{what} is not valid YAML ({one_line(exc, 200)}): {fix}") from None
    sections = ("stages", DVC_YAML_ARTIFACTS) if what == DVC_YAML else ("stages",)
    if data is not None and (
        not isinstance(data, dict) or not all(isinstance(data.get(k), (dict, type(None))) for k in sections)
    ):
        raise KgitError(
            f"{what} is not what DVC reads (a mapping with {' and '.join(f'`{k}:`' for k in sections)} mappings): {fix}"
        )
    return data


def read_dvc_yaml(root: Path) -> Any:
    return _round_trip(root / DVC_YAML, DVC_YAML, "fix or restore it")


def dump_dvc_yaml(data: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return buf.getvalue()


def with_validate_stage(data: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap

    data = data if data is not None else CommentedMap()
    stages = data.setdefault("stages", CommentedMap())
    if stages is None:
        stages = data["stages"] = CommentedMap()
    if dict(stages.get(STAGE_NAME) or {}) != VALIDATE_STAGE:
        stages[STAGE_NAME] = CommentedMap(VALIDATE_STAGE)
    return data


def lock_with_validate_stage(root: Path) -> str | None:
    """dvc.lock with the stage's entry, so `dvc repro` of it (the pre-push hook) changes no file.

    The stage has no dependencies or outputs, so its lock entry is just its command. Returns the new
    text, or None when the file already holds it."""
    from ruamel.yaml.comments import CommentedMap

    data = _round_trip(root / DVC_LOCK, DVC_LOCK, "fix or delete it")
    data = data if data is not None else CommentedMap({"schema": "2.0"})
    stages = data.get("stages")
    if stages is None:
        stages = data["stages"] = CommentedMap()
    if dict(stages.get(STAGE_NAME) or {}) == {"cmd": VALIDATE_STAGE["cmd"]}:
        return None
    stages[STAGE_NAME] = CommentedMap({"cmd": VALIDATE_STAGE["cmd"]})
    return dump_dvc_yaml(data)


def with_artifact(data: Any, name: str, path: str, desc: str, meta: dict[str, Any]) -> Any:
    from ruamel.yaml.comments import CommentedMap

    arts = data.setdefault(DVC_YAML_ARTIFACTS, CommentedMap())
    if arts is None:
        arts = data[DVC_YAML_ARTIFACTS] = CommentedMap()
    arts[name] = CommentedMap(
        {"path": path, "type": "model", "desc": desc, "labels": ["kgit"], "meta": CommentedMap(meta)}
    )
    return data


def require_initialised(repo: Repo) -> None:
    if not dvc_ops.is_initialised(repo.root):
        raise NotInitialisedError(f"{repo.root} is not set up for kgit (no .dvc/): run `kgit init` first")
    data = read_dvc_yaml(repo.root)
    stages = (data or {}).get("stages") or {}
    if STAGE_NAME not in stages:
        raise NotInitialisedError(f"{DVC_YAML} has no {STAGE_NAME} stage: run `kgit init` first")


def check_checkout(repo: Repo) -> None:
    """Refuse to set up a clone whose checkout is empty while a branch holds kgit's set-up: cloning a
    repository whose HEAD names a branch that does not exist (a bare repository made with git's
    default ``master`` while the team pushes ``main``) checks out no commit, and a set-up made there
    would be a second one, with its own DVC remote."""
    if repo.head() is not None:
        return
    refs = [
        r
        for r in repo.git("for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes").splitlines()
        if r and not r.endswith("/HEAD")
    ]
    texts = repo.show_files(
        [(ref, path) for ref in refs for path in (".dvc/config", DVC_YAML)], max_bytes=bounded_yaml.MAX_BYTES
    )
    holding = [
        ref
        for ref in refs
        if texts.get((ref, ".dvc/config")) is not None
        and _has_validate_stage(texts.get((ref, DVC_YAML)), f"{DVC_YAML} of {ref}")
    ]
    if not holding:
        return
    names = [r.removeprefix("refs/heads/").removeprefix("refs/remotes/") for r in holding]
    local = [r.removeprefix("refs/heads/") if r.startswith("refs/heads/") else r.split("/", 3)[3] for r in holding]
    branch = repo.branch() or "HEAD"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise KgitError(
        f"this clone has no commit checked out (its branch {branch} has none: the remote's HEAD may name "
        f"a branch that does not exist), but {shown} already hold{'s' if len(names) == 1 else ''} kgit's "
        f"set-up: run `git checkout {local[0]}` and use kgit there; nothing was changed"
    )


def _has_validate_stage(text: str | None, what: str) -> bool:
    if text is None:
        return False
    try:
        data = bounded_yaml.load(text, what)
    except KgitError:
        return False
    stages = data.get("stages") if isinstance(data, dict) else None
    return isinstance(stages, dict) and STAGE_NAME in stages


def check_dvc_files(repo: Repo) -> None:
    """Refuse, before DVC reads them, the DVC files it would choke on. DVC parses every ``dvc.yaml``,
    ``dvc.lock`` and ``.dvc`` file in the work tree (`dvc add`, `dvc repro`, checkout) without limits:
    a 1 KB file of nested YAML aliases keeps it busy for ever. Files without aliases and with little
    nesting, as DVC and kgit write them, pass on sight; the others go through kgit's bounded reader."""
    from kgit.store.dvc_ops import MAX_DVC_FILE, MAX_DVC_VALUES

    listed = repo.git(
        "ls-files", "-z", "--", f":(glob)**/*{DVC_SUFFIX}", f":(glob)**/{DVC_YAML}", f":(glob)**/{DVC_LOCK}", raw=True
    )
    root = str(repo.root)
    for rel in filter(None, listed.split("\0")):
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue  # deleted in the work tree: DVC does not read it either
        fix = f"fix it, or restore it with `git checkout -- {rel}`"
        raw = bounded_yaml.read_bytes(Path(path), rel, max_bytes=MAX_DVC_FILE, fix=fix)
        if b"&" in raw or b"*" in raw or raw.count(b"[") + raw.count(b"{") > bounded_yaml.MAX_DEPTH:
            bounded_yaml.check(raw, rel, max_bytes=MAX_DVC_FILE, max_nodes=MAX_DVC_VALUES, fix=fix)


def before_dvc(repo: Repo, log: Any = None) -> None:
    """What runs before DVC reads this repository for a command that otherwise only reads (the
    pre-push hook's `dvc repro`, `kgit get`'s checkout): DVC's files within bounds, and DVC's lock
    file repaired if a killed process left it unreadable (writers repair it in recovery)."""
    from kgit.store import dvc_locks

    check_dvc_files(repo)
    dvc_locks.before_dvc(repo, log)


def default_remote_path(root: Path) -> Path:
    """The built-in default remote: a folder beside the repository, visible and easy to back up."""
    return root.parent / f"{root.name}.dvc-storage"


@dataclass
class InitResult:
    root: str
    remote_name: str | None
    remote_url: str | None
    changes: list[str] = field(default_factory=list)
    commit: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def remote_folder(url: str, base: Path) -> Path | None:
    """The local folder a DVC remote URL names, symlinks resolved (relative paths are taken from
    ``base``); None for a remote on another host (s3://, ssh://, ...)."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", url) and not url.lower().startswith("file://"):
        return None
    path = Path(_file_url_path(url)).expanduser()
    return Path(os.path.realpath(path if path.is_absolute() else base / path))


def _file_url_path(url: str) -> str:
    """``file:///srv/store`` -> ``/srv/store``; anything else as it is."""
    if not url.lower().startswith("file://"):
        return url
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise KgitError(f"remote {url} names another host: give a folder on this machine, or an ssh:// URL")
    return unquote(parsed.path)


def _inside(folder: Path, root: Path) -> bool:
    return folder == root or root in folder.parents


def _checked_remote(remote: str, root: Path) -> str:
    """``--remote`` as it will be configured (file:// URLs and relative folders made absolute), refused if
    it is empty or inside the repository, where `git clean -fdx` would delete the release data."""
    if not remote.strip():
        raise KgitError(
            f"--remote is empty: give a folder outside the repository or a DVC remote URL, "
            f"e.g. --remote {default_remote_path(root)}"
        )
    wanted = _file_url_path(remote)
    folder = remote_folder(wanted, Path.cwd())  # relative folders are relative to where you ran kgit
    if folder is None:
        return wanted
    if _inside(folder, root):
        raise KgitError(
            f"remote {remote} is inside the repository ({folder}), where `git clean -fdx` would delete "
            f"the release data: pick a folder outside it, e.g. --remote {default_remote_path(root)}"
        )
    return wanted if Path(wanted).expanduser().is_absolute() else str(folder)


def _check_configured_remote(name: str | None, url: str | None, root: Path) -> None:
    """Refuse a default remote already configured (e.g. by `dvc remote add -d`) inside the repository."""
    if not url:
        return
    # DVC reads a file:// URL as a folder named "file:" under the current folder: inside the repository
    folder = root / "file:" if url.lower().startswith("file://") else remote_folder(url, root)
    if folder is not None and _inside(folder, root):
        raise KgitError(
            f"the default DVC remote {name} ({url}) is inside the repository, where `git clean -fdx` "
            f"would delete the release data: point kgit at a folder outside it, "
            f"e.g. `kgit init --remote {default_remote_path(root)}`"
        )


def init(
    path: str | os.PathLike[str] = ".",
    remote: str | None = None,
    commit: bool = True,
    remote_options: dict[str, str] | None = None,
) -> InitResult:
    """Set up a git repository for kgit. Running it again changes nothing; a remote inside the
    repository (given, or already configured) is refused before anything is changed.

    ``remote_options`` are DVC settings of the default remote (``endpointurl``, ``region``, ...):
    shared ones go to ``.dvc/config`` (committed), a person's own (credentials, ``profile``, paths to
    their files: ``dvc_remotes.PERSONAL_OPTIONS``) to ``.dvc/config.local``, which git ignores."""
    from kgit.store import githooks

    repo = Repo(path)
    check_checkout(repo)
    root = repo.root
    changes: list[str] = []
    to_commit: list[str] = []
    options = dict(remote_options or {})
    wanted = _checked_remote(remote, root) if remote is not None else None
    if wanted is not None:
        _check_remote_url(wanted, options)

    if dvc_ops.is_initialised(root):
        name, url = dvc_ops.default_remote(root)
        if wanted is None:
            _check_configured_remote(name, url, root)
            if options:  # a teammate's `kgit init` in a clone only installs hooks: no plugin needed for that
                _check_remote_url(url or str(default_remote_path(root)), options)
    else:
        dvc_ops.init(root)
        changes.append("ran dvc init")
        to_commit += [".dvc/config", ".dvc/.gitignore", ".dvcignore"]
        name, url = dvc_ops.default_remote(root)
        if wanted is None:
            try:
                _check_configured_remote(name, url, root)  # a default remote from the user's DVC config
                if options:
                    _check_remote_url(url or str(default_remote_path(root)), options)
            except KgitError:
                _undo_dvc_init(root)
                raise

    data = read_dvc_yaml(root)
    before = dump_dvc_yaml(data) if data is not None else None
    after = dump_dvc_yaml(with_validate_stage(data))
    if after != before:
        write_atomic(root / DVC_YAML, after)
        changes.append(f"added the {STAGE_NAME} stage to {DVC_YAML}")
        to_commit.append(DVC_YAML)

    lock_text = lock_with_validate_stage(root)
    if lock_text is not None:
        write_atomic(root / DVC_LOCK, lock_text)
        changes.append(f"recorded the {STAGE_NAME} stage in {DVC_LOCK}")
        to_commit.append(DVC_LOCK)

    if wanted is None and url is None:
        local = default_remote_path(root)
        local.mkdir(parents=True, exist_ok=True)
        wanted = str(local)
    if wanted is not None and wanted != url:
        if "://" not in wanted:
            Path(wanted).expanduser().mkdir(parents=True, exist_ok=True)
        dvc_ops.set_default_remote(root, wanted)
        changes.append(f"set the default DVC remote to {wanted}")
        to_commit.append(".dvc/config")
        name, url = dvc_ops.REMOTE_NAME, wanted
    if options and name:
        changes += _set_remote_options(root, name, options, to_commit)

    if repo.config_get("push.followTags") != "true":
        repo.config_set("push.followTags", "true")
        changes.append("set push.followTags so `git push` also pushes release tags")

    changes += githooks.install(repo)

    commit_sha = None
    if commit and to_commit:
        paths = sorted({p for p in to_commit if (root / p).exists()})
        repo.add(paths)
        commit_sha = repo.commit_paths(
            "kgit: set up model releases\n\nkgit init: DVC, the validation stage and the default remote.\n", paths
        )
    return InitResult(str(root), name, url, changes, commit_sha)


def _check_remote_url(url: str, options: dict[str, str]) -> None:
    """The remote's DVC plugin is installed and DVC accepts ``options`` for it."""

    dvc_remotes.require_plugin(url)
    if options:
        dvc_ops.check_remote_options(url, options)


def _set_remote_options(root: Path, name: str, options: dict[str, str], to_commit: list[str]) -> list[str]:
    """Write the remote's settings: a person's own to .dvc/config.local, the rest to .dvc/config."""
    from kgit.store.dvc_remotes import PERSONAL_OPTIONS, SECRET_OPTIONS

    changes = []
    shared = {k: v for k, v in options.items() if k not in PERSONAL_OPTIONS}
    personal = {k: v for k, v in options.items() if k in PERSONAL_OPTIONS}
    for key in dvc_ops.set_remote_options(root, name, shared, "repo") if shared else []:
        changes.append(f"set {key} = {shared[key]} for DVC remote {name} in .dvc/config")
        to_commit.append(".dvc/config")
    for key in dvc_ops.set_remote_options(root, name, personal, "local") if personal else []:
        shown = "(hidden)" if key in SECRET_OPTIONS else personal[key]
        changes.append(f"set {key} = {shown} for DVC remote {name} in .dvc/config.local (yours: git ignores it)")
    return changes


def _undo_dvc_init(root: Path) -> None:
    """Remove what `dvc init` just created (kgit init refused after it)."""
    import shutil

    shutil.rmtree(root / DVC_DIR, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (root / ".dvcignore").unlink()
