"""`python -m kgit ARGS` for the tests, in a process forked from one that has imported kgit's command
line, DVC and TensorFlow (not started: no device, no thread pool, so it is safe to fork).

A test's `kgit` command is still a process of its own, with its own working folder, environment,
stdin (empty), stdout and stderr (files, read back as a pipe would give them), exit code and
signals: a failpoint's SIGKILL kills it, and only it. What it does not pay is importing TensorFlow
and DVC again (about 2.5 s of CPU per command that loads a model, on a suite that is CPU-bound), nor
starting a validation process of its own: it validates in a process forked from kgit's preloaded
validation process, which this one started (kgit.core.forkserver.Server is shared with forked
processes).

Commands whose test is about the process itself (what a command imports, a Ctrl-C to its process
group, streaming its output, git's hooks) run `python -m kgit` as users do.

The preloading process (``python -m support.forked_cli PARENT_PID``) is a kgit.core.forkserver, as
kgit's own preloaded validation process is: it dies with the pytest worker that started it, and is
started again when this process's environment changes what Python or TensorFlow start with.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any


def serve(parent: int, validations: bool = True) -> None:
    from kgit.core import forkserver

    forkserver.die_with_parent(parent)
    import dvc.repo  # noqa: F401

    import kgit.cli  # noqa: F401
    from kgit.models.runtime import keras_module
    from kgit.workflow import roundtrip

    keras_module()
    # kgit's own preloaded validation process, which the forked commands share (one at a time, as
    # processes forked from its owner do) while their environment is this one; not for the fast
    # tier, which validates nothing (a TensorFlow import saved per worker)
    if validations:
        roundtrip.preload()
    forkserver.serve(_kgit_main)


def _kgit_main(request: dict[str, Any]) -> int:
    """In a child: ``python -m kgit ARGS``, ending as the interpreter would."""
    import atexit
    import runpy
    import traceback

    sys.argv = ["-m", *request["args"]]
    try:
        runpy.run_module("kgit", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
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
    return code


def _server_argv() -> list[str]:
    from conftest import FAST_TIER

    return [sys.executable, "-m", "support.forked_cli", str(os.getpid()), *(["--no-validations"] if FAST_TIER else [])]


_SERVER: Any = None


def _server() -> Any:
    global _SERVER
    if _SERVER is None:
        from kgit.core.forkserver import Server

        _SERVER = Server(_server_argv)
        atexit.register(_SERVER.stop, wait=False)
    return _SERVER


def run_kgit(cwd: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m kgit ARGS` in ``cwd`` (with ``env``, default this process's environment), stdin
    empty, its output captured: a process forked from the preloaded one, or a fresh one where a
    forked one would not be the same (another environment for Python or TensorFlow to start with),
    or while another thread's command runs."""
    from kgit.workflow.roundtrip import read_at_start

    env = dict(os.environ if env is None else env)
    if read_at_start(env) == read_at_start(os.environ):  # else Python or TensorFlow would start differently
        with tempfile.TemporaryDirectory(prefix="kgit-forked-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {
                "args": list(args),
                "cwd": str(Path(cwd).resolve()),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
            }
            code = _server().run(request, read_at_start(os.environ))
            if code is not None:
                return subprocess.CompletedProcess(
                    [sys.executable, "-m", "kgit", *args],
                    code,
                    out.read_text(encoding="utf-8"),
                    err.read_text(encoding="utf-8"),
                )
    return run_fresh(cwd, args, env)


def run_fresh(cwd: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m kgit ARGS` in ``cwd``, a fresh interpreter, stdin empty, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "kgit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    serve(int(sys.argv[1]), validations="--no-validations" not in sys.argv[2:])
