"""A fork server: a process that imports what its work needs once, then forks one child per request.

kgit's validations are processes forked from one that imported TensorFlow (kgit.workflow.roundtrip,
kgit.models.roundtrip_worker): each starts from the state a fresh interpreter is in once it has
imported it, without importing it again. The server side is ``serve`` (run in that process after
its imports; the child's work is ``handle``), the caller's side is ``Server``.

The protocol, private to the two: one JSON request per line on the server's stdin; for each, the
server prints the child's pid, then its exit code as ``subprocess`` gives it (negative: the signal
that killed it), one line each. A child takes its stdin from /dev/null, its stdout and stderr from
the files the request names, and the request's working folder and environment (``become``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn


def die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when ``parent`` dies, even by SIGKILL (PR_SET_PDEATHSIG); exit now if it
    died already. Elsewhere stdin's end stops the server."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def serve(handle: Callable[[dict[str, Any]], int]) -> None:
    """Serve requests until stdin closes: fork for each; the child runs ``handle(request)`` and exits
    with what it returns (1, with the traceback on its stderr, if it raised). Nothing of a request
    runs in this process."""
    me = os.getpid()
    # a fresh interpreter's sys.path without its own folder and PYTHONPATH: each request's go first
    given = set(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    base = [p for p in sys.path[1:] if p not in given]
    while line := sys.stdin.readline():
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(handle, request, base, me)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


def _child(handle: Callable[[dict[str, Any]], int], request: dict[str, Any], base: list[str], server: int) -> NoReturn:
    code = 1
    try:
        die_with_parent(server)
        become(request, base)
        code = handle(request)
    except BaseException:  # noqa: BLE001 - a child reports whatever happened, and exits
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def become(request: Mapping[str, Any], base: list[str]) -> None:
    """In a child: stdin from /dev/null (the request pipe is the server's), stdout and stderr to the
    request's ``stdout`` and ``stderr`` files (/dev/null if not named; appended to), its ``cwd``, its
    ``env``, and the sys.path ``python -m`` would have in that folder with import paths ``paths``
    (default: the environment's PYTHONPATH) before ``base``."""
    null = os.open(os.devnull, os.O_RDWR)
    targets = [null]
    for name in ("stdout", "stderr"):
        path = request.get(name)
        targets.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if path else null)
    for target, fd in enumerate(targets):
        os.dup2(fd, target)
    for fd in set(targets):
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    paths = request.get("paths")
    if paths is None:
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *paths, *base]


class Server:
    """The caller's side: a fork server started with ``argv()`` (given this process's pid to die
    with), started again when ``key`` changes (what its children could not take from a request:
    the environment it imported with). One request at a time: while one runs, ``run`` returns None
    at once, and the caller does the work another way."""

    def __init__(self, argv: Callable[[], Sequence[str]]) -> None:
        self._argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self._key: object = None
        self._lock = threading.Lock()
        self._buffer = b""  # what was read of its output past the last line

    def start(self, env: Mapping[str, str], key: object) -> None:
        """Start it now (it imports while the caller goes on), unless one with ``key`` is running."""
        if self._lock.acquire(blocking=False):
            try:
                self._start(env, key)
            finally:
                self._lock.release()

    def _start(self, env: Mapping[str, str], key: object) -> subprocess.Popen[bytes] | None:
        if self.proc is not None and self.proc.poll() is None and key == self._key:
            return self.proc
        self._stop()
        try:
            self.proc = subprocess.Popen(
                list(self._argv()),
                env=dict(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # a server that cannot start answers nothing: the caller works another way
            )
        except OSError:
            return None
        self._key = key
        return self.proc

    def run(self, request: Mapping[str, Any], key: object, timeout: float | None = None) -> int | None:
        """The exit code of the child that did ``request`` (``env`` and ``cwd`` in it); None if no
        server could take it; TimeoutError past ``timeout`` seconds, when the server is killed and the
        child with it (so are they if the wait is interrupted)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            proc = self._start(request["env"], key)
            if proc is None or proc.stdin is None or proc.stdout is None:
                return None
            try:
                proc.stdin.write((json.dumps(dict(request)) + "\n").encode())
                proc.stdin.flush()
            except OSError:
                self._stop()
                return None
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                if self._read_line(deadline) is None:  # the child's pid: it started
                    self._stop()
                    return None
                code = self._read_line(deadline)
            except BaseException:
                self._stop()
                raise
            if code is None:  # the server died meanwhile: so did the child
                self._stop()
                return -9
            return code
        finally:
            self._lock.release()

    def _read_line(self, deadline: float | None) -> int | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return int(line)

    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self, wait: bool = True) -> None:
        """Stop it; ``wait=False`` (at exit): if another thread's request is running, kill the
        server now, and that child with it, rather than wait."""
        if self._lock.acquire(blocking=wait):
            try:
                self._stop()
            finally:
                self._lock.release()
        elif (proc := self.proc) is not None and proc.poll() is None:
            proc.kill()

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        self._buffer = b""
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
