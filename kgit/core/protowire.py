"""Reading protocol buffer messages by field number, without their generated classes (no TensorFlow).

Enough of the wire format for kgit's read-only looks into TensorFlow's files: tf_keras'
``keras_metadata.pb`` (kgit.models.config_scan) and a SavedModel's ``saved_model.pb``
(kgit.compat.graph_ops). Varints and length-delimited fields are read; fixed-width ones skipped.
"""

from __future__ import annotations

from collections.abc import Iterator


def varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated protocol buffer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of a protocol buffer message: bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated protocol buffer")
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protocol buffer wire type {wire}")


def strings(data: bytes, number: int) -> list[str]:
    """The values of string field ``number`` of a message (UTF-8; undecodable bytes replaced)."""
    return [v.decode("utf-8", "replace") for n, v in fields(data) if n == number and isinstance(v, bytes)]
