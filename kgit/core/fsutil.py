"""Files that matter: written whole or not at all, one writer at a time, and hashed in one read."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from kgit.core.errors import BusyError, KgitError

BLOCK = 1 << 20  # hashes stream files in blocks of this size: a file is never held whole in memory
TMP_SUFFIX = ".kgit-tmp"


def temporary_for(path: Path, suffix: str = TMP_SUFFIX) -> Path:
    """Where this process writes ``path`` before renaming it into place: ``.NAME.PID<suffix>``
    beside it, so a leftover names the process that left it."""
    return path.with_name(f".{path.name}.{os.getpid()}{suffix}")


def running(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts: it cannot be signalled, but it runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_leftover_temporaries(path: Path, suffix: str = TMP_SUFFIX, *, unnamed: bool = False) -> None:
    """Delete what a writer killed between creating its ``temporary_for(path, suffix)`` and renaming
    it left beside ``path``, once that process is gone (one still running is writing it now).
    ``unnamed``: also ``.NAME<suffix>``, the name before temporaries carried their process."""
    prefix = f".{path.name}."
    found = [path.with_name(f".{path.name}{suffix}")] if unnamed else []
    with contextlib.suppress(OSError):
        found += path.parent.glob(f"{glob.escape(prefix)}*{suffix}")
    for tmp in found:
        pid = tmp.name[len(prefix) : -len(suffix)] if tmp.name.startswith(prefix) else ""
        if pid and (not pid.isdigit() or running(int(pid))):
            continue  # not a temporary of kgit's, or its writer still runs
        with contextlib.suppress(OSError):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()


def write_atomic(path: Path, data: str | bytes, *, durable: bool = False, executable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``,
    so a reader sees the old file or the new one, never half of one. ``durable`` also fsyncs the
    data before the rename (for records that recovery depends on after a crash)."""
    tmp = temporary_for(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if executable:
            os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive(
    path: Path, busy: str, *, timeout: float = 0.0, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a lock file, created if missing, or a folder) for the
    block: one writer across processes. Waits up to ``timeout`` seconds (calling ``on_wait`` once
    when it starts waiting), then raises BusyError(``busy``). Closing the file releases the lock,
    so a killed holder never leaves it stuck."""
    flags = os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(busy) from None
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FileDigest:
    """sha256 (kgit's record) and md5 (DVC's hash) of one file, computed in the same read, with the
    identity of the file they describe: inode, size, mtime and ctime in ns, unchanged from before the
    first byte was read to after the last. DVC may reuse the md5 only while the file still has
    exactly this identity (see kgit.store.dvc_ops.add)."""

    sha256: str
    md5: str
    size: int
    ino: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, sha256: str, md5: str, st: os.stat_result) -> FileDigest:
        ino, size, mtime_ns, ctime_ns = _identity(st)
        return cls(sha256, md5, size, ino, mtime_ns, ctime_ns)

    def describes(self, st: os.stat_result) -> bool:
        """True if ``st`` is the file as it was when hashed (a rewrite, even to the same size and
        mtime, changes its ctime)."""
        return _identity(st) == (self.ino, self.size, self.mtime_ns, self.ctime_ns)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """Inode, size, mtime and ctime in ns; ctime 0 for a file with several hard links (a packed
    release's file linked to its DVC cache object), whose ctime changes whenever a link to it is made
    or removed elsewhere; writing into it still changes its mtime, and a file given a link since
    (or that lost its others) is another identity."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns if st.st_nlink == 1 else 0


@dataclass(frozen=True)
class KnownSha256:
    """A file's sha256 computed by whoever wrote or cut it, in the read or write that made it, and the
    identity (``identity_of``) the file had then: valid while the file still has that identity."""

    sha256: str
    identity: tuple[int, int, int, int]
    # False: DVC never stores this file (it is .dvcignore'd: a packed release's assembled file, made
    # again from the pieces that are stored), so no md5 is taken and it need not reach the disk first
    md5_needed: bool = True
    md5: str = ""  # its md5 too, when computed in the same write (a tensor object cut from a file)


def identity_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """What ``FileDigest.describes`` compares: inode, size, mtime and ctime in ns (``_identity``)."""
    return _identity(st)


def digest_file(path: Path, stop: threading.Event | None = None, known: KnownSha256 | None = None) -> FileDigest:
    """Hash ``path`` once for both sha256 and md5. The file is fsynced first, so the hashes describe
    bytes that are on disk, and stat'ed before and after reading: a file that changed meanwhile is
    refused (KgitError) rather than described by hashes of bytes it no longer holds. ``known``: its
    sha256 (and maybe md5) is already known for the identity it has now, so only what is not is
    computed (nothing, and no fsync, if not ``known.md5_needed``: DVC does not store the file); if
    the file has changed since, both are computed as usual."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        fd = fh.fileno()
        before = os.fstat(fd)
        if known is not None and _identity(before) == known.identity and not known.md5_needed:
            return FileDigest.of(known.sha256, "", before)
        os.fsync(fd)
        before = os.fstat(fd)
        trusted = known is not None and _identity(before) == known.identity
        if trusted and known is not None and known.md5:
            return FileDigest.of(known.sha256, known.md5, before)
        while block := fh.read(BLOCK):
            if stop is not None and stop.is_set():
                raise KgitError(f"hashing {path} was stopped")
            if not trusted:
                sha.update(block)
            md5.update(block)
        after = os.fstat(fd)
    if _identity(before) != _identity(after) or _identity(os.stat(path, follow_symlinks=False)) != _identity(after):
        raise KgitError(
            f"{path} changed while kgit was hashing it: nothing may write into a release being made; "
            "run the release again"
        )
    return FileDigest.of(known.sha256 if trusted and known is not None else sha.hexdigest(), md5.hexdigest(), after)


def regular_files(folder: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """Every regular file under ``folder`` as sorted relative POSIX paths, but those in ``exclude``;
    KgitError on a symlink (release folders hold regular files only)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            rel = full.relative_to(folder).as_posix()
            if rel in exclude:
                continue
            if full.is_symlink():
                raise KgitError(f"{full} is a symlink: release folders must hold regular files only")
            found.append(rel)
    return found


class FolderDigests:
    """``digest_file`` of every file in a folder, in a thread of its own, so a release's hashing
    overlaps its validation (a fresh process reading the same files from the page cache) instead of
    adding to it. ``result()`` waits and returns {relative path: FileDigest} or raises what hashing
    raised; ``stop()`` ends it early (the release failed).

    ``first``, if given, runs in that thread before anything is hashed and may add files to the
    folder (a release's packing: files derived from those saved, never changing them), entering in
    the mapping it is handed the sha256s it computed as it wrote them (``known``); the files are listed
    after it."""

    def __init__(
        self,
        folder: Path,
        exclude: tuple[str, ...] = (),
        known: Mapping[str, KnownSha256] | None = None,
        first: Callable[[dict[str, KnownSha256]], object] | None = None,
    ) -> None:
        self.folder = folder
        self.exclude = exclude
        self.known = dict(known or {})  # relative path -> its sha256 from the write that made it
        self._first = first
        self._stop = threading.Event()
        self._result: dict[str, FileDigest] = {}
        self._error: BaseException | None = None
        self.files: list[str] = [] if first is not None else regular_files(folder, exclude)
        self._thread = threading.Thread(target=self._run, name=f"kgit-hash-{folder.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._first is not None:
                self._first(self.known)
                self.files = regular_files(self.folder, self.exclude)
            for rel in self.files:
                self._result[rel] = digest_file(self.folder / rel, self._stop, self.known.get(rel))
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self) -> dict[str, FileDigest]:
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, KgitError):
                raise self._error
            if isinstance(self._error, OSError):
                raise KgitError(f"cannot hash {self.folder}: {self._error}") from None
            raise self._error
        return dict(self._result)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
