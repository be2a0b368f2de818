"""The DVC adapter: init, remotes, tracking folders. The only module that imports DVC.

Reading a ``.dvc`` file needs no DVC import (it is YAML); see ``read_dvc_file``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgit.core import bounded_yaml, layout
from kgit.core.errors import KgitError, one_line
from kgit.core.fsutil import FileDigest
from kgit.store import dvc_remotes

if TYPE_CHECKING:
    from kgit.core.progress import Meter

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REMOTE_NAME = "kgit"


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """DVC prints hints ("To track the changes with git...") meant for its own CLI: capture them."""
    buf = io.StringIO()
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        dvc_logger.setLevel(level)


@contextlib.contextmanager
def _dvc_errors() -> Iterator[list[str]]:
    """DVC logs why a transfer failed (``ERROR: failed to connect to s3 ... Forbidden``) and then
    raises a vaguer error ("1 files failed to download"): collect those lines for kgit's one-line
    message instead of letting them print."""
    from kgit.store.dvc_remotes import chain_text

    logged: list[str] = []

    class Collect(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.levelno < logging.ERROR or not record.name.startswith("dvc"):
                return True
            exc = record.exc_info[1] if record.exc_info else None
            logged.append(record.getMessage() + (f" - {chain_text(exc)}" if exc else ""))
            return False

    handlers = {h for name in ("dvc", "") for h in logging.getLogger(name).handlers}
    collect = Collect()
    for h in handlers:
        h.addFilter(collect)
    try:
        yield logged
    finally:
        for h in handlers:
            h.removeFilter(collect)


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Any]:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo as DvcRepo

    try:
        with _quiet():
            repo = DvcRepo(str(root))
    except DvcException as exc:
        raise KgitError(f"cannot open the DVC repository in {root}: {exc}") from None
    from kgit.store.failpoints import failpoint_inside

    try:
        # crash tests: KGIT_FAILPOINT=dvc-rwlock stops the process inside DVC, right after it
        # truncated .dvc/tmp/rwlock to rewrite it
        with failpoint_inside("dvc-rwlock", os.path.join("dvc", "rwlock.py"), "dump"):
            yield repo
    finally:
        repo.close()


@contextlib.contextmanager
def locked_idle(root: Path) -> Iterator[bool]:
    """Hold DVC's own locks of the repository, ``.dvc/tmp/lock`` (a DVC command runs) then
    ``.dvc/tmp/rwlock.lock`` (the rwlock file is being edited), taken as DVC takes them (its
    ``hardlink_lock`` setting included), for the block; yields True. Yields False, holding neither,
    if a DVC command holds them (DVC's own wait: about 3 seconds)."""
    from dvc.lock import LockError, make_lock

    with open_repo(root) as repo:
        hardlink = bool(repo.config["core"].get("hardlink_lock", False))
        tmp = str(repo.tmp_dir)
    os.makedirs(tmp, exist_ok=True)
    held: list[Any] = []
    for name in ("lock", "rwlock.lock"):
        lock = make_lock(os.path.join(tmp, name), tmp_dir=tmp, hardlink_lock=hardlink)
        try:
            lock.lock()
        except LockError:
            for taken in reversed(held):
                taken.unlock()
            held = []
            break
        held.append(lock)
    try:
        yield bool(held)
    finally:
        for taken in reversed(held):
            taken.unlock()


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def is_initialised(root: Path) -> bool:
    return (root / layout.DVC_DIR).is_dir() and (root / layout.DVC_DIR / "config").exists()


def init(root: Path) -> bool:
    """``dvc init`` if needed; True if it did something."""
    if is_initialised(root):
        return False
    from dvc.exceptions import DvcException
    from dvc.repo import Repo as DvcRepo

    try:
        with _quiet():
            DvcRepo.init(str(root)).close()
    except DvcException as exc:
        raise KgitError(f"`dvc init` failed in {root}: {exc}") from None
    return True


def default_remote(root: Path) -> tuple[str | None, str | None]:
    """(name, url) of the default DVC remote, read with DVC's own config loader."""
    with open_repo(root) as repo:
        conf = repo.config
        name = conf["core"].get("remote")
        if not name:
            return None, None
        url = conf["remote"].get(name, {}).get("url")
        return name, url


def set_default_remote(root: Path, url: str, name: str = REMOTE_NAME) -> None:
    with open_repo(root) as repo, repo.config.edit("repo") as conf:
        conf["remote"][name] = {**conf["remote"].get(name, {}), "url": url}
        conf["core"]["remote"] = name


def remote_option_names(url: str) -> list[str]:
    """The settings DVC accepts for a remote at ``url`` (its config schema; no plugin needed)."""
    from dvc.config_schema import REMOTE_SCHEMAS

    from kgit.store.dvc_remotes import scheme_of

    schema = REMOTE_SCHEMAS.get(scheme_of(url) or "local") or REMOTE_SCHEMAS["local"]
    return sorted({str(getattr(k, "schema", k)) for k in schema} - {"url"})


def check_remote_options(url: str, options: dict[str, str], what: str = "--remote-option") -> None:
    """Refuse settings DVC would not accept for a remote at ``url``, naming the ones it would."""
    from dvc.config_schema import SCHEMA
    from voluptuous import Invalid

    from kgit.store.dvc_remotes import scheme_of

    known = remote_option_names(url)
    for key in options:
        if key not in known:
            kind = f"{scheme_of(url)}:// remotes" if scheme_of(url) else "folder remotes"
            raise KgitError(f"{what} {key}: DVC has no such setting for {kind} (it has: {', '.join(known)})")
    try:
        SCHEMA["remote"][str]({"url": url, **options})
    except Invalid as exc:
        key = ".".join(str(p) for p in exc.path) or "?"
        raise KgitError(
            f"{what} {key}: {one_line(exc.error_message, 150)} (DVC remote {url}; see `dvc remote modify --help`)"
        ) from None


def set_remote_options(root: Path, name: str, options: dict[str, str], level: str) -> list[str]:
    """Set settings of DVC remote ``name`` in ``.dvc/config`` (level ``repo``) or ``.dvc/config.local``
    (``local``); returns the keys whose value changed."""
    from dvc.config import ConfigError

    changed: list[str] = []
    try:
        with open_repo(root) as repo, repo.config.edit(level) as conf:
            section = conf["remote"].setdefault(name, {})
            for key, value in options.items():
                if str(section.get(key)) != value:
                    section[key] = value
                    changed.append(key)
    except ConfigError as exc:
        raise KgitError(f"DVC refused the remote settings {', '.join(options)}: {one_line(exc, 200)}") from None
    return changed


def share_cache(root: Path, source: Path) -> None:
    """Make the DVC project at ``root`` (another work tree of the same clone) keep its data in
    ``source``'s cache, with ``source``'s cache settings (``.dvc/config.local``, never committed):
    what one adds, the other pushes and checks out without copying it again."""
    with open_repo(source) as src:
        cache = src.config["cache"]
        settings = {key: cache[key] for key in ("type", "shared") if key in cache}
        settings["dir"] = str(src.cache.local_cache_dir)
    with open_repo(root) as repo, repo.config.edit("local") as conf:
        conf["cache"] = {**conf["cache"], **settings}


# A packed release's tensor objects (kgit.core.packing: kgit-pack/tensors/, files nobody edits, read
# only, each checked against its sha256 whenever the release is assembled) are hard links to their
# DVC cache objects, where the repository leaves DVC's ``cache.type`` unset: a release writes each new
# tensor once (not again into the cache), an unchanged one not at all, and a fetch does not copy what
# it downloaded. Every other file is copied, as DVC copies. A repository that sets ``cache.type``
# gets what it set; a cache on another file system gets copies.
def piece_store(root: Path) -> Path | None:
    """The folder of the local DVC cache's objects (``files/md5``) if tensor objects are linked to
    them, else None."""
    with open_repo(root) as repo:
        return _piece_store(repo)


def _piece_store(repo: Any) -> Path | None:
    odb = repo.cache.local
    if odb is None or repo.config["cache"].get("type") is not None or getattr(odb.fs, "protocol", None) != "local":
        return None
    return Path(odb.path)


def add(
    root: Path,
    targets: list[Path],
    known: Mapping[Path, FileDigest] | None = None,
    *,
    pieces: Iterable[Path] = (),
    vouch: Iterable[str] = (),
) -> set[str]:
    """``dvc add`` each folder (each becomes its own output with its own ``.dvc`` file). ``pieces``:
    tensor objects of those folders, with their md5 in ``known``, linked to the cache (``piece_store``);
    ``vouch``: the md5s of those that were linked to an object the cache held (``_vouch``).

    ``known``: md5s kgit computed while hashing these files (kgit.core.fsutil.digest_file), which DVC
    then takes from its state database instead of reading every byte again; a file whose identity
    (inode, size, mtime, ctime) is no longer the one hashed is left for DVC to hash. Returns those of
    the ``known`` md5s the DVC cache held already (bytes an earlier version stored: shared, not new)."""
    from dvc.exceptions import DvcException

    from kgit.store.failpoints import failpoint

    rel = [str(t.relative_to(root)) for t in targets]
    try:
        with open_repo(root) as repo, _quiet(), _cwd(root):  # DVC resolves outputs from the cwd
            stored: set[str] = set()
            if known:
                seed_hashes(repo, root, known)
                stored = set(repo.cache.local.oids_exist(sorted({d.md5 for d in known.values()})))
            linked = _link_pieces(repo, root, pieces, known or {}, vouch)
            failpoint("dvc-add")
            repo.add(rel, relink=not linked)  # relinking would copy the linked objects over their links
            failpoint("dvc-added")
    except DvcException as exc:
        raise KgitError(f"`dvc add {' '.join(rel)}` failed: {exc}") from None
    return stored


def _link_pieces(
    repo: Any, root: Path, pieces: Iterable[Path], known: Mapping[Path, FileDigest], vouch: Iterable[str]
) -> bool:
    """Enter each of ``pieces`` still as hashed (``known``) into the DVC cache as a hard link (DVC's
    own transfer: a reflink, a hard link or, across file systems, a copy; made read only, as DVC
    protects its objects); True if there are pieces and the cache is one kgit links to (``piece_store``).
    Those whose md5 is in ``vouch`` (linked to an object the cache held) are checked first (``_vouch``)."""
    odb = repo.cache.local
    pieces = list(pieces)
    if not pieces or _piece_store(repo) is None:
        return False
    todo: dict[str, str] = {}
    for path in pieces:
        digest = known.get(path)
        full = os.path.join(repo.root_dir, os.path.relpath(path, root))
        with contextlib.suppress(OSError):
            if digest is not None and digest.md5 and digest.describes(os.stat(full, follow_symlinks=False)):
                todo.setdefault(digest.md5, full)
    for md5 in vouch:
        if md5 in todo:
            _vouch(odb, md5, todo[md5])
    if todo:
        odb.add(list(todo.values()), odb.fs, list(todo), hardlink=True)
    return True


def _vouch(odb: Any, md5: str, piece: str) -> None:
    """KgitError unless the tensor object ``piece``, linked to the cache's object ``md5`` when it was
    cut instead of written, holds the tensor its name says: DVC's state vouches for the object (it
    still is that file, with the inode, size and mtime DVC hashed), or its sha256 is its name. An
    object written into in place since DVC stored it (and removed by DVC's own check) is caught."""
    from kgit.core.metadata import sha256_file
    from kgit.core.packing import TENSORS_DIR

    obj = odb.oid_to_path(md5)
    state = getattr(odb, "state", None)
    with contextlib.suppress(OSError):
        if os.path.samefile(piece, obj) and state is not None:
            hashed = state.get(obj, odb.fs)[1]
            if hashed is not None and hashed.value == md5:
                return
    if sha256_file(Path(piece)) == os.path.basename(piece):
        return
    obj_hint = f"`rm -f {obj}`, " if os.path.exists(obj) else ""
    raise KgitError(
        f"the DVC cache held tensor {os.path.basename(piece)[:12]} (md5 {md5}) with other bytes than DVC stored "
        f"(a file under {TENSORS_DIR}/ written into in place?): nothing was released; remove that object "
        f"({obj_hint}`kgit validate --recheck` names the releases whose folders hold it: `kgit get` them again) "
        "and release again"
    )


def link_fetched_pieces(repo: Any, root: Path, dvc_files: list[str]) -> int:
    """Before a checkout: hard-link each tensor object of these fetched packed folders that is not in
    the work tree from its DVC cache object (``piece_store``), and tell DVC's state its md5, so the
    checkout leaves it and copies only the other files. Returns how many were linked."""
    from dvc_data.hashfile.transfer import find_tree_by_obj_id

    from kgit.core import packing

    store = _piece_store(repo)
    if store is None:
        return 0
    odb = repo.cache.local
    linked: dict[Path, FileDigest] = {}
    tensors = tuple(packing.TENSORS_DIR.split("/"))
    for f in dvc_files:
        top = out_hash(read_dvc_path(root / f, f))
        tree = find_tree_by_obj_id([odb], _hash_info(top)) if top.get("md5", "").endswith(".dir") else None
        folder = root / layout.tracked_path(f)
        for key, _meta, oid in tree or ():
            if oid is None or tuple(key[:-1]) != tensors or not packing.is_tensor_name(key[-1]):
                continue  # the listing came from the remote: only names kgit gives tensor objects
            target = folder.joinpath(*key)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(odb.oid_to_path(oid.value), target)
                linked[target] = FileDigest.of("", oid.value, os.stat(target))
            except OSError:  # there already, not in the cache, another file system: DVC's checkout decides
                continue
    if linked:
        seed_hashes(repo, root, linked)
    return len(linked)


def _hash_info(out: dict[str, Any]) -> Any:
    from dvc_data.hashfile.hash_info import HashInfo

    return HashInfo(str(out.get("hash") or "md5"), str(out.get("md5")))


@contextlib.contextmanager
def _no_dvc_bars() -> Iterator[None]:
    """DVC draws its own tqdm bars on a terminal (collecting, checkout, one per file); kgit draws one
    for the whole transfer instead. DVC's bars turn themselves off above their loggers' level."""
    loggers = [logging.getLogger(n) for n in ("dvc.progress", "dvc_data.callbacks")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def seed_hashes(repo: Any, root: Path, known: Mapping[Path, FileDigest]) -> int:
    """Put md5s kgit computed into DVC's state database (keyed, as DVC keys it, by path, inode,
    mtime and size), so ``dvc add`` does not hash those files again. Only files that are still
    exactly as hashed are entered; returns how many. A DVC without this database, or with another
    hash than md5, is left alone: it then hashes every file itself, as it always did."""
    odb = repo.cache.local
    state = getattr(odb, "state", None)
    if getattr(odb, "hash_name", None) != "md5" or state is None or not hasattr(state, "save_many"):
        return 0
    from dvc_data.hashfile.hash_info import HashInfo

    items = []
    for path, digest in known.items():
        full = os.path.join(repo.root_dir, os.path.relpath(path, root))  # the path DVC looks up
        try:
            st = os.stat(full, follow_symlinks=False)
        except OSError:
            continue
        if not digest.describes(st):
            continue
        # what DVC's own stat gives for these keys (dvc_data.fsutils._localfs_info)
        items.append((full, HashInfo("md5", digest.md5), {"ino": st.st_ino, "mtime": st.st_mtime, "size": st.st_size}))
    if items:
        state.save_many(items, odb.fs)
    return len(items)


def _byte_callback(meter: Meter) -> Any:
    """An fsspec callback, as DVC's transfers call it, that counts bytes into ``meter``.

    DVC calls the top callback once per object and a child (``branched``) per file copied, which
    reports bytes as they move when the filesystem does (object stores; local copies of 1 GB and
    more). A file that reported nothing counts its size when it is done (DVC copies smaller local
    files in one call)."""
    from fsspec.callbacks import Callback

    class FileBytes(Callback):
        def __init__(self, paths: tuple[Any, ...]) -> None:
            super().__init__()
            self.paths = paths
            self.counted = 0

        def call(self, hook_name: str | None = None, **kwargs: Any) -> None:
            value = int(self.value or 0)
            if value > self.counted:
                meter.add(value - self.counted)
                self.counted = value

        def __exit__(self, *exc: object) -> None:
            if exc[0] is None and not self.counted:
                meter.add(_local_size(self.paths))
            self.close()

    class Objects(Callback):
        def branched(self, path_1: Any, path_2: Any, **kwargs: Any) -> Any:
            return FileBytes((path_1, path_2))

    return Objects()


def _callback(meter: Meter | None) -> dict[str, Any]:
    return {"callback": _byte_callback(meter)} if meter is not None else {}


def _local_size(paths: tuple[Any, ...]) -> int:
    for p in paths:
        if isinstance(p, str):
            try:
                return os.path.getsize(p)
            except OSError:
                continue
    return 0


def _with_files(tops: list[Any], odbs: list[Any]) -> list[Any]:
    """The objects to transfer for these top-level ones: each directory object's files, then itself
    (its listing is read from the first of ``odbs`` that has it), as ``dvc fetch`` collects them. A
    listing none has is left to DVC's transfer, which reports it missing (and checkout then fails)."""
    from dvc_data.hashfile.transfer import find_tree_by_obj_id

    objs: dict[str, Any] = {}
    for top in tops:
        tree = find_tree_by_obj_id(odbs, top) if top.isdir else None
        if tree is not None:
            objs.update((oid.value, oid) for _, _, oid in tree if oid is not None)
        objs[top.value] = top
    return list(objs.values())


class TransferFailed(KgitError):
    """An upload or download failed; ``explained`` when the message says what the failure means."""

    def __init__(self, message: str, explained: bool) -> None:
        super().__init__(message)
        self.explained = explained


def _where(repo: Any, remote: str | None) -> Any:

    name = remote or repo.config["core"].get("remote")
    conf = dict(repo.config["remote"].get(name) or {}) if name else {}
    return dvc_remotes.Where.of(name, str(conf.get("url", "")), conf)


def _failure(repo: Any, remote: str | None, logged: list[str], exc: BaseException | None) -> TransferFailed:
    """One line for a failed transfer: what it means if kgit knows the failure (``dvc_remotes.explain``),
    else DVC's own words."""

    texts = [*logged, dvc_remotes.chain_text(exc)] if exc is not None else logged
    why = dvc_remotes.explain(" ".join(texts), _where(repo, remote))
    if why:
        return TransferFailed(why, explained=True)
    said = "; ".join([*logged[:2], *([str(exc) or type(exc).__name__] if exc is not None else [])])
    return TransferFailed(one_line(said or "no output", 300), explained=False)


def push(root: Path, oids: list[str], remote: str, meter: Meter | None = None) -> int:
    """Upload these objects (a version folder's ``.dir`` hash and its files) from the local DVC cache
    to DVC remote ``remote``, as ``dvc push`` does; returns how many objects were sent.

    ``meter`` (a ``kgit.core.progress.Meter``) counts the bytes: its total becomes the size of the
    objects the remote lacks, as DVC finds them. Raises ``TransferFailed``."""
    from dvc_data.hashfile.db import get_index
    from dvc_data.hashfile.hash_info import HashInfo

    with open_repo(root) as repo, _no_dvc_bars(), _dvc_errors() as logged:
        cache = repo.cache.local

        def sizes(status: Any) -> None:  # DVC hands over what it will send before sending it
            log_missing = getattr(repo.cloud, "_log_missing", None)
            if log_missing is not None:
                log_missing(status)
            if meter is not None:
                meter.expect(sum(_local_size((cache.oid_to_path(h.value),)) for h in status.new if h.value))

        from kgit.store.failpoints import failpoint

        try:
            odb = repo.cloud.get_remote_odb(remote, "push")
            failpoint("dvc-push")
            with contextlib.closing(get_index(odb)) as index:
                result = repo.cloud.transfer(
                    cache,
                    odb,
                    [HashInfo("md5", oid) for oid in oids],
                    dest_index=index,
                    cache_odb=cache,
                    validate_status=sizes,
                    shallow=False,
                    **_callback(meter),
                )
        except Exception as exc:  # a remote's filesystem raises its own errors (network, credentials, disk)
            raise _failure(repo, remote, logged, exc) from None
        if result.failed:
            raise _failure(repo, remote, logged or [f"{len(result.failed)} file(s) failed to upload"], None)
        failpoint("dvc-pushed")  # uploaded, not yet confirmed nor recorded as published
    return len(result.transferred)


def pull(
    root: Path,
    dvc_files: list[str],
    remote: str | None = None,
    meter: Meter | None = None,
    *,
    packed: Iterable[str] = (),
) -> int:
    """``dvc pull`` exactly these ``.dvc`` files (fetch into the cache, check out into the work tree;
    the tensor objects of those that are ``packed`` linked to the cache, ``piece_store``).

    Returns how many objects DVC fetched. ``meter`` (a ``kgit.core.progress.Meter``) counts the bytes
    as DVC's transfer reports them; DVC's own bars are not drawn."""
    from dvc.exceptions import DvcException
    from dvc_data.hashfile.db import get_index
    from dvc_data.hashfile.hash_info import HashInfo

    tops = []
    for f in dvc_files:
        out = read_dvc_path(root / f, f)["outs"][0]
        tops.append(HashInfo(str(out.get("hash") or "md5"), str(out.get("md5"))))
    with open_repo(root) as repo, _cwd(root), _no_dvc_bars(), _dvc_errors() as logged:
        try:
            odb = repo.cloud.get_remote_odb(remote, "pull")
            cache = repo.cache.local
            oids = _with_files(tops, [cache, odb])
            with contextlib.closing(get_index(odb)) as index:
                result = repo.cloud.transfer(
                    odb,
                    cache,
                    oids,
                    src_index=index,
                    cache_odb=cache,
                    verify=odb.verify,
                    validate_status=getattr(repo.cloud, "_log_missing", None),
                    **_callback(meter),
                )
            if result.failed:
                raise _failure(repo, remote, logged or [f"{len(result.failed)} file(s) failed to download"], None)
            link_fetched_pieces(repo, root, [f for f in dvc_files if f in set(packed)])
            repo.checkout(targets=dvc_files)
        except TransferFailed as exc:
            raise KgitError(f"fetching {', '.join(dvc_files)} failed: {exc}") from None
        except Exception as exc:  # a remote's filesystem raises its own errors (network, credentials)
            failed = _failure(repo, remote, logged, exc)
            if not failed.explained and not isinstance(exc, DvcException):
                raise
            raise KgitError(f"fetching {', '.join(dvc_files)} failed: {failed}") from None
    return len(result.transferred)


MAX_DVC_FILE = 16_000_000  # a .dvc file with kgit's metadata is kilobytes; hyperparameters at most 1 MB
# values a DVC file (a .dvc file, dvc.yaml, dvc.lock) may hold, aliases expanded: 1 MB of hyperparameters
# is at most 500,000 of them; a "billion laughs" file is refused long before
MAX_DVC_VALUES = 1_000_000


def read_dvc_file(text: str | bytes, source: str) -> dict[str, Any]:
    """Parse a ``.dvc`` file (YAML, no DVC import) through kgit's bounded reader, refusing oversized,
    deeply nested or alias-bomb ones and anything that is not a DVC pointer."""
    restore = f"restore it with `git checkout -- {source}`"
    data = bounded_yaml.load(text, source, max_bytes=MAX_DVC_FILE, max_nodes=MAX_DVC_VALUES, fix=restore)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("outs"), list)
        or not data["outs"]
        or not isinstance(data["outs"][0], dict)
    ):
        raise KgitError(f"{source} is not a DVC file (no outs): {restore}")
    return data


def read_dvc_path(path: Path, source: str) -> dict[str, Any]:
    """``read_dvc_file`` of the file at ``path``, read no further than the size limit."""
    restore = f"restore it with `git checkout -- {source}`"
    return read_dvc_file(bounded_yaml.read_bytes(path, source, max_bytes=MAX_DVC_FILE, fix=restore), source)


def out_hash(dvc_data: dict[str, Any]) -> dict[str, Any]:
    out = dvc_data["outs"][0]
    return {"md5": out.get("md5"), "size": out.get("size"), "nfiles": out.get("nfiles")}


def with_meta(dvc_file: Path, meta: dict[str, Any], desc: str | None = None) -> str:
    """The text of a ``.dvc`` file DVC just wrote with kgit's metadata in its ``meta`` field (for the
    caller to record, then write)."""
    data = read_dvc_path(dvc_file, str(dvc_file))
    ordered: dict[str, Any] = {}
    if desc:
        ordered["desc"] = desc
    ordered["outs"] = data["outs"]
    ordered["meta"] = {"kgit": meta}
    return bounded_yaml.dump(ordered)


def dataset_hash(root: Path, path: str) -> str:
    """DVC hash of a DVC-tracked file or folder (from its .dvc file or dvc.lock), no DVC import."""
    target = (root / path).resolve()
    try:
        rel = target.relative_to(root)
    except ValueError:
        raise KgitError(f"dataset {path} is outside the repository") from None
    dvc_file = target.with_name(layout.dvc_file(target.name))
    if dvc_file.exists():
        data = read_dvc_path(dvc_file, str(dvc_file.relative_to(root)))
        h = data["outs"][0].get("md5") or data["outs"][0].get("etag")
        if h:
            return str(h)
    lock = root / layout.DVC_LOCK
    if lock.exists():
        lock_data = bounded_yaml.read_file(
            lock,
            layout.DVC_LOCK,
            max_bytes=MAX_DVC_FILE,
            max_nodes=MAX_DVC_VALUES,
            fix="fix it, or restore it with `git checkout -- dvc.lock`",
        )
        stages = lock_data.get("stages") if isinstance(lock_data, dict) else None
        for stage in (stages or {}).values() if isinstance(stages, dict) else ():
            outs = stage.get("outs") if isinstance(stage, dict) else None
            for out in outs if isinstance(outs, list) else ():
                if isinstance(out, dict) and Path(str(out.get("path", ""))) == rel and out.get("md5"):
                    return str(out["md5"])
    raise KgitError(f"dataset {path} is not tracked by DVC: run `dvc add {path}` first, or pass --dataset-id instead")
