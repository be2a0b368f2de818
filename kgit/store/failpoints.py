"""Crash-test points: ``KGIT_FAILPOINT=<name>`` stops the process at a named step, so tests can kill
a release (or DVC inside it) exactly there and check what recovery leaves."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

FAILPOINT_ENV = "KGIT_FAILPOINT"


def failpoint(name: str) -> None:
    """Crash-test hook: ``KGIT_FAILPOINT=<name>`` kills the process with SIGKILL at that point;
    ``<name>:INT`` / ``<name>:TERM`` send SIGINT (Ctrl-C) / SIGTERM instead; ``<name>:STOP`` stops
    it there until it gets SIGCONT (a test's way to hold a release at one step)."""
    point, _, sig = os.environ.get(FAILPOINT_ENV, "").partition(":")
    if point == name:
        signals = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "STOP": signal.SIGSTOP}
        os.kill(os.getpid(), signals.get(sig, signal.SIGKILL))


@contextlib.contextmanager
def failpoint_inside(name: str, filename: str, callee: str) -> Iterator[None]:
    """Crash-test hook inside a library's own work: with ``KGIT_FAILPOINT=<name>`` (``:INT``/``:TERM``
    as for ``failpoint``), the process is stopped the first time code in a file whose path ends with
    ``filename`` calls a function named ``callee`` (DVC's ``rwlock.py`` calling ``dump``: right after
    it truncated the file, before it wrote it again)."""
    if os.environ.get(FAILPOINT_ENV, "").partition(":")[0] != name:
        yield
        return

    def hook(frame: Any, event: str, arg: object) -> None:
        caller = frame.f_back
        if (
            event == "call"
            and frame.f_code.co_name == callee
            and caller is not None
            and caller.f_code.co_filename.endswith(filename)
        ):
            sys.setprofile(None)
            failpoint(name)

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(previous)
