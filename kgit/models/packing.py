"""Where the tensors are in a saved model's files, so kgit.core.packing stores each one as its own object.

- an HDF5 file (``model.h5``, ``model.weights.h5``): every contiguous, uncompressed dataset (each
  weight and optimizer slot Keras writes), by its offset in the file (h5py);
- a ``.keras`` file: the same, inside its ``model.weights.h5``, which Keras stores uncompressed in
  the zip (a compressed member is left whole);
- a SavedModel's ``variables/variables.data-*``: every tensor, by the offset and size its
  ``variables.index`` records (a LevelDB table of BundleEntryProto, read here without TensorFlow;
  a compressed or unexpected index leaves the file whole).

Anything kgit cannot map stays whole: packing only ever saves space, and a packed file assembles,
byte for byte, into the file that was saved (its sha256 in the manifest) or is refused.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

from kgit.core import packing
from kgit.core.fsutil import KnownSha256
from kgit.core.protowire import fields, varint

_TABLE_MAGIC = 0xDB4775248B80FB57
_KERAS_WEIGHTS = "model.weights.h5"


def pack(
    folder: Path, known: dict[str, KnownSha256] | None = None, stored: packing.PieceStore | None = None
) -> dict[str, dict[str, Any]]:
    """Split every weight file of ``folder`` kgit can map into tensor objects (kgit.core.packing) and
    write the manifest; returns the manifest's files. Each file's sha256 in the manifest is taken from
    the bytes the pieces were cut from, in the same read: assembling gives that file or is refused.
    ``known`` receives the hashes that read computed; ``stored``: where pieces may be already, to link
    to (both: kgit.core.packing.split)."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(packing.PACK_DIR + "/"):
            continue
        extents = _extents(path)
        entry = packing.split(folder, rel, extents, known=known, stored=stored) if extents else None
        if entry is not None:
            files[rel] = entry
    if files:
        packing.write_manifest(folder, files)
    return files


def _extents(path: Path) -> list[tuple[int, int]]:
    name = path.name
    try:
        if name.endswith(".keras"):
            return _keras_extents(path)
        if name.endswith(".h5"):
            import h5py

            with h5py.File(path, "r") as f:
                return _h5_extents(f, 0)
        if name.startswith("variables.data-") and (path.parent / "variables.index").is_file():
            return _bundle_extents(path.parent / "variables.index", shard=_shard(name))
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile):
        return []  # not what kgit expects: the file stays whole
    return []


def _h5_extents(f: Any, base: int) -> list[tuple[int, int]]:
    import h5py

    found: list[tuple[int, int]] = []

    def visit(_name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.chunks is None and obj.compression is None:
            offset = obj.id.get_offset()
            if offset is not None:
                found.append((base + offset, obj.id.get_storage_size()))

    f.visititems(visit)
    return found


def _keras_extents(path: Path) -> list[tuple[int, int]]:
    import h5py

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(_KERAS_WEIGHTS)
        if info.compress_type != zipfile.ZIP_STORED:
            return []
        with path.open("rb") as raw:
            raw.seek(info.header_offset)
            header = raw.read(30)
        if header[:4] != b"PK\x03\x04":
            return []
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
    with path.open("rb") as raw, h5py.File(_Window(raw, start, info.file_size), "r") as f:
        return [(off, n) for off, n in _h5_extents(f, start) if off + n <= start + info.file_size]


class _Window(io.RawIOBase):
    """The bytes ``start .. start + size`` of an open file, as a file of their own: a stored zip
    member read in place (zipfile's own reader re-reads from the start, checking its CRC, at each
    backward seek h5py makes)."""

    def __init__(self, raw: Any, start: int, size: int) -> None:
        self.raw, self.start, self.size, self.pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self.size - self.pos))
        self.raw.seek(self.start + self.pos)
        got = self.raw.readinto(memoryview(buffer)[:n]) if n else 0
        self.pos += got
        return got


def _shard(name: str) -> int:
    return int(name.split("-")[1])  # variables.data-00000-of-00001


def _bundle_extents(index: Path, shard: int) -> list[tuple[int, int]]:
    """(offset, size) of each tensor of ``shard`` that a TensorFlow checkpoint index records."""
    data = index.read_bytes()
    footer = data[-48:]
    if len(footer) != 48 or struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
        raise ValueError("not a table")
    pos = varint(footer, varint(footer, 0)[1])[1]  # past the metaindex handle
    index_off, pos = varint(footer, pos)
    index_size, _ = varint(footer, pos)
    found = []
    for _key, handle in _block(data, index_off, index_size):
        block_off, p = varint(handle, 0)
        block_size, _ = varint(handle, p)
        for key, value in _block(data, block_off, block_size):
            if not key:  # the header entry
                continue
            entry = dict(fields(value))
            if int(entry.get(3, 0)) == shard and 7 not in entry:  # sliced tensors are left whole
                found.append((int(entry.get(4, 0)), int(entry.get(5, 0))))
    return found


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one uncompressed table block."""
    if offset + size + 5 > len(data) or data[offset + size] != 0:  # the trailer's compression type
        raise ValueError("compressed or truncated block")
    block = data[offset : offset + size]
    restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        length, pos = varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries
