"""The background releases of one training run, seen from the training process.

One releaser process (``python -m kgit.keras.releaser``) makes the releases, one at a time; at most one
snapshot waits for it, and a newer one replaces it (the older is counted as superseded). A thread of
the training process hands snapshots over and reads the answers: it spends its time waiting on a pipe,
so the training loop keeps the interpreter. The process runs at the lowest CPU priority, with
TensorFlow on one thread, so it takes what training leaves (kgit.keras.releaser).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError
from kgit.models.snapshot import State
from kgit.workflow.roundtrip import worker_env
from kgit.workflow.training import LOG_FILE, Job, Outcome, TrainingRequest


@dataclass
class _Snapshot:
    job: Job
    state: State | None  # in memory until it is handed over


class Releases:
    """Hands a run's snapshots to its releaser process, one at a time, newest first."""

    def __init__(self, request: TrainingRequest, priority: str) -> None:
        self.request = request
        self.priority = priority
        self.log = Path(request.run_dir) / LOG_FILE
        self.outcomes: list[Outcome] = []
        self.superseded: list[Job] = []  # replaced by a newer snapshot before their release began
        self.notes: list[str] = []  # what the releaser said when it finished (a work tree kept...)
        self.step: str | None = None  # what the releaser is doing now
        self.active: Job | None = None
        self._pending: _Snapshot | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._ids = 0

    def submit(self, job: Job, state: State) -> None:
        """Queue ``state`` for release (replacing a snapshot still waiting); returns at once."""
        with self._cond:
            if self._pending is not None:
                self.superseded.append(self._pending.job)
            self._pending = _Snapshot(job, state)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kgit-releases", daemon=True)
                self._thread.start()

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    @property
    def waiting(self) -> int:
        """Snapshots not yet released (the one being released and the one waiting)."""
        with self._cond:
            return (self.active is not None) + (self._pending is not None)

    def finish(self, tick: Callable[[float], None] | None = None) -> list[Outcome]:
        """Wait for every queued release and for the releaser to exit; ``tick(seconds waited)`` is
        called about twice a second meanwhile. Returns the outcomes, in the order they were made."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        started = time.monotonic()
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)
            if tick is not None:
                tick(time.monotonic() - started)
        return list(self.outcomes)

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    break
                snap, self._pending = self._pending, None
                self.active = snap.job
            outcome = self._release(snap)
            with self._cond:
                self.outcomes.append(outcome)
                self.active, self.step = None, None
        self._stop()

    def _release(self, snap: _Snapshot) -> Outcome:
        job = snap.job
        try:
            assert snap.state is not None
            snap.state.write(Path(job.state))
        except OSError as exc:
            return self._failed(job, f"cannot write its snapshot ({exc.strerror or exc})")
        snap.state = None  # the file holds it now
        try:
            for _attempt in range(3):
                outcome = self._hand_over(job)
                if outcome is not None:
                    return outcome
            code = self._reap()
            return self._failed(job, f"the background releaser stopped (exit code {code}) during its release")
        finally:
            Path(job.state).unlink(missing_ok=True)

    def _hand_over(self, job: Job) -> Outcome | None:
        """The releaser's answer for ``job``; None if it went idle (and exited) as the job came."""
        try:
            proc = self._process()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(job.to_json() + "\n")
            proc.stdin.flush()
            for line in proc.stdout:
                message = _message(line)
                if "step" in message:
                    self.step = str(message["step"])
                elif "outcome" in message:
                    return Outcome(**message["outcome"])
                elif message.get("idle"):
                    self._drain(proc)
                    return None
        except OSError:
            pass  # the process is gone
        code = self._reap()
        return self._failed(job, f"the background releaser stopped (exit code {code}) during its release")

    def _failed(self, job: Job, error: str) -> Outcome:
        return Outcome(
            job.id,
            job.epoch,
            error=f"{error}: see {self.log}",
            metrics=dict(job.metrics),
            monitor=job.monitor,
            value=job.value,
        )

    def _process(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            env = {**worker_env(), "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
            with open(self.log, "a") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "kgit.keras.releaser", self.request.run_dir, self.priority],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    text=True,
                    bufsize=1,
                    cwd=self.request.repo,
                )
        return self._proc

    def _reap(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        _close(proc.stdin)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def abandon(self) -> None:
        """Training stopped without ending (interrupted): make the queued releases, then let the
        releaser go, without waiting here."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _stop(self) -> None:
        """Close the releaser's input: it finishes (removing a training branch's work tree) and exits."""
        proc = self._proc
        if proc is None:
            return
        self._drain(proc)

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        """Let the releaser finish: its input closed, what it says until it exits, then its exit."""
        _close(proc.stdin)
        assert proc.stdout is not None
        for line in proc.stdout:
            message = _message(line)
            if "note" in message:
                self.notes.append(str(message["note"]))
        self._reap()


def _message(line: str) -> dict[str, Any]:
    try:
        message = bounded_yaml.load_json(line, "a message from the releaser")
    except KgitError:
        return {}
    return message if isinstance(message, dict) else {}


def _close(stream: IO[str] | None) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass
