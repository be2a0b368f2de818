"""``ReleaseCallback``: release the best model seen during ``fit`` without holding training up.

In the training loop, an epoch that improves on the best (or every epoch, or the end of training)
costs a copy of the model's and the optimizer's variables (kgit.models.snapshot; the model itself is
saved once, at the first snapshot). A background process makes the releases, one at a time
(kgit.keras.background); at the end of training the callback waits for them and reports.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError, describe
from kgit.models.runtime import keras_module
from kgit.workflow.training import Job, Outcome, is_chief

EVERY = ("best", "epoch_end", "train_end")
MODES = ("auto", "max", "min")
PRIORITIES = ("idle", "low", "normal")
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "mape", "msle", "hinge", "crossentropy", "divergence", "perplexity")
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "score", "r2")


class TrainingReleaseError(KgitError):
    """A release from training (or its promotion) failed, and the callback was asked to raise."""


_keras = keras_module()


class ReleaseCallback(_keras.callbacks.Callback):  # type: ignore[name-defined]
    """Release the best model seen during ``fit`` as the next version of ``name``, in the background.

    ``monitor`` (a key of Keras' epoch logs, e.g. ``val_accuracy``) and ``mode`` (``max``, ``min``,
    or ``auto``: the direction in ``.kgit/gates.yaml``, else the metric's own, else from its name)
    say what "best" is. ``every``: ``best`` releases each epoch that improves on the best so far;
    ``epoch_end`` every epoch; ``train_end`` once, when training ends, the best epoch's model (the
    last model if ``monitor`` is None). One release is made at a time; a newer snapshot replaces
    one still waiting, so the best is always the last released.

    Each release goes through kgit's normal release path (validation in a fresh process, DVC, a
    commit and a tag), with the epoch's logs as its metrics (``metrics_from_logs``: True, False, or
    the keys to keep) and, with ``promote_to``, a promotion that the stage's gates may refuse.
    ``branch``: commit the releases on this branch, in a work tree of its own, leaving the user's
    work tree, index and branch alone. Failures are reported when training ends, not raised
    (``raise_on_error=True`` raises then); training is never stopped by a release.

    After ``fit``: ``releases`` (``["mnist@v3", ...]``), ``results`` (one
    kgit.workflow.training.Outcome per snapshot handed over), ``errors`` (one line each).
    Under a ``tf.distribute`` strategy only the chief releases. The other options are those of
    ``kgit.release``. ``priority``: the background process's CPU priority: ``"idle"`` (the default: it
    runs only when no other process wants the CPU; Linux's SCHED_IDLE, elsewhere the lowest nice),
    ``"low"`` (nice 10) or ``"normal"``.
    """

    def __init__(
        self,
        name: str,
        monitor: str | None = "val_accuracy",
        mode: str = "auto",
        every: str = "best",
        formats: Sequence[str] | str = ("savedmodel",),
        metrics_from_logs: bool | Sequence[str] = True,
        promote_to: str | None = None,
        branch: str | None = None,
        *,
        repo: str | Any = ".",
        raise_on_error: bool = False,
        bump: str | None = None,
        dataset_id: str | None = None,
        hyperparams: Mapping[str, Any] | None = None,
        notes: str | None = None,
        custom_objects: Sequence[Any] | Mapping[str, Any] | None = None,
        builder: Any = None,
        evaluate: Any = None,
        allow_dirty: bool = False,
        unsafe: bool = False,
        inference_only: bool = False,
        priority: str = "idle",
        verbose: int = 1,
    ) -> None:
        super().__init__()
        if every not in EVERY:
            raise KgitError(f"invalid every={every!r}: use one of {', '.join(EVERY)}")
        if mode not in MODES:
            raise KgitError(f"invalid mode={mode!r}: use one of {', '.join(MODES)}")
        if monitor is None and every == "best":
            raise KgitError("every='best' needs a monitor (e.g. monitor='val_accuracy'): or use every='epoch_end'")
        self.name, self.monitor, self.mode, self.every = name, monitor, mode, every
        self.metrics_from_logs = metrics_from_logs
        self.promote_to, self.branch, self.repo = promote_to, branch, repo
        if priority not in PRIORITIES:
            raise KgitError(f"invalid priority={priority!r}: use one of {', '.join(PRIORITIES)}")
        self.raise_on_error, self.priority, self.verbose = raise_on_error, priority, verbose
        self._release_options: dict[str, Any] = {
            "formats": formats,
            "bump": bump,
            "dataset_id": dataset_id,
            "hyperparams": hyperparams,
            "notes": notes,
            "custom_objects": custom_objects,
            "builder": builder,
            "evaluate": evaluate,
            "allow_dirty": allow_dirty,
            "unsafe": unsafe,
            "inference_only": inference_only,
        }
        # what a release would refuse is refused now, and again when training starts (the repository may
        # change meanwhile); this also imports what the callback needs outside of fit's time
        if is_chief(None):  # TF_CONFIG alone: another worker may have no copy of the repository
            self._check()
        self.best: float | None = None  # kept across calls of fit, as Keras' ModelCheckpoint keeps it
        self.releases: list[str] = []
        self.results: list[Outcome] = []
        self.errors: list[str] = []
        self._reset()

    def _reset(self) -> None:
        from kgit.keras.background import Releases

        self._chief = True
        self._direction = "max"
        self._releases: Releases | None = None
        self._options: dict[str, Any] = {}
        self._run_dir: Path | None = None
        self._has_base = False
        self._kept: tuple[Job, Any] | None = None
        self._off: str | None = None
        self._warned = False

    def _check(self) -> tuple[Any, dict[str, Any]]:
        """(the repository, the release options as the releases take them), or KgitError."""
        from kgit.models import model_source, snapshot  # noqa: F401  (imported now, used during fit)
        from kgit.registry import gates  # noqa: F401
        from kgit.registry.versions import check_stage
        from kgit.store.git_ops import Repo
        from kgit.workflow import releasing, training_branch

        git = Repo(self.repo)
        options = releasing.check_options(git.root, self.name, **self._release_options)
        if self.branch:
            training_branch.check_branch(git, self.branch)
        if self.promote_to:
            check_stage(self.promote_to)
        return git, options

    # -- Keras hooks ---------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._releases is not None:  # the last fit was interrupted: its releaser goes on alone
            self._releases.abandon()
        self._reset()
        self.releases, self.results, self.errors = [], [], []
        self._chief = is_chief(self.model)
        if self._chief:
            self._start()  # refuses now, before training, what a release would refuse later

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self._chief or self._releases is None or self._off:
            return
        try:
            self._epoch_end(epoch, dict(logs or {}))
        except Exception as exc:  # a release must never stop training
            self._turn_off(exc)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if not self._chief or self._releases is None:
            return
        if not self._off:
            try:
                if self._kept is not None:
                    self._releases.submit(*self._kept)
                elif self.every == "train_end" and self.monitor is None:
                    self._snapshot(None, dict(logs or {}), None, submit=True)
            except Exception as exc:
                self._turn_off(exc)
        self._kept = None
        outcomes = self._wait()
        self._report(outcomes)
        self._clean_up()
        if self.raise_on_error and self.errors:
            more = f" (and {len(self.errors) - 1} more: see the callback's errors)" if len(self.errors) > 1 else ""
            raise TrainingReleaseError(f"release from training: {self.errors[0]}{more}")

    # -- starting ------------------------------------------------------------------------------------
    def _start(self) -> None:
        from kgit.core.layout import ARTIFACTS_DIR
        from kgit.keras.background import Releases
        from kgit.workflow import training

        git, self._options = self._check()
        if self.monitor is not None and self.every != "epoch_end":
            self._direction = self._resolve_mode(git)
        head = git.head()
        dirty = git.dirty_paths(exclude_prefix=ARTIFACTS_DIR)
        source = f"Trained from commit {head[:12]}" if head else "Trained before any commit"
        if dirty:
            source += f", with uncommitted changes in {', '.join(dirty[:3])}" + (" and more" if len(dirty) > 3 else "")
        self._run_dir = training.new_run_dir(git)
        request = training.TrainingRequest(
            name=self.name,
            repo=str(git.root),
            run_dir=str(self._run_dir),
            options=self._options,
            branch=self.branch,
            start_commit=head,
            promote_to=self.promote_to,
            source_note=source + ".",
        )
        request.write()
        self._releases = Releases(request, self.priority)

    def _resolve_mode(self, git: Any) -> str:
        if self.mode != "auto":
            return self.mode
        from kgit.registry import gates

        assert self.monitor is not None
        recorded = gates.directions(git).get(self.monitor)
        if recorded:
            return recorded
        base = self.monitor.removeprefix("val_")
        found = _metric_direction(self.model, base)
        if found:
            return found
        lowered = base.lower()
        if any(word in lowered for word in _LOWER_IS_BETTER):
            return "min"
        if any(word in lowered for word in _HIGHER_IS_BETTER):
            return "max"
        raise KgitError(
            f"cannot tell whether a higher or a lower {self.monitor} is better: "
            "pass mode='max' or mode='min' to ReleaseCallback"
        )

    # -- during training -----------------------------------------------------------------------------
    def _epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = self._value(logs)
        if self.every == "epoch_end":
            self._snapshot(epoch, logs, value, submit=True)
            return
        if value is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"kgit ReleaseCallback: {self.monitor} is not in the epoch's logs "
                    f"(have: {', '.join(sorted(logs)) or 'nothing'}); nothing released for this epoch",
                    stacklevel=2,
                )
            return
        if self.best is not None and not (value > self.best if self._direction == "max" else value < self.best):
            return
        self.best = value
        self._snapshot(epoch, logs, value, submit=self.every == "best")

    def _value(self, logs: Mapping[str, Any]) -> float | None:
        if self.monitor is None or self.monitor not in logs:
            return None
        try:
            value = float(logs[self.monitor])
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def _snapshot(self, epoch: int | None, logs: Mapping[str, Any], value: float | None, *, submit: bool) -> None:
        from kgit.models import snapshot
        from kgit.workflow import training

        assert self._releases is not None and self._run_dir is not None
        if not self._has_base:
            state = self._write_base()
        else:
            state = snapshot.take(self.model)
        done = epoch + 1 if epoch is not None else int(self.params.get("epochs") or 0)
        keys = None if self.metrics_from_logs is True else list(self.metrics_from_logs or [])
        ident = self._releases.next_id()
        job = Job(
            id=ident,
            epoch=done,
            epochs=self.params.get("epochs"),
            state=str(self._run_dir / f"snapshot-{ident:04d}-epoch-{done}.npz"),
            metrics=training.metrics_from_logs(logs, keys),
            monitor=self.monitor,
            value=value,
        )
        if submit:
            self._releases.submit(job, state)
        else:
            self._kept = (job, state)

    def _write_base(self) -> Any:
        """The first snapshot: refuse a model no other process can rebuild, then save it once."""
        from kgit.models import model_source, snapshot, usercode
        from kgit.workflow.training import BASE_DIR

        assert self._run_dir is not None
        custom = usercode.load_custom_objects(self._options.get("custom_objects") or [])
        model_source.inspect_custom_objects(self.model, custom, bool(self._options.get("unsafe")))
        state = snapshot.write_base(self.model, self._run_dir / BASE_DIR)
        self._has_base = True
        return state

    def _turn_off(self, exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, KgitError) else describe(exc)
        self._off = reason
        self.errors.append(f"no more releases from this run: {reason}")
        if self.verbose:
            print(f"\nkgit: no more releases from this training run: {reason}", file=sys.stderr, flush=True)

    # -- at the end ----------------------------------------------------------------------------------
    def _wait(self) -> list[Outcome]:
        from kgit.core import progress

        releases = self._releases
        assert releases is not None
        waiting = releases.waiting
        live = self.verbose and waiting and progress.wanted()
        if self.verbose and waiting and not live:
            print(
                f"kgit: waiting for {waiting} background release{'s' if waiting > 1 else ''} (log: {releases.log})",
                file=sys.stderr,
                flush=True,
            )

        def tick(seconds: float) -> None:
            job = releases.active
            if job is None:
                return
            step = releases.step or "starting"
            sys.stderr.write(f"\r\033[Kkgit: releasing {job.describe()}: {step} ({seconds:.0f} s)")
            sys.stderr.flush()

        outcomes = releases.finish(tick if live else None)
        if live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        return outcomes

    def _report(self, outcomes: list[Outcome]) -> None:
        releases = self._releases
        assert releases is not None
        self.results = outcomes
        lines = []
        for o in outcomes:
            shown = f"epoch {o.epoch}" + (f", {o.monitor} {o.value:.4g}" if o.monitor and o.value is not None else "")
            if o.ref:
                self.releases.append(o.ref)
                line = f"released {o.ref} ({shown})"
                if o.stage:
                    line += f", promoted to {o.stage}"
                if o.promote_error:
                    line += f"; not promoted to {self.promote_to}: {o.promote_error}"
                    self.errors.append(f"{o.ref} not promoted to {self.promote_to}: {o.promote_error}")
            else:
                line = f"the release of {shown} failed: {o.error}"
                self.errors.append(f"{shown}: {o.error}")
            lines.append(line)
        if releases.superseded:
            epochs = ", ".join(str(j.epoch) for j in releases.superseded)
            why = (
                "a better epoch came before their release began"
                if self.every == "best"
                else "a newer snapshot replaced them before their release began"
            )
            lines.append(f"not released: epoch{'s' if len(releases.superseded) > 1 else ''} {epochs} ({why})")
        lines += releases.notes
        if not outcomes and not self._off:
            lines.append(
                f"nothing released: {self.monitor} was never in the epoch's logs"
                if self.monitor and self._warned
                else "nothing released"
            )
        if self.verbose:
            for line in lines:
                print(f"kgit: {line}", file=sys.stderr)
            sys.stderr.flush()

    def _clean_up(self) -> None:
        """Remove the run's folder; keep only its log when something failed."""
        from kgit.workflow.training import clear_run_dir

        if self._run_dir is not None:
            clear_run_dir(self._run_dir, keep_log=bool(self.errors))


def _metric_direction(model: Any, name: str) -> str | None:
    """``max``/``min`` as the compiled metric called ``name`` says (Keras metrics carry a direction)."""
    stack = list(getattr(model, "metrics", None) or [])
    while stack:
        metric = stack.pop()
        if getattr(metric, "name", None) == name and getattr(metric, "_direction", None) in ("up", "down"):
            return "max" if metric._direction == "up" else "min"
        stack.extend(getattr(metric, "metrics", None) or [])
    return None
