"""Whole processes, a model in a ``.keras`` file: ``kgit release NAME --from FILE -f keras`` against
the same release by hand (by_hand_release.py: load, save, reference outputs, metadata, reload in a
fresh process and compare, dvc add, git), each on a fresh copy of an empty kgit repository, run in
turns. Wall time, CPU time (the process and its children) and peak RSS; then where each side's
time goes (release_worker.py ``kgit-file``, the same release through the Python API, for its marks).

The kgit measured is the one of this checkout (PYTHONPATH), unless PYTHONPATH is already set: that
is how the figures before a change are taken from an exported copy of the earlier tree.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from bench_fixtures import LARGE, Fixtures, describe
from bench_util import KGIT, MB, Row, Usage, baseline, log, measure_usage, remove, tool_env, verdict

HERE = Path(__file__).resolve().parent
BY_HAND = HERE / "by_hand_release.py"
WORKER = HERE / "release_worker.py"
TARGET = 1.10
NAME = "big"


def env() -> dict[str, str]:
    return tool_env(PYTHONPATH=os.environ.get("PYTHONPATH") or str(HERE.parent))


def compare(fx: Fixtures, source: Path, fixture: str, runs: int, label: str) -> list[Row]:
    """``runs`` rounds of (by hand, kgit release) on fresh copies of the empty repository."""
    count = [0]
    usage: dict[str, list[Usage]] = {"hand": [], "kgit": []}

    def one(mode: str) -> None:
        count[0] += 1
        repo = fx.copy_of_empty(f"{label}-{mode}-{count[0]}")
        cmd = (
            [sys.executable, str(BY_HAND), str(source), str(repo), NAME]
            if mode == "hand"
            else [KGIT, "release", NAME, "--from", str(source), "-f", "keras"]
        )
        u = measure_usage(cmd, repo, env())
        usage[mode].append(u)
        remove(repo)
        log(f"{label} ({mode}): {u.seconds:.2f}s wall, {u.cpu:.2f}s CPU, {u.tree_peak / MB:,.0f} MB tree peak")

    for _ in range(runs):
        one("hand")
        one("kgit")

    def med(mode: str, attr: str) -> float:
        return statistics.median(getattr(u, attr) for u in usage[mode])

    ratio = med("kgit", "seconds") / med("hand", "seconds")
    base = baseline(
        "by hand, one process (load, save, reference, metadata, fresh-process check, dvc add, git)",
        fixture,
        med("hand", "seconds"),
        "s",
        runs,
    )
    rows = [
        base,
        Row(
            f"`kgit release {NAME} --from FILE -f keras`",
            fixture,
            med("kgit", "seconds"),
            "s",
            runs=runs,
            target=verdict(ratio <= TARGET, f"<= {TARGET:.2f}x"),
        ).compared_to(base),
    ]
    cpu = baseline("CPU time by hand (process and children)", fixture, med("hand", "cpu"), "s", runs)
    rows += [cpu, Row("CPU time `kgit release`", fixture, med("kgit", "cpu"), "s", runs=runs).compared_to(cpu)]
    for attr, what in (("tree_peak", "whole process tree"), ("max_rss", "largest process")):
        b = baseline(f"peak RSS by hand, {what}", fixture, med("hand", attr) / MB, "MB", runs)
        rows += [
            b,
            Row(f"peak RSS `kgit release`, {what}", fixture, med("kgit", attr) / MB, "MB", runs=runs).compared_to(b),
        ]
    return rows


def breakdown(fx: Fixtures, source: Path, fixture: str, runs: int, label: str) -> list[Row]:
    """Median seconds per step on each side, from process start."""
    found: dict[str, list[dict[str, float]]] = {"hand": [], "kgit": []}
    for i in range(runs):
        for mode in ("hand", "kgit"):
            repo = fx.copy_of_empty(f"{label}-steps-{mode}-{i}")
            result = repo.parent / f"{label}-steps-{mode}-{i}.json"
            cmd = (
                [sys.executable, str(BY_HAND), str(source), str(repo), NAME, str(result)]
                if mode == "hand"
                else [sys.executable, str(WORKER), "kgit-file", str(repo), str(result), str(source)]
            )
            measure_usage(cmd, repo, env())
            found[mode].append(json.loads(result.read_text())["phases"])
            remove(repo)
    rows = []
    for mode, who in (("hand", "by hand"), ("kgit", "kgit")):
        for phase in found[mode][0]:
            value = statistics.median(r.get(phase, 0.0) for r in found[mode])
            rows.append(Row(f"  {who} step: {phase}", fixture, value, runs=len(found[mode])))
    return rows


def bench(fx: Fixtures, runs: int) -> list[Row]:
    source = fx.large_model_file()
    fixture = describe(LARGE) + " (.keras file)"
    return compare(fx, source, fixture, runs, "release-file") + breakdown(
        fx, source, fixture, max(1, runs // 2), "release-file"
    )


# ~1 GB of weights: 16000 inputs -> 16000 outputs, 256,016,000 float32 parameters
HUGE = (16000, 16000)


def large(fx: Fixtures, runs: int) -> list[Row]:
    """The ~1 GB model (on demand: ``--only large``); built and saved in a process of its own so
    that this one stays small."""
    source = fx.base / "huge.keras"
    if not source.exists():
        log(f"building a {describe(HUGE)} (.keras)")
        code = f"from bench_fixtures import dense_model; dense_model(*{HUGE!r}).save({str(source)!r})"
        measure_usage(
            [sys.executable, "-c", code], fx.base, tool_env(PYTHONPATH=f"{HERE}{os.pathsep}{env()['PYTHONPATH']}")
        )
    fixture = describe(HUGE) + f" (.keras file, {source.stat().st_size / MB:,.0f} MB)"
    return compare(fx, source, fixture, runs, "release-huge") + breakdown(fx, source, fixture, 1, "release-huge")
