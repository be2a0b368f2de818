"""The background releaser of a training run: ``python -m kgit.keras.releaser RUN_DIR [PRIORITY]``.

Started by kgit.keras.ReleaseCallback (kgit.keras.background). Reads the run's request
(kgit.workflow.training.TrainingRequest) from RUN_DIR, then one job per line on stdin; releases each
(kgit.workflow.training.release_job: kgit's normal release path, under the repository lock) and
answers on stdout, one JSON object per line: ``{"step": ...}`` while it works, then
``{"outcome": ...}``. When stdin closes (training is over, or the training process died), or after
two minutes without work (``{"idle": true}``), it removes the training branch's work tree and exits. Whatever the libraries print goes to its stderr,
the run's log file. It never raises: a failed release is an outcome.
"""

from __future__ import annotations

import json
import os
import select
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

IDLE_SECONDS = 120.0


def _answer(channel: TextIO, message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def lower_priority(priority: str) -> None:
    """``idle``: run only when no other process wants the CPU (Linux's SCHED_IDLE; elsewhere the
    lowest nice); ``low``: nice 10; ``normal``: unchanged. Called before TensorFlow starts its threads,
    which inherit it, as do the validation processes this one starts."""
    if priority == "idle" and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:
            pass
    try:
        os.nice({"idle": 19, "low": 10}.get(priority, 0))
    except OSError:
        pass


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0])
    lower_priority(argv[1] if len(argv) > 1 else "idle")
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a library's print must not mix with the answers

    from kgit.core.errors import KgitError, describe
    from kgit.store import clone_state
    from kgit.store.git_ops import Repo
    from kgit.workflow import training, training_branch
    from kgit.workflow.training import Job, Outcome, TrainingRequest

    request = TrainingRequest.read(run_dir)
    log = run_dir / training.LOG_FILE
    repo = Repo(request.repo)
    target: Repo | None = None
    while True:
        # Idle for a while (a long epoch, or a training loop stopped without telling it: a notebook's
        # interrupt reaches only the kernel): exit, and say so; the next snapshot starts a new releaser.
        if not select.select([sys.stdin], [], [], IDLE_SECONDS)[0]:
            _answer(channel, {"idle": True})
            break
        line = sys.stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        job = Job.from_json(line)

        def say(text: str, job: Job = job) -> None:
            print(f"[{job.describe()}] {text}", file=sys.stderr, flush=True)
            _answer(channel, {"id": job.id, "step": text})

        try:
            if target is None:
                if request.branch:
                    say(f"opening the work tree of branch {request.branch}")
                    with clone_state.repo_lock(repo):
                        target = training_branch.open_worktree(repo, request.branch, request.start_commit or "HEAD")
                else:
                    target = repo
            outcome = training.release_job(request, job, target, say)
        except KgitError as exc:
            outcome = Outcome(job.id, job.epoch, error=str(exc))
        except Exception as exc:
            traceback.print_exc()
            outcome = Outcome(job.id, job.epoch, error=f"unexpected error: {describe(exc)} (details in {log})")
        finally:
            Path(job.state).unlink(missing_ok=True)
        outcome.metrics, outcome.monitor, outcome.value = dict(job.metrics), job.monitor, job.value
        print(
            f"[{job.describe()}] " + (f"released {outcome.ref}" if outcome.ref else f"failed: {outcome.error}"),
            file=sys.stderr,
            flush=True,
        )
        _answer(channel, {"id": job.id, "outcome": asdict(outcome)})
    if target is not None and target is not repo:
        try:
            with clone_state.repo_lock(repo):
                note = training_branch.close_worktree(repo, target)
        except KgitError as exc:
            note = f"could not remove the training work tree {target.root}: {exc}"
        if note:
            _answer(channel, {"note": note})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
