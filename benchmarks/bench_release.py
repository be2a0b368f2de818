"""``kgit.release`` of a ~100 MB model against the same steps done by hand (release_worker.py), each
run in a fresh process on a fresh copy of an empty kgit repository; and where kgit's time goes."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from bench_fixtures import LARGE, Fixtures, describe
from bench_util import (
    MB,
    Row,
    Usage,
    baseline,
    log,
    measure_usage,
    remove,
    timed_interleaved,
    timing_baseline,
    timing_row,
    verdict,
)

NAME = "release"
WORKER = Path(__file__).resolve().parent / "release_worker.py"
TARGET = 1.10  # kgit within 10% of the manual sequence

KGIT_PHASES = [
    ("prepare", "checks, signature, reference outputs, version"),
    ("save", "model.save, reference files, metadata"),
    ("model.save", "part of save"),
    ("hash", "sha256 of every file"),
    ("validate", "fresh-process reload, compare"),
    ("dvc add", "with .dvc metadata, dvc.yaml"),
    ("git", "add, commit, tag, records"),
]
MANUAL_PHASES = ["save", "validate", "dvc add", "git"]


def bench(fx: Fixtures, runs: int) -> list[Row]:
    fx.empty()
    fixture = describe(LARGE) + ", keras"
    phases: dict[str, list[dict[str, float]]] = {"kgit": [], "manual": []}
    usage: dict[str, list[Usage]] = {"kgit": [], "manual": []}
    count = [0]

    def one(mode: str) -> float:
        count[0] += 1
        repo = fx.copy_of_empty(f"release-{mode}-{count[0]}")
        result = repo.parent / f"release-{mode}-{count[0]}.json"
        usage[mode].append(measure_usage([sys.executable, str(WORKER), mode, str(repo), str(result)], repo.parent))
        data = json.loads(result.read_text())
        remove(repo)
        phases[mode].append(data["phases"])
        log(f"release ({mode}): {data['total']:.2f}s")
        return float(data["total"])

    t = timed_interleaved(
        runs, {"manual": lambda: one("manual"), "kgit": lambda: one("kgit")}, warmup=False, cap_slow=False
    )
    base = timing_baseline("release by hand (save, metadata, fresh-process check, dvc add, git)", fixture, t["manual"])
    ratio = t["kgit"].median / t["manual"].median
    rows = [
        base,
        timing_row(
            "`kgit.release(model, ...)`", fixture, t["kgit"], base, verdict(ratio <= TARGET, f"<= {TARGET:.2f}x")
        ),
    ]
    manual = {p: statistics.median(r[p] for r in phases["manual"]) for p in MANUAL_PHASES}
    for phase, what in KGIT_PHASES:
        value = statistics.median(r.get(phase, 0.0) for r in phases["kgit"])
        row = Row(f"  kgit phase: {phase} ({what})", fixture, value, runs=len(phases["kgit"]))
        if phase in manual:
            row.compared_to(Row("", "", manual[phase]))
        rows.append(row)
    for phase in MANUAL_PHASES:
        rows.append(Row(f"  by hand phase: {phase}", fixture, manual[phase], runs=len(phases["manual"])))
    # the whole process: Python, TensorFlow, building the model, then the release (and its children)
    peaks = {m: statistics.median(u.tree_peak for u in usage[m]) / MB for m in usage}
    base_mem = baseline(
        "peak RSS, release by hand (process tree, model built in it)",
        fixture,
        peaks["manual"],
        "MB",
        len(usage["manual"]),
    )
    rows += [
        base_mem,
        Row(
            "peak RSS, `kgit.release` (process tree, model built in it)",
            fixture,
            peaks["kgit"],
            "MB",
            runs=len(usage["kgit"]),
        ).compared_to(base_mem),
    ]
    return rows
