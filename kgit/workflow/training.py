"""Releases made while a model trains (kgit.keras.ReleaseCallback): what a training run asks for, the
snapshot each release is made from, and making one release of it through kgit's normal path.

The training process only takes snapshots (kgit.models.snapshot) and writes this run's request; a
background process (kgit.keras.releaser) turns each snapshot back into the model and calls
``releasing.release`` and ``stages.promote`` with it, so every check, the validation in a fresh
process, the journal and the repository lock are those of any release.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml
from kgit.core import metrics as metrics_mod
from kgit.core.errors import KgitError
from kgit.core.fsutil import running
from kgit.store import clone_state
from kgit.store.git_ops import Repo

REQUEST_FILE = "request.json"
BASE_DIR = "base"
LOG_FILE = "releaser.log"


@dataclass
class TrainingRequest:
    """What every release of one training run shares (written by the training process, read by the
    releaser)."""

    name: str
    repo: str  # the user's work tree
    run_dir: str
    options: dict[str, Any]  # releasing.check_options' result: formats, custom objects, notes...
    branch: str | None = None  # release on this branch, in a work tree of its own (training_branch)
    start_commit: str | None = None  # HEAD when training began: where a new branch starts
    promote_to: str | None = None
    source_note: str = ""  # how the code that trained looked, added to each release's notes

    def write(self) -> None:
        clone_state.write_json(Path(self.run_dir) / REQUEST_FILE, asdict(self))

    @classmethod
    def read(cls, run_dir: Path) -> TrainingRequest:
        return cls(**bounded_yaml.load_json((run_dir / REQUEST_FILE).read_bytes(), REQUEST_FILE))


@dataclass
class Job:
    """One snapshot to release."""

    id: int
    epoch: int  # 1-based, as Keras shows epochs
    epochs: int | None  # how many the run was asked for
    state: str  # the snapshot's variable values (kgit.models.snapshot.State)
    metrics: dict[str, float] = field(default_factory=dict)
    monitor: str | None = None
    value: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Job:
        return cls(**bounded_yaml.load_json(line, "a training job"))

    def describe(self) -> str:
        """``epoch 7`` or ``epoch 7, val_accuracy 0.9310``."""
        shown = f"epoch {self.epoch}"
        if self.monitor is not None and self.value is not None:
            shown += f", {self.monitor} {self.value:.4g}"
        return shown


def new_run_dir(repo: Repo) -> Path:
    """A fresh folder for one training run under the clone's state folder (and what runs whose process
    is gone left there removed, but their logs)."""
    runs = clone_state.path(repo, clone_state.TRAINING)
    runs.mkdir(parents=True, exist_ok=True)
    for old in runs.iterdir():
        if old.is_dir() and not _alive(old.name):
            clear_run_dir(old, keep_log=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = runs / f"{stamp}-{os.getpid()}-{n}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise KgitError(f"cannot create a folder for this training run in {runs}: remove old runs there")


def _alive(run: str) -> bool:
    """Whether the process that made run folder ``run`` (``STAMP-PID-N``) may still be running."""
    parts = run.split("-")
    try:
        pid = int(parts[-2])
    except (IndexError, ValueError):
        return True  # not a run folder of kgit's making: leave it
    return running(pid)


def clear_run_dir(folder: Path, keep_log: bool) -> None:
    """Remove a run's folder; with ``keep_log``, all but its releaser's log (if it has one)."""
    if not keep_log or not (folder / LOG_FILE).exists():
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name != LOG_FILE:
            entry.unlink(missing_ok=True)


def metrics_from_logs(logs: Mapping[str, Any] | None, keys: Sequence[str] | None = None) -> dict[str, float]:
    """The numbers Keras logged at an epoch's end (``val_accuracy``, ``loss``...) as release metrics:
    finite numbers under valid metric names; the others (text, NaN) are left out. ``keys``: only these."""
    found: dict[str, float] = {}
    for key, value in (logs or {}).items():
        if keys is not None and key not in keys:
            continue
        if callable(getattr(value, "item", None)) and getattr(value, "size", None) == 1:
            value = value.item()  # a NumPy scalar
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        try:
            found[metrics_mod.check_key(str(key))] = float(value)
        except metrics_mod.MetricError:
            continue
    return found


def is_chief(model: Any) -> bool:
    """Whether this process releases: the chief of a ``tf.distribute`` strategy (the one its
    ``extended.should_checkpoint`` names; with TF_CONFIG alone, the chief or worker 0), or any
    process that trains alone."""
    strategy = getattr(model, "distribute_strategy", None)
    should = getattr(getattr(strategy, "extended", None), "should_checkpoint", None)
    if should is not None:
        return bool(should)
    try:
        config = bounded_yaml.load_json(os.environ.get("TF_CONFIG") or "{}", "TF_CONFIG")
    except KgitError:
        return True
    task = (config.get("task") or {}) if isinstance(config, dict) else {}
    kind, index = task.get("type"), task.get("index", 0)
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in (config.get("cluster") or {})


@dataclass
class Outcome:
    """What became of one snapshot (sent back by the releaser, one JSON line)."""

    id: int
    epoch: int
    ref: str | None = None  # name@version, when released
    tag: str | None = None
    commit: str | None = None
    stage: str | None = None  # the stage it was promoted to
    error: str | None = None  # why it was not released
    promote_error: str | None = None  # released, but the promotion was refused or failed
    metrics: dict[str, float] = field(default_factory=dict)
    monitor: str | None = None
    value: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Outcome:
        return cls(**bounded_yaml.load_json(line, "a release outcome"))


def release_job(request: TrainingRequest, job: Job, target: Repo, say: Callable[[str], None]) -> Outcome:
    """Release one snapshot into ``target`` (the user's work tree, or the training branch's) through
    ``releasing.release``, then promote it if asked (``stages.promote``, gates and all)."""
    from kgit.models import snapshot, usercode
    from kgit.workflow import releasing, stages

    outcome = Outcome(job.id, job.epoch, metrics=dict(job.metrics), monitor=job.monitor, value=job.value)
    options = dict(request.options)
    say(f"loading the snapshot of {job.describe()}")
    custom = usercode.load_custom_objects(options.get("custom_objects") or [])
    state = snapshot.State.read(Path(job.state))
    model = snapshot.restore(Path(request.run_dir) / BASE_DIR, state, custom, bool(options.get("unsafe")))
    of = f" of {job.epochs}" if job.epochs else ""
    note = (
        f"Released during training: epoch {job.epoch}{of}"
        + (f", {job.monitor} {job.value:.6g}" if job.monitor and job.value is not None else "")
        + "."
    )
    if request.source_note:
        note += " " + request.source_note
    options["notes"] = f"{options['notes']}\n\n{note}" if options.get("notes") else note
    record = releasing.release(model, request.name, **options, metrics=job.metrics, repo=target.root, progress=say)
    outcome.ref, outcome.tag, outcome.commit = f"{record.name}@{record.version}", record.tag, record.commit
    if request.promote_to:
        say(f"promoting {outcome.ref} to {request.promote_to}")
        try:
            change = stages.promote(target, record.name, record.version, request.promote_to, progress=say)
            outcome.stage = change.stage
        except KgitError as exc:  # a gate refused it (GateError), or the stage is not allowed...
            outcome.promote_error = str(exc)
    return outcome
