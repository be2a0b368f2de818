"""A fork server: a process that imports what its work needs once, then forks one child per request.

kgit's validations are processes forked from one that imported TensorFlow (kgit.workflow.roundtrip,
kgit.models.roundtrip_worker): each starts from the state a fresh interpreter is in once it has
imported it, without importing it again. The server side is ``serve`` (run in that process after
its imports; the child's work is ``handle``), the caller's side is ``Server``.

The protocol, private to the two: one JSON request per line on the server's stdin, with an ``id``;
for each, the server prints the id and the child's pid, then the id and the child's exit code as
``subprocess`` gives it (negative: the signal that killed it), one line each. A child whose
``requester`` (pid) dies first is killed. A line that is not a
request (what a caller killed while writing left) is skipped, and so is a reply for another id (a
caller killed while waiting). A child takes its stdin from /dev/null, its stdout and stderr from
the files the request names, and the request's working folder and environment (``become``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


def _tie(prctl: Callable[..., int] | None, parent: int) -> None:
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)


def die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when ``parent`` dies, even by SIGKILL (PR_SET_PDEATHSIG); exit now if it
    died already. Elsewhere stdin's end stops the server."""
    _tie(_prctl(), parent)


def dies_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess``: the child gets SIGKILL when this process dies (Linux), so
    a helper kgit started (uv installing packages, a loader in another environment) never outlives
    a kgit that was killed, and never writes into what the next kgit cleans up. None elsewhere.
    (prctl is looked up here: between fork and exec, the child only calls it.)"""
    prctl = _prctl()
    return None if prctl is None else functools.partial(_tie, prctl, os.getpid())


def serve(handle: Callable[[dict[str, Any]], int]) -> None:
    """Serve requests until stdin closes: fork for each; the child runs ``handle(request)`` and exits
    with what it returns (1, with the traceback on its stderr, if it raised). Nothing of a request
    runs in this process."""
    me = os.getpid()
    # a fresh interpreter's sys.path without its own folder and PYTHONPATH: each request's go first
    given = set(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    base = [p for p in sys.path[1:] if p not in given]
    while line := sys.stdin.readline():
        try:
            request = json.loads(line)
            ident = str(request["id"])
        except (ValueError, TypeError, KeyError):
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(handle, request, base, me)
        print(ident, pid, flush=True)
        _watch(pid, request.get("requester"))
        _, status = os.waitpid(pid, 0)
        print(ident, os.waitstatus_to_exitcode(status), flush=True)


def _watch(child: int, requester: object) -> None:
    """Return when ``child`` ends; if its ``requester`` (a pid) ends first, kill the child: nobody
    waits for its work any more, and the next request would wait for it (Linux pidfds; elsewhere
    the child runs to its end)."""
    if not isinstance(requester, int) or not hasattr(os, "pidfd_open"):
        return
    try:
        watched = os.pidfd_open(child)
    except OSError:
        return
    try:
        try:
            waiting = os.pidfd_open(requester)
        except ProcessLookupError:  # it is gone already
            os.kill(child, signal.SIGKILL)
            return
        except OSError:
            return
        try:
            ready = select.select([watched, waiting], [], [])[0]
            if watched not in ready:
                os.kill(child, signal.SIGKILL)
        finally:
            os.close(waiting)
    finally:
        os.close(watched)


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
    the environment it imported with). One request at a time, across this process's threads and
    the processes forked from it: while one runs, ``run`` returns None at once, and the caller does
    the work another way.

    A process forked from this one (``multiprocessing``'s default on Linux, a test runner's forked
    commands) uses the same server while its ``key`` is the same, and never stops or restarts it: it
    starts a server of its own instead. What it stops on a timeout or an interrupt is its own request.
    """

    def __init__(self, argv: Callable[[], Sequence[str]]) -> None:
        self._argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self._key: object = None
        self._owner = os.getpid()  # the process that started ``proc``: the only one that stops it
        self._lock = threading.Lock()  # one request at a time among this process's threads ...
        self._turn: int | None = None  # ... and among processes: a file the requester locks (lockf)
        self._buffer = b""  # what was read of its output past the last line
        self._requests = itertools.count()
        forked = weakref.WeakMethod(self._forked)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: (method := forked()) is not None and method())

    def _forked(self) -> None:
        # In a forked child: another thread's request, and what it read, were the parent's.
        self._lock = threading.Lock()
        self._buffer = b""

    def _mine(self) -> bool:
        return self._owner == os.getpid()

    def start(self, env: Mapping[str, str], key: object) -> None:
        """Start it now (it imports while the caller goes on), unless one with ``key`` is running."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._adopt(key)
            if self._mine() and self._take():
                try:
                    self._start(env, key)
                finally:
                    self._give()
        finally:
            self._lock.release()

    def _adopt(self, key: object) -> None:
        # A forked process shares its parent's server only while it would start the same one.
        if not self._mine() and (self.proc is None or self._turn is None or key != self._key):
            self._forget()

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
        server could take it now; TimeoutError past ``timeout`` seconds (and an interrupted wait),
        when the child is killed (by killing this process's own server, with its children)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._adopt(key)
            if not self._take():
                return None
            try:
                return self._run(request, key, timeout)
            finally:
                self._give()
        finally:
            self._lock.release()

    def _run(self, request: Mapping[str, Any], key: object, timeout: float | None) -> int | None:
        proc = self._start(request["env"], key) if self._mine() else self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            return None
        ident = f"{os.getpid()}.{next(self._requests)}"
        try:
            # a newline first: whatever a requester killed mid-write left ends there, a line the server skips
            line = json.dumps({**request, "id": ident, "requester": os.getpid()})
            proc.stdin.write(b"\n" + line.encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            self._stop()
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        child = None
        try:
            child = self._reply(ident, deadline)
            if child is None:  # it could not start the child
                self._stop()
                return None
            code = self._reply(ident, deadline)
        except BaseException:
            self._stop(child)
            raise
        if code is None:  # the server died meanwhile: so did the child
            self._stop()
            return -9
        return code

    def _reply(self, ident: str, deadline: float | None) -> int | None:
        """The value of the next line for request ``ident`` (lines for others: requesters that were
        killed while they waited); None at the end of the server's output."""
        while (line := self._read_line(deadline)) is not None:
            got, _, value = line.partition(b" ")
            if got == ident.encode():
                with contextlib.suppress(ValueError):
                    return int(value)
        return None

    def _read_line(self, deadline: float | None) -> bytes | None:
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
        return line

    def _take(self, wait: bool = False) -> bool:
        """This process's turn at the server (a lock on a file that processes forked from the owner
        share, held by one process at a time, dropped by the kernel if that process dies)."""
        import fcntl

        if self._turn is None:
            fd, path = tempfile.mkstemp(prefix="kgit-forkserver-")
            os.unlink(path)
            self._turn = fd
        try:
            fcntl.lockf(self._turn, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _give(self) -> None:
        import fcntl

        if self._turn is not None:
            with contextlib.suppress(OSError):
                fcntl.lockf(self._turn, fcntl.LOCK_UN)

    def pid(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if self._mine():
            return proc.pid if proc.poll() is None else None
        try:  # not this process's child: it cannot wait for it
            os.kill(proc.pid, 0)
        except OSError:
            return None
        return proc.pid

    def stop(self, wait: bool = True) -> None:
        """Stop it; ``wait=False`` (at exit): if a request is running, kill the server now, and that
        child with it, rather than wait. In a forked process: let go of the parent's server, which
        runs on."""
        if self._lock.acquire(blocking=wait):
            try:
                if not self._mine():
                    self._forget()
                elif self._take(wait):
                    try:
                        self._stop()
                    finally:
                        self._give()
                elif (proc := self.proc) is not None and proc.poll() is None:
                    proc.kill()
            finally:
                self._lock.release()
        elif self._mine() and (proc := self.proc) is not None and proc.poll() is None:
            proc.kill()

    def _stop(self, child: int | None = None) -> None:
        if not self._mine():  # the server is the parent's: end this process's own request only
            if child is not None and self.proc is not None:
                _end_child(child, self.proc.pid)
            self._forget()
            return
        proc, self.proc = self.proc, None
        self._buffer = b""
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        _close(proc)

    def _forget(self) -> None:
        """In a forked process: drop the parent's server without touching it; the next request
        starts this process's own."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _close(proc)
            proc.returncode = 0  # not this process's child: Popen must never wait for it
        if self._turn is not None:
            with contextlib.suppress(OSError):
                os.close(self._turn)
        self._turn, self._key, self._buffer = None, None, b""
        self._owner = os.getpid()


def _close(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _end_child(child: int, server: int) -> None:
    """Kill ``child`` if it is still ``server``'s child (Linux: /proc says; elsewhere, leave it
    rather than risk a process that took its pid)."""
    try:
        parent = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return
    if parent == server:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
