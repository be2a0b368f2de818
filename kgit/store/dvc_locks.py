"""DVC's own lock files after a kill: ``.dvc/tmp/rwlock`` and ``.dvc/tmp/lock``.

DVC runs one command at a time per repository under ``.dvc/tmp/lock`` (an flock, which the kernel
drops when its holder dies, so a kill never leaves it held). While a command reads or writes
outputs, DVC records it in ``.dvc/tmp/rwlock``: JSON, ``{"write": {path: {"pid", "cmd"}}, "read":
{path: [{"pid", "cmd"}]}}``, rewritten in place (truncated, then written) under
``.dvc/tmp/rwlock.lock``. A process killed between the two leaves the file empty or half-written,
and every later DVC command in the repository stops ("Unable to read RWLock-file ... JSON structure
is corrupted"); one killed while it held an entry leaves the entry, which blocks those outputs once
another process gets its number.

``inspect`` says, without importing DVC, whether the file needs repair; ``repair`` (called with
kgit's repository lock held) repairs it only when that is safe: it drops only entries of processes
that are gone, resets an unreadable file only if no live process is named in it, and does either only
while it holds DVC's own two locks, so no DVC command is running or editing the file meanwhile.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml, progress
from kgit.core.errors import KgitError, one_line
from kgit.core.fsutil import write_atomic
from kgit.store import clone_state
from kgit.store.git_ops import Repo

RWLOCK = ".dvc/tmp/rwlock"
MAX_BYTES = 16 << 20  # a lock naming thousands of outputs is a few hundred KB; beyond this, leave it alone
SLACK_S = 2.0  # process start times are known to about a second


@dataclass(frozen=True)
class Entry:
    mode: str  # "read" or "write"
    path: str
    pid: int
    cmd: str


@dataclass
class Finding:
    """What is wrong with the rwlock file: ``unreadable`` (why DVC refuses it), or entries of ended
    processes (``stale``); ``live``: processes it names that still run."""

    unreadable: str | None = None
    stale: list[Entry] = field(default_factory=list)
    live: list[Entry] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def inspect(root: Path) -> Finding | None:
    """What needs repair in ``root``'s ``.dvc/tmp/rwlock``; None if nothing does (or the file is
    missing, or too large to be one DVC wrote)."""
    path = root / RWLOCK
    try:
        st = path.stat()
        if st.st_size > MAX_BYTES:
            return None
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return Finding(unreadable=exc.strerror or str(exc))
    data, why = _parse(raw)
    if data is None:
        live = [e for e in _named(raw) if _alive(e.pid, st.st_mtime)]
        return Finding(unreadable=why, live=live)
    entries = _entries(data)
    stale = [e for e in entries if not _alive(e.pid, st.st_mtime)]
    if not stale:
        return None
    return Finding(stale=stale, live=[e for e in entries if e not in stale], data=data)


def repair(root: Path) -> str | None:
    """Repair ``.dvc/tmp/rwlock`` if ``inspect`` finds it needs it and it is safe (call with kgit's
    repository lock held); returns one line saying what was done, or why it was left as it is; None
    if nothing needed doing."""
    if inspect(root) is None:
        return None
    try:
        return _repair(root)
    except (KgitError, OSError) as exc:
        return f"could not repair {RWLOCK} ({one_line(exc, 150)}): DVC may refuse to run until it is removed"


def before_dvc(repo: Repo, log: Callable[[str], None] | None = None) -> None:
    """``repair``, for a command that does not otherwise write (the pre-push hook's `dvc repro`, `kgit
    get`'s checkout) and so holds no lock: the repository's lock is taken only when there is something
    to repair."""

    if inspect(repo.root) is None:
        return
    on_wait = (lambda: log("waiting for another kgit command in this repository")) if log else None
    with clone_state.repo_lock(repo, on_wait=on_wait):
        progress.tell(log, repair(repo.root))


def _repair(root: Path) -> str | None:
    from kgit.store import dvc_ops

    with dvc_ops.locked_idle(root) as idle:
        found = inspect(root)  # again: under DVC's own locks nothing can change it now
        if found is None:
            return None
        if not idle:
            return (
                f"left {RWLOCK} as it is ({_what(found)}): a DVC command is running in this repository; "
                "rerun once it has finished"
            )
        path = root / RWLOCK
        if found.unreadable is not None:
            if found.live:
                return (
                    f"left {RWLOCK} as it is ({_what(found)}): it names {_who(found.live)}, which still "
                    "runs; rerun once it has finished"
                )
            if path.is_dir() or path.is_symlink():
                return f"left {RWLOCK} as it is: it is not a regular file; remove it by hand"
            write_atomic(path, "{}")
            return f"reset {RWLOCK}, which an interrupted DVC command left {found.unreadable}"
        write_atomic(path, json.dumps(_without(found.data, found.stale)))
        n = len(found.stale)
        return f"removed {n} entr{'y' if n == 1 else 'ies'} of ended processes ({_who(found.stale)}) from {RWLOCK}"


def _what(found: Finding) -> str:
    return found.unreadable or f"entries of ended processes: {_who(found.stale)}"


def _who(entries: list[Entry]) -> str:
    seen = dict.fromkeys((e.pid, e.cmd[:60]) for e in entries)
    shown = ", ".join(f"PID {pid}" + (f" `{cmd}`" if cmd else "") for pid, cmd in list(seen)[:3])
    return shown + (f" and {len(seen) - 3} more" if len(seen) > 3 else "")


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """The file's content if DVC would accept it (its ``SCHEMA`` in dvc/rwlock.py), else None and why."""
    if not raw.strip():
        return None, "empty"
    try:
        data = bounded_yaml.load_json(raw.decode("utf-8"), "DVC's lock file", max_bytes=MAX_BYTES)
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except bounded_yaml.TooDeep:
        return None, "nested too deeply"
    except KgitError:
        return None, "truncated or not JSON"
    ok = isinstance(data, dict) and set(data) <= {"read", "write"}
    ok = (
        ok
        and isinstance(data.get("write", {}), dict)
        and all(isinstance(k, str) and _info(v) for k, v in data.get("write", {}).items())
    )
    ok = (
        ok
        and isinstance(data.get("read", {}), dict)
        and all(
            isinstance(k, str) and isinstance(v, list) and all(_info(i) for i in v)
            for k, v in data.get("read", {}).items()
        )
    )
    return (data, "") if ok else (None, "not in DVC's format")


def _info(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"pid", "cmd"}
        and isinstance(value["pid"], int)
        and not isinstance(value["pid"], bool)
        and isinstance(value["cmd"], str)
    )


def _entries(data: dict[str, Any]) -> list[Entry]:
    found = [Entry("write", path, info["pid"], info["cmd"]) for path, info in data.get("write", {}).items()]
    found += [
        Entry("read", path, info["pid"], info["cmd"]) for path, infos in data.get("read", {}).items() for info in infos
    ]
    return found


_PID = re.compile(rb'"pid"\s*:\s*(\d{1,10})')


def _named(raw: bytes) -> list[Entry]:
    """The processes a damaged file still names (``"pid": N`` wherever it appears)."""
    pids = dict.fromkeys(int(m.group(1)) for m in _PID.finditer(raw))
    return [Entry("?", "?", pid, "") for pid in pids]


def _without(data: dict[str, Any], stale: list[Entry]) -> dict[str, Any]:
    """``data`` without the ``stale`` entries, empty sections dropped, as DVC releases them."""
    gone = {(e.mode, e.path, e.pid, e.cmd) for e in stale}
    write = {p: i for p, i in data.get("write", {}).items() if ("write", p, i["pid"], i["cmd"]) not in gone}
    read = {
        p: kept
        for p, infos in data.get("read", {}).items()
        if (kept := [i for i in infos if ("read", p, i["pid"], i["cmd"]) not in gone])
    }
    return {**({"write": write} if write else {}), **({"read": read} if read else {})}


def _alive(pid: int, since: float) -> bool:
    """Whether process ``pid`` may be the one that wrote an entry into a file last modified at
    ``since``: it runs, is not a zombie, is not this process (which is not inside DVC when kgit
    checks) and did not start after the file was last written (then its number was reused)."""
    import psutil  # DVC's own dependency: DVC checks its lock entries with it

    if pid == os.getpid() or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(proc.create_time() <= since + SLACK_S)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # cannot tell (another user's process): count it as running
        return True
