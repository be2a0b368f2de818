"""Writing files that matter: whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str | bytes, *, durable: bool = False, executable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``,
    so a reader sees the old file or the new one, never half of one. ``durable`` also fsyncs the
    data before the rename (for records that recovery depends on after a crash)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.kgit-tmp")
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


def write_json(path: Path, data: Any, *, durable: bool = False, indent: int | None = None) -> None:
    """``write_atomic`` of ``data`` as JSON with sorted keys."""
    text = json.dumps(data, sort_keys=True, indent=indent) + ("\n" if indent else "")
    write_atomic(path, text, durable=durable)
