"""Reading many git objects in one process: the only place kgit starts ``git cat-file --batch`` or
``--batch-check`` and parses what it answers.

One process answers any number of object names (``REV:PATH``, a ref, an object id), in the order
asked; a name that names nothing (missing, ambiguous) is answered as such and the rest go on. The
answer is streamed, one object at a time: a huge object is never held with the others, and with
``max_bytes`` at most that many bytes of it (plus one, so that a bounded reader after it refuses it
as too large) are kept while the rest is skipped unread into memory.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kgit.core.errors import CommandError

_HEADER = re.compile(rb"([0-9a-f]{40}|[0-9a-f]{64}) ([a-z]+) ([0-9]+)")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class GitObject:
    """What git answered for one object name."""

    name: str  # the name as asked
    oid: str = ""  # "" when the name names nothing
    type: str = ""  # blob, tree, commit or tag; "" when the name names nothing
    size: int = -1  # the object's whole size in bytes; -1 when the name names nothing
    data: bytes | None = None  # the content (--batch); at most max_bytes + 1 bytes of it when larger

    @property
    def found(self) -> bool:
        return bool(self.oid)

    @property
    def whole(self) -> bool:
        """Whether ``data`` is the whole object (it was read and not cut at the limit)."""
        return self.data is not None and len(self.data) == self.size


def read_objects(
    names: Sequence[str],
    *,
    cwd: str | Path | None = None,
    git: Sequence[str] = ("git",),
    env: Mapping[str, str] | None = None,
    content: bool = True,
    max_bytes: int | None = None,
) -> Iterator[GitObject]:
    """One GitObject per name of ``names``, in order, from one ``git cat-file --batch`` (with
    ``content``) or ``--batch-check`` (without: type and size only). ``git`` is the command that
    runs git (``["git", "--git-dir=..."]`` for a bare repository), run in ``cwd`` with ``env``.
    ValueError if a name holds a newline (one request per line); CommandError if git fails."""
    if any("\n" in name for name in names):
        raise ValueError("an object name with a newline")
    if not names:
        return
    argv = [*git, "cat-file", "--batch" if content else "--batch-check"]
    request = "".join(f"{name}\n" for name in names).encode("utf-8", errors="surrogateescape")
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: git never waits on its stderr
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdin is not None and proc.stdout is not None
        # fed from a thread: git answers while it reads, and a full pipe each way would deadlock
        feeder = threading.Thread(target=_feed, args=(proc.stdin, request), daemon=True)
        feeder.start()
        out, done = proc.stdout, False
        try:
            for name in names:
                header = out.readline()
                if not header.endswith(b"\n"):
                    break  # git stopped answering: its exit status and stderr say why
                match = _HEADER.fullmatch(header[:-1])
                if match is None:  # "<name> missing" / "<name> ambiguous"
                    yield GitObject(name)
                    continue
                oid, otype, size = match.group(1).decode(), match.group(2).decode(), int(match.group(3))
                data = None
                if content:
                    data = _read(out, size, max_bytes)
                    out.read(1)  # the newline after the content
                yield GitObject(name, oid, otype, size, data)
            else:
                done = True
        finally:
            out.close()
            if not done and proc.poll() is None:
                proc.kill()  # the caller stopped reading, or git stopped answering
            code = proc.wait()
            feeder.join()
        if not done or code != 0:
            errors.seek(0)
            said = errors.read(64 << 10).decode("utf-8", errors="replace")
            raise CommandError(argv, code, said or "git stopped answering")


def _read(out: IO[bytes], size: int, limit: int | None) -> bytes:
    """``size`` bytes of ``out``, of which at most ``limit`` + 1 are kept."""
    keep = size if limit is None else min(size, limit + 1)
    data = out.read(keep)
    rest = size - len(data)
    while rest > 0:
        skipped = len(out.read(min(rest, _CHUNK)))
        if not skipped:
            break
        rest -= skipped
    return data


def _feed(pipe: IO[bytes], request: bytes) -> None:
    try:
        pipe.write(request)
    except OSError:  # git stopped reading (it failed, or the caller stopped early and it was killed)
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass
