"""`python -m kgit ARGS` for the tests, in a process forked from one that has imported kgit's command
line, DVC and TensorFlow (not started: no device, no thread pool, so it is safe to fork).

A test's `kgit` command is still a process of its own, with its own working folder, environment,
stdin (empty), stdout and stderr (files, read back as a pipe would give them), exit code and
signals: a failpoint's SIGKILL kills it, and only it. What it does not pay is importing TensorFlow
and DVC again (about 2.5 s of CPU per command that loads a model, on a suite that is CPU-bound).
Commands whose test is about the process itself (what a command imports, a Ctrl-C to its process
group, streaming its output, git's hooks) run `python -m kgit` as users do.

The preloading process (``python -m support.forked_cli PARENT_PID``) reads one JSON request per line
on stdin, forks, and prints the child's pid, then its exit code, as ``subprocess`` gives it (negative:
killed by that signal). It dies with the pytest worker that started it.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, NoReturn


def _die_with_parent(parent: int) -> None:
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def serve(parent: int) -> None:
    _die_with_parent(parent)
    import dvc.repo  # noqa: F401

    import kgit.cli  # noqa: F401
    from kgit.models.runtime import keras_module

    keras_module()
    given = set(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    base = [p for p in sys.path[1:] if p not in given]
    me = os.getpid()
    while line := sys.stdin.readline():
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, base, me)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


def _child(request: dict[str, Any], base: list[str], server: int) -> NoReturn:
    import runpy
    import traceback

    code: int = 1
    try:
        _die_with_parent(server)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [request["cwd"], *given, *base]  # as `python -m` in that folder with that PYTHONPATH
        sys.argv = ["-m", *request["args"]]
        try:
            runpy.run_module("kgit", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # as the interpreter ends on it
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # an uncaught exception: the interpreter prints it and exits 1
            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter does on its way out
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class _Client:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.buffer = b""
        self.started_with: tuple[tuple[str, str], ...] = ()

    def _server(self) -> subprocess.Popen[bytes]:
        from kgit.workflow.roundtrip import read_at_start

        if self.proc is not None and read_at_start(os.environ) != self.started_with:
            self.stop()  # this process's own environment changed since (a test's monkeypatch)
        if self.proc is None or self.proc.poll() is not None:
            self.started_with = read_at_start(os.environ)
            self.buffer = b""
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "support.forked_cli", str(os.getpid())],
                cwd=Path(__file__).resolve().parents[1],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self.proc

    def _line(self) -> int | None:
        assert self.proc is not None and self.proc.stdout is not None
        while b"\n" not in self.buffer:
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return int(line)

    def run(self, args: list[str], cwd: Path, env: dict[str, str] | None) -> subprocess.CompletedProcess[str] | None:
        from kgit.workflow.roundtrip import read_at_start

        if read_at_start(os.environ if env is None else env) != read_at_start(os.environ):
            return None  # Python or TensorFlow would start differently (PYTHONDONTWRITEBYTECODE...): a fresh process
        if not self.lock.acquire(blocking=False):
            return None  # another thread's command is running: the caller starts a process of its own
        try:
            with tempfile.TemporaryDirectory(prefix="kgit-forked-") as tmp:
                out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
                request = {
                    "args": args,
                    "cwd": str(Path(cwd).resolve()),
                    "env": dict(os.environ if env is None else env),
                    "stdout": str(out),
                    "stderr": str(err),
                }
                proc = self._server()
                assert proc.stdin is not None
                try:
                    proc.stdin.write((json.dumps(request) + "\n").encode())
                    proc.stdin.flush()
                except OSError:
                    self.stop()
                    return None
                if self._line() is None:
                    self.stop()
                    return None
                code = self._line()
                if code is None:
                    raise AssertionError("the process kgit commands are forked from died while one ran")
                return subprocess.CompletedProcess(
                    [sys.executable, "-m", "kgit", *args],
                    code,
                    out.read_text(encoding="utf-8"),
                    err.read_text(encoding="utf-8"),
                )
        finally:
            self.lock.release()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


_CLIENT = _Client()
atexit.register(_CLIENT.stop)


def run_kgit(cwd: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m kgit ARGS` in ``cwd`` (with ``env``, default this process's environment), stdin
    empty, its output captured: a process forked from the preloaded one, or a fresh one."""
    done = _CLIENT.run(list(args), cwd, env)
    if done is not None:
        return done
    return subprocess.run(
        [sys.executable, "-m", "kgit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    serve(int(sys.argv[1]))
