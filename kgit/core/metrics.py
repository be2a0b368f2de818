"""A release's metrics: how good the model is, as flat dotted keys and finite numbers.

Metrics come from a file (``--metrics``: JSON or YAML, nested allowed, such as a DVC metrics file or
dvclive's ``metrics.json``), from ``--metric KEY=VALUE``, from ``metrics=`` in Python, or from the
``--evaluate`` function run on the model reloaded from the artifact. Nested keys are joined with
dots, as ``dvc metrics show`` prints them (``{"val": {"accuracy": 0.9}}`` -> ``val.accuracy``).

They are recorded in ``metadata.json`` and in the release tag's one-line summary, so ``kgit list``
reads them from git alone: the limits below keep that summary small.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kgit.core.errors import KgitError, did_you_mean

MAX_METRICS = 100  # per release
MAX_KEY_LENGTH = 100
MAX_FILE_BYTES = 1_000_000
# a key: dot-separated parts of letters, digits, '_', '-', '/' (dvclive's "train/loss"), no spaces,
# nothing a rule like "val.loss<=0.3" or a --metric KEY=VALUE could read as an operator
_PART = r"[A-Za-z0-9_][A-Za-z0-9_\-/]*"
KEY_RE = re.compile(rf"^{_PART}(\.{_PART})*$")


class _HasMetrics(Protocol):
    @property
    def metrics(self) -> dict[str, float]: ...


_T = TypeVar("_T", bound=_HasMetrics)


class MetricError(KgitError):
    """A metric that is not a finite number, or whose key kgit cannot record."""


def check_key(key: object, where: str = "metric") -> str:
    if not isinstance(key, str) or not KEY_RE.match(key) or len(key) > MAX_KEY_LENGTH:
        shown = str(key)[:60]
        raise MetricError(
            f"{where} key {shown!r} is not a valid metric name: use letters, digits, '_', '-', '/', "
            f"parts joined by dots (val.accuracy), at most {MAX_KEY_LENGTH} characters"
        )
    return key


def check_known(key: str, known: Iterable[str], where: str, among: str) -> str:
    """``key`` if it is one of ``known`` (the metrics of the releases ``among`` names), else a
    MetricError suggesting the key that was probably meant."""
    check_key(key, where)
    have = sorted(set(known))
    if key in have:
        return key
    shown = ", ".join(have[:8]) + (", ..." if len(have) > 8 else "")
    raise MetricError(
        f"{where}: no metric {key!r} in {among}: "
        + did_you_mean(key, have, f"they have {shown}" if have else "they record no metrics")
    )


def number(value: object, key: str, where: str = "metric") -> float:
    """``value`` as a finite float; numbers only (a bool, string or list is refused, as is NaN/inf)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = type(value).__name__
        raise MetricError(
            f"{where} {key} is {_shown(value)} ({kind}), not a number: metrics must be numbers "
            "(move text and lists to --param or --note)"
        )
    result = float(value)
    if not math.isfinite(result):
        raise MetricError(f"{where} {key} is {result}, not a finite number: record only finite metrics")
    return result


def _scalar(value: Any) -> Any:
    """A NumPy/TensorFlow scalar (0-d array, one-element tensor) as a Python number; else as it is."""
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    if getattr(value, "size", None) == 1 and callable(getattr(value, "item", None)):
        value = value.item()
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def flatten(data: Any, where: str = "metrics", *, scalars: bool = False) -> dict[str, float]:
    """Nested mappings of numbers -> {dotted key: float}. Refuses anything else, naming the key.
    With ``scalars`` (what an --evaluate function returns), NumPy and TensorFlow scalars count too."""
    if not isinstance(data, Mapping):
        raise MetricError(f"{where} must be a mapping of metric names to numbers, not {type(data).__name__}")
    out: dict[str, float] = {}
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        prefix, value, depth = stack.pop()
        if isinstance(value, Mapping):
            if depth > 16:
                raise MetricError(f"{where}: {prefix} is nested too deeply (more than 16 levels)")
            if not value and prefix:
                raise MetricError(f"{where}: {prefix} is empty, not a number")
            for k, v in reversed(list(value.items())):
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise MetricError(f"{where}: key {_shown(k)} under {prefix or 'the top level'} is not a name")
                stack.append((f"{prefix}.{k}" if prefix else str(k), v, depth + 1))
            continue
        key = check_key(prefix, where)
        if scalars:
            value = _scalar(value)
        if key in out:
            raise MetricError(f"{where}: {key} is given twice (once nested, once with dots): keep one")
        out[key] = number(value, key, where)
        if len(out) > MAX_METRICS:
            raise MetricError(
                f"{where} holds more than {MAX_METRICS} metrics: record the ones you compare "
                "releases on (they travel in every release tag)"
            )
    return out


def parse_assignments(items: Iterable[str]) -> dict[str, float]:
    """``--metric KEY=VALUE`` options -> {key: float}."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MetricError(f"invalid --metric {item!r}: use KEY=NUMBER (e.g. val.accuracy=0.93)")
        check_key(key, "--metric")
        try:
            parsed = float(value.strip())
        except ValueError:
            raise MetricError(f"--metric {key} is {value.strip()[:40]!r}, not a number: use KEY=NUMBER") from None
        out[key] = number(parsed, key, "--metric")
    return out


def read_file(path: Path) -> dict[str, float]:
    """The metrics in a JSON or YAML file (nested keys joined with dots)."""
    from kgit.core import bounded_yaml

    where = f"--metrics {path}"
    try:
        raw = bounded_yaml.read_bytes(path, where, max_bytes=MAX_FILE_BYTES)
    except KgitError as exc:
        raise MetricError(str(exc)) from None
    try:  # JSON first: it is what metrics files mostly are, and it spells NaN as DVC and dvclive write it
        data = bounded_yaml.load_json(raw, where, max_bytes=MAX_FILE_BYTES)
    except bounded_yaml.TooDeep as exc:
        raise MetricError(str(exc)) from None
    except KgitError:  # not JSON (or too large: the YAML reader says so)
        data = None
    if data is None:
        data = bounded_yaml.load(raw, where, max_bytes=MAX_FILE_BYTES)
    if data is None:
        raise MetricError(f"{where} is empty: it must map metric names to numbers")
    return flatten(data, where)


def combine(*sources: Mapping[str, float]) -> dict[str, float]:
    """Several sources of metrics merged; later ones win (``--metric`` over ``--metrics FILE``)."""
    out: dict[str, float] = {}
    for source in sources:
        out.update(source)
    if len(out) > MAX_METRICS:
        raise MetricError(f"more than {MAX_METRICS} metrics: record the ones you compare releases on")
    return out


def from_summary(value: Any, measured: Any) -> tuple[dict[str, float], tuple[str, ...], str | None]:
    """(metrics, measured keys, what is malformed or None) from a release tag's summary, which anyone
    could have written: a malformed entry makes the release invalid and gives no metrics."""
    if value is None and measured is None:
        return {}, (), None
    try:
        if not isinstance(value, dict) or len(value) > MAX_METRICS:
            raise MetricError("not an object of at most 100 metrics")
        metrics = {check_key(k): number(v, str(k)) for k, v in value.items()}
        if measured is None:
            measured = []
        if not isinstance(measured, list) or any(not isinstance(m, str) or m not in metrics for m in measured):
            raise MetricError("its measured keys are not metrics of the release")
    except MetricError:
        return {}, (), "its message's metrics are malformed"
    return metrics, tuple(dict.fromkeys(measured)), None


# the last part of a key that names an error of some kind: lower is better
LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse")
_LOWER_RE = re.compile(
    rf"(^|[_\-/])({'|'.join(LOWER_IS_BETTER)})$|[a-z0-9]({'|'.join(w.capitalize() for w in LOWER_IS_BETTER)})$"
)


def default_direction(key: str) -> str:
    """Which way is better for ``key`` when nothing declares it: "min" (lower is better) when the
    key's last part is, or ends in, loss, error, mae, mse or rmse as a word of its own (``val.loss``,
    ``val_loss``, ``train/loss``, ``valLoss``, ``holdout.mae``); "max" for every other key."""
    last = key.rsplit(".", 1)[-1]
    return "min" if _LOWER_RE.search(last) or last.lower() in LOWER_IS_BETTER else "max"


def direction(key: str, declared: Mapping[str, str]) -> str:
    """The direction ``declared`` (``.kgit/gates.yaml``'s ``metrics:``) gives ``key``, else its default."""
    return declared.get(key) or default_direction(key)


def is_better(new: float, old: float, direction: str) -> bool:
    """Strictly better in ``direction`` ("max": higher is better, "min": lower is better)."""
    return new < old if direction == "min" else new > old


def sort_releases(releases: Sequence[_T], key: str, direction: str = "max") -> list[_T]:
    """Best first by metric ``key`` in ``direction``; releases without it keep their order, last."""
    have = [r for r in releases if key in r.metrics]
    have.sort(key=lambda r: r.metrics[key], reverse=direction != "min")
    return have + [r for r in releases if key not in r.metrics]


def delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a
