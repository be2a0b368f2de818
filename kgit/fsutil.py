"""Files that matter: written whole or not at all, and one writer at a time."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kgit.errors import BusyError


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


@contextlib.contextmanager
def exclusive(path: Path, busy: str, *, timeout: float = 0.0,
              on_wait: Callable[[], None] | None = None) -> Iterator[None]:
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
