"""A release folder's weight files, stored as one object per tensor: what DVC shares across versions.

DVC addresses files by content, so two versions share a file only if all its bytes are equal, and a
weights file changes as a whole when any weight does. A packed release therefore stores each large
tensor of its weight files as a file of its own, named by its sha256, under ``kgit-pack/tensors/``:
a tensor no training step changed (a frozen backbone) is the same file in every version, so the DVC
cache and remote hold it once and a push uploads it once. What is left of each weight file (headers,
configuration, small tensors) is its *skeleton*, ``kgit-pack/<file>.skeleton``, and
``kgit-pack.json`` says how the pieces make the file again::

    {"kgit_pack": 1, "files": {"model.keras": {"size": 137704, "sha256": "...",
        "pieces": [[null, 2929], ["<sha256 of a tensor>", 32768], [null, 412], ...]}}}

``[null, n]`` is the next ``n`` bytes of the skeleton, ``[sha256, n]`` a tensor's object. Assembling
(``assemble``) concatenates them into the file, byte for byte the one saved, and checks its sha256.

The assembled file stays in the release folder under its usual name (``model.keras``), so plain
Keras and TensorFlow load the folder as before; DVC does not store it (a ``.dvcignore`` line per
file, beside DVC's ``.gitignore``), and kgit's record (``metadata.json``'s ``files``, the signature)
covers it like every other file. Which byte ranges of a file are tensors is the models layer's
knowledge (kgit.models.packing); this module only cuts and joins bytes: no TensorFlow, no h5py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError
from kgit.core.fsutil import KnownSha256, identity_of, remove_leftover_temporaries, temporary_for

MANIFEST = "kgit-pack.json"
PACK_DIR = "kgit-pack"
TENSORS_DIR = f"{PACK_DIR}/tensors"
SCHEMA = 1
MIN_TENSOR_BYTES = 16 << 10  # smaller tensors stay in the skeleton: an object each would cost more than it saves
_CHUNK = 1 << 20  # read in blocks that stay in the CPU's caches while the hashes take them
_MAX_MANIFEST = 64 << 20
_ASSEMBLING = ".kgit-assembling"  # suffix of the file being assembled, renamed into place once checked


def skeleton_path(rel: str) -> str:
    return f"{PACK_DIR}/{rel}.skeleton"


def split(
    folder: Path,
    rel: str,
    extents: Iterable[tuple[int, int]],
    min_bytes: int = MIN_TENSOR_BYTES,
    known: dict[str, KnownSha256] | None = None,
    stored: PieceStore | None = None,
) -> dict[str, Any] | None:
    """Cut ``folder/rel`` into its skeleton and one object per extent (offset, length) of at least
    ``min_bytes``; returns its manifest entry, or None if no extent qualifies (the file stays whole).
    Extents outside the file or overlapping an earlier one are left in the skeleton.

    The file is read once: each piece's sha256 (its name) in this thread, the whole file's in another
    (both run at once: hashlib lets go of the GIL). ``known`` receives, by path relative to
    ``folder``, the sha256 of the file (which DVC never reads: no md5 needed) and of each piece, with
    the identity each had then, and each piece's md5 (DVC's hash, taken in a third thread), so the
    release's hashing does not read them again.

    ``stored``: where a piece may be already (``PieceStore``: a tensor an earlier version stored, or
    another format of this release cut), to link to instead of keeping what was just cut."""
    path = folder / rel
    size = path.stat().st_size
    chosen: list[tuple[int, int]] = []
    end = 0
    for off, length in sorted(set(extents)):
        if length >= min_bytes and off >= end and off + length <= size:
            chosen.append((off, length))
            end = off + length
    if not chosen:
        return None
    (folder / TENSORS_DIR).mkdir(parents=True, exist_ok=True)
    skeleton = folder / skeleton_path(rel)
    skeleton.parent.mkdir(parents=True, exist_ok=True)
    pieces: list[list[Any]] = []
    made: dict[str, KnownSha256] = {}
    whole = _ThreadedSha256()
    try:
        with path.open("rb") as src, skeleton.open("wb") as skel:
            before = identity_of(os.fstat(src.fileno()))
            pos = 0
            for off, length in [*chosen, (size, 0)]:
                if off > pos:  # the bytes up to the next tensor stay in the skeleton
                    _stream(src, off - pos, [skel.write, whole.update])
                    pieces.append([None, off - pos])
                if length:
                    digest, md5, piece = _cut(src, length, whole, folder / TENSORS_DIR, stored)
                    pieces.append([digest, length])
                    made[f"{TENSORS_DIR}/{digest}"] = KnownSha256(digest, identity_of(os.stat(piece)), md5=md5)
                pos = off + length
            after = identity_of(os.fstat(src.fileno()))
        sha256 = whole.hexdigest()
    finally:
        whole.close()
    if known is not None:
        known.update(made)
        if before == after == identity_of(os.stat(path)):
            known[rel] = KnownSha256(sha256, after, md5_needed=False)
    return {"size": size, "sha256": sha256, "pieces": pieces}


class _ThreadedSha256:
    """A hash (sha256 unless named) of a stream, computed in a thread of its own while the caller goes on."""

    def __init__(self, name: str = "sha256") -> None:
        self._hash = hashlib.new(name, usedforsecurity=name != "md5")
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # at most 8 chunks in memory
        self._thread = threading.Thread(target=self._run, name=f"kgit-pack-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _stream(src: Any, length: int, sinks: list[Any]) -> None:
    """The next ``length`` bytes of ``src`` to each of ``sinks``, in chunks; KgitError if it ends first."""
    left = length
    while left:
        data = src.read(min(left, _CHUNK))
        if not data:
            raise KgitError(f"{Path(getattr(src, 'name', 'a file')).name} is shorter than recorded")
        for sink in sinks:
            sink(data)
        left -= len(data)


def _cut(
    src: Any, length: int, whole: _ThreadedSha256, tensors: Path, stored: PieceStore | None
) -> tuple[str, str, Path]:
    """The next ``length`` bytes of ``src`` as a tensor object in ``tensors`` (named by its sha256;
    kept once if the folder has it already, a link to ``stored``'s object if that holds it, else
    copied by the kernel from ``src``); returns its sha256, its md5 and its path."""
    start = src.tell()
    digest = hashlib.sha256()
    md5 = _ThreadedSha256("md5")
    try:
        _stream(src, length, [digest.update, whole.update, md5.update])
    finally:
        md5_hex = md5.hexdigest()
    target = tensors / digest.hexdigest()
    if not target.exists():  # else the same tensor twice in one folder: one object
        tmp = tensors / f".cutting-{os.getpid()}-{threading.get_ident()}"
        try:
            if stored is None or not stored.link(md5_hex, length, tmp):
                with tmp.open("wb", buffering=0) as out:
                    copy_range(src.fileno(), start, length, out.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    if stored is not None:
        stored.keep(md5_hex, target)
    return digest.hexdigest(), md5_hex, target


def copy_range(src_fd: int, offset: int, length: int, out_fd: int) -> None:
    """Append the bytes ``offset .. offset + length`` of ``src_fd`` to ``out_fd`` (at its position),
    copied by the kernel (``copy_file_range``: no trip through Python, and shared blocks where the
    file system can reflink), or read and written where it cannot; KgitError if the file is shorter."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src_fd, out_fd, length - done, offset + done)
            if n == 0:
                raise KgitError("a file is shorter than recorded")
            done += n
        return
    except OSError:  # a kernel or file system without it, or two file systems: by hand, from where it stopped
        pass
    while done < length:
        data = os.pread(src_fd, min(length - done, _CHUNK), offset + done)
        if not data:
            raise KgitError("a file is shorter than recorded")
        os.write(out_fd, data)
        done += len(data)


class PieceStore:
    """Where the tensors a release cuts may already be: the DVC cache's objects (``cache``, its
    ``files/md5``, when kgit links tensor objects to them: kgit.store.dvc_ops ``piece_store``) and
    the objects this release cut already (the same tensor in another of its formats), each kept as a
    link in ``holding`` (a folder of the release's staging area, by md5). A piece found there is a
    hard link to it, never written: a release writes each tensor that changed once, whatever its
    formats, and the others not at all.

    Every piece has two links or more from its making on (``keep``), so links made later (another
    format's, the DVC cache's) leave its identity as hashed (kgit.core.fsutil ``identity_of``)."""

    def __init__(self, cache: Path, holding: Path) -> None:
        self.cache = cache
        self.holding = holding
        holding.mkdir(parents=True, exist_ok=True)
        self.from_cache: set[str] = set()  # md5s of the pieces linked to an object the cache held (to vouch for)
        self._lock = threading.Lock()

    def link(self, md5: str, length: int, tmp: Path) -> bool:
        """Make ``tmp`` a link to a stored object with this md5 and size; False if there is none or
        it cannot be linked (the caller then writes the piece)."""
        for obj in (self.holding / md5, self.cache / md5[:2] / md5[2:]):
            try:
                if obj.stat().st_size == length:
                    os.link(obj, tmp)
                    if obj.parent != self.holding:
                        with self._lock:
                            self.from_cache.add(md5)
                    return True
            except OSError:  # not there, another file system, a link limit
                continue
        return False

    def keep(self, md5: str, piece: Path) -> None:
        """Remember ``piece`` as this md5's object (the first one kept stays)."""
        with contextlib.suppress(OSError):  # there already (another format's), or links not possible
            os.link(piece, self.holding / md5)


def write_manifest(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    (folder / MANIFEST).write_text(json.dumps({"kgit_pack": SCHEMA, "files": files}, sort_keys=True), encoding="utf-8")


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The packed files of ``folder`` (empty: not a packed release), checked for shape."""
    path = folder / MANIFEST
    if not path.exists():
        return {}
    raw = bounded_yaml.read_bytes(path, MANIFEST, max_bytes=_MAX_MANIFEST)
    data = bounded_yaml.load_json(raw, str(path), max_bytes=_MAX_MANIFEST)
    files = data.get("files") if isinstance(data, dict) and data.get("kgit_pack") == SCHEMA else None
    if not isinstance(files, dict):
        raise KgitError(f"{folder / MANIFEST} is not a kgit pack manifest (schema {SCHEMA})")
    for rel, entry in files.items():
        if not _safe_rel(rel) or not isinstance(entry, dict) or not _pieces_ok(entry):
            raise KgitError(f"{folder / MANIFEST}: its entry for {str(rel)[:80]!r} is malformed")
    return files


def assembled_files(folder: Path) -> list[str]:
    """The files ``assemble`` makes in ``folder`` (relative paths), none for an unpacked release."""
    return sorted(read_manifest(folder))


def assemble(folder: Path, known: dict[str, KnownSha256] | None = None) -> list[str]:
    """Make each packed file of ``folder`` from its pieces, unless it is there at its size (what is
    there is checked by the caller with every other file against the release's record); returns
    those it made. KgitError, with nothing half-written left, if a piece is missing or the result is
    not the file that was released.

    ``known`` receives the sha256 of each file made, of its skeleton and of each of its tensor
    objects, with the identity each had as it was read: the made file's sha256 was checked against
    the manifest, and each piece was read whole, at its recorded length, into it, so a piece is
    exactly the tensor its name is the sha256 of. Checking the folder then need not read them again."""
    made = []
    for rel, entry in read_manifest(folder).items():
        target = folder / rel
        # what an assembly killed midway (SIGKILL, power loss) left: not a file of the release
        remove_leftover_temporaries(target, _ASSEMBLING, unnamed=True)
        if target.is_file() and target.stat().st_size == entry["size"]:
            continue  # there: its bytes are checked with every file of the folder (metadata.json's files)
        tmp = temporary_for(target, _ASSEMBLING)
        digest = _ThreadedSha256()  # hashed in a thread of its own as the bytes are read
        read: dict[str, KnownSha256] = {}
        try:
            skeleton = folder / skeleton_path(rel)
            # each part is read for the hashes and copied by the kernel (copy_range); a part that
            # changed meanwhile is refused, so the file made is the bytes hashed
            with tmp.open("wb", buffering=0) as out, skeleton.open("rb") as skel:
                skel_before = identity_of(os.fstat(skel.fileno()))
                skel_digest = hashlib.sha256()
                for ref, length in entry["pieces"]:
                    if ref is None:
                        start = skel.tell()
                        _stream(skel, length, [digest.update, skel_digest.update])
                        copy_range(skel.fileno(), start, length, out.fileno())
                        _unchanged(skel, skel_before, rel)
                        continue
                    with (folder / TENSORS_DIR / ref).open("rb") as piece:
                        before = identity_of(os.fstat(piece.fileno()))
                        _stream(piece, length, [digest.update])
                        copy_range(piece.fileno(), 0, length, out.fileno())
                        _unchanged(piece, before, rel)
                        if before[1] == length:
                            read[f"{TENSORS_DIR}/{ref}"] = KnownSha256(ref, before)
                skeleton_whole = skel.read(1) == b""
            if digest.hexdigest() != entry["sha256"]:
                raise KgitError(f"{rel} assembled from its pieces is not the file released (sha256 differs)")
            os.replace(tmp, target)
        except FileNotFoundError as exc:
            raise KgitError(
                f"cannot assemble {folder / rel}: a piece is missing ({Path(exc.filename or '').name})"
            ) from None
        finally:
            digest.close()
            tmp.unlink(missing_ok=True)
        if known is not None:
            known.update(read)
            if skeleton_whole:
                known[skeleton_path(rel)] = KnownSha256(skel_digest.hexdigest(), skel_before)
            known[rel] = KnownSha256(entry["sha256"], identity_of(os.stat(target)), md5_needed=False)
        made.append(rel)
    return made


def _unchanged(part: Any, before: tuple[int, int, int, int], rel: str) -> None:
    if identity_of(os.fstat(part.fileno())) != before:
        raise KgitError(f"{Path(part.name).name} changed while {rel} was assembled from it: run the command again")


def is_tensor_name(name: Any) -> bool:
    """Whether ``name`` is one a tensor object is given: a sha256, in lowercase hex."""
    return isinstance(name, str) and len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _safe_rel(rel: Any) -> bool:
    return isinstance(rel, str) and bool(rel) and not rel.startswith("/") and ".." not in rel.split("/")


def _pieces_ok(entry: dict[str, Any]) -> bool:
    pieces = entry.get("pieces")
    if (
        not isinstance(entry.get("size"), int)
        or not isinstance(entry.get("sha256"), str)
        or not isinstance(pieces, list)
    ):
        return False
    total = 0
    for p in pieces:
        if not (
            isinstance(p, list) and len(p) == 2 and isinstance(p[1], int) and not isinstance(p[1], bool) and p[1] >= 0
        ):
            return False
        if p[0] is not None and not is_tensor_name(p[0]):
            return False
        total += p[1]
    return total == entry["size"]
