"""Start-up and git-only reads: ``kgit --help``, ``kgit list``, ``kgit show``, against GTO's ``gto show``
on the same repository (GTO reads the same release tags)."""

from __future__ import annotations

from bench_fixtures import MODEL, Fixtures
from bench_util import (
    GTO,
    KGIT,
    Row,
    run,
    timed,
    timed_interleaved,
    timing_baseline,
    timing_row,
    verdict,
)

NAME = "startup"
TARGET = 0.5  # seconds


def _target(seconds: float) -> str:
    return verdict(seconds < TARGET, f"< {TARGET} s")


def bench(fx: Fixtures, runs: int) -> list[Row]:
    rows: list[Row] = []
    empty = fx.empty()
    pairs = [
        ("gto --help", [GTO, "--help"], "kgit --help", [KGIT, "--help"]),
        ("gto show", [GTO, "show"], "kgit list", [KGIT, "list"]),
    ]
    for base_name, base_cmd, name, cmd in pairs:
        t = timed_interleaved(runs, {"base": lambda c=base_cmd: run(c, empty), "kgit": lambda c=cmd: run(c, empty)})
        base = timing_baseline(f"`{base_name}`", "empty repo", t["base"])
        rows += [base, timing_row(f"`{name}`", "empty repo", t["kgit"], base, _target(t["kgit"].median))]

    repo = fx.listing()
    fixture = f"{fx.list_versions:,} versions"
    mid = f"v{fx.list_versions // 2}"
    gto_ref = f"{MODEL}@{mid}.0.0"
    # GTO takes many seconds here: its runs are capped (see bench_util.SLOW), kgit's are not
    gto_show = timed(runs, lambda: run([GTO, "show"], repo))
    gto_one = timed(runs, lambda: run([GTO, "show", gto_ref], repo))
    t = timed_interleaved(
        runs,
        {
            "list": lambda: run([KGIT, "list"], repo),
            "json": lambda: run([KGIT, "list", "--json"], repo),
            "show": lambda: run([KGIT, "show", f"{MODEL}@{mid}"], repo),
        },
    )
    base = timing_baseline("`gto show`", fixture, gto_show)
    rows += [
        base,
        timing_row("`kgit list`", fixture, t["list"], base, _target(t["list"].median)),
        timing_row("`kgit list --json`", fixture, t["json"], base, _target(t["json"].median)),
    ]
    base = timing_baseline(f"`gto show {gto_ref}`", fixture, gto_one)
    rows += [base, timing_row(f"`kgit show {MODEL}@{mid}`", fixture, t["show"], base, _target(t["show"].median))]
    return rows
