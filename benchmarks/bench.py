"""kgit benchmarks: medians of several runs, each next to what a user would run instead.

    .venv/bin/python benchmarks/bench.py                  # every group
    .venv/bin/python benchmarks/bench.py --only release   # one group (repeatable)
    .venv/bin/python benchmarks/bench.py --runs 7

Groups:
  startup  `kgit --help`, `kgit list` (empty repo); `kgit list`, `kgit show` with --list-versions
           releases; against `gto` on the same repositories
  release  `kgit.release` of a ~100 MB model against the same steps by hand, and kgit's phases
  hooks    the pre-push hook with --versions releases and nothing new, against `dvc push`
  push     the pre-push hook after one new release, against `kgit validate --recheck` of it
  get      `kgit get NAME@VERSION` on a fresh clone against `dvc pull`: time and bytes fetched
  memory   peak memory of `kgit release` and `kgit validate --recheck` of the ~100 MB model
  report   `kgit report` with --list-versions releases, against `kgit list`; metadata read in one
           `git cat-file --batch` against one `git show` per version
  tags15k  --tag-versions release tags (15,000): list, list --json, show and resolve one version, the
           pre-push hook with nothing new, the server hook for a plain push; wall and CPU time
  release-file  whole processes: `kgit release --from FILE.keras` of the ~100 MB model against the
           same release by hand (time, CPU, peak RSS, steps)
  large    (on demand only: --only large) the same with a ~1 GB model

Builds its own fixtures in a temp folder (real git, real DVC, real Keras models), prints progress
on stderr and one table on stdout. Timings only: no pass/fail here (the machine may be shared and
noisy); the target column says where a figure stands against kgit's stated targets.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_get  # noqa: E402
import bench_hooks  # noqa: E402
import bench_memory  # noqa: E402
import bench_release  # noqa: E402
import bench_release_file  # noqa: E402
import bench_report  # noqa: E402
import bench_startup  # noqa: E402
import bench_tags  # noqa: E402
from bench_fixtures import Fixtures  # noqa: E402
from bench_util import Row, log  # noqa: E402

GROUPS: dict[str, Callable[[Fixtures, int], list[Row]]] = {
    "startup": bench_startup.bench,
    "release": bench_release.bench,
    "hooks": bench_hooks.nothing_new,
    "push": bench_hooks.one_new,  # after "hooks": it adds a release to the same repository
    "get": bench_get.bench,
    "memory": bench_memory.bench,
    "report": bench_report.bench,
    "tags15k": bench_tags.bench,
    "release-file": bench_release_file.bench,
}
ON_DEMAND: dict[str, Callable[[Fixtures, int], list[Row]]] = {"large": bench_release_file.large}


def _value(row: Row) -> str:
    return f"{row.value:.3f} s" if row.unit == "s" else f"{row.value:,.2f} {row.unit}"


def _ratio(row: Row) -> str:
    if row.baseline:
        return "baseline"
    return "" if row.ratio is None else f"{row.ratio:.2f}x"


def render(results: list[tuple[str, list[Row]]], runs: int, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"kgit benchmarks (median of {runs} runs unless the runs column says otherwise; "
        f"whole run {elapsed / 60:.1f} min)"
    )
    for col, justify in (
        ("group", "left"),
        ("measurement", "left"),
        ("fixture", "left"),
        ("median", "right"),
        ("runs", "right"),
        ("ratio", "right"),
        ("target", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for i, (group, rows) in enumerate(results):
        if i:
            table.add_section()
        for row in rows:
            runs_cell = "" if row.runs is None or row.runs == runs else str(row.runs)
            table.add_row(group, row.measurement, row.fixture, _value(row), runs_cell, _ratio(row), row.target)
    Console(width=max(200, Console().width)).print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        action="append",
        choices=[*GROUPS, *ON_DEMAND],
        metavar="NAME",
        help=f"run only this group (repeatable): {', '.join([*GROUPS, *ON_DEMAND])}",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement; the median is reported")
    parser.add_argument("--versions", type=int, default=100, help="released versions in the hooks/push repository")
    parser.add_argument("--list-versions", type=int, default=1500, help="released versions in the list/show repository")
    parser.add_argument("--tag-versions", type=int, default=15000, help="release tags in the tags15k repository")
    parser.add_argument(
        "--get-versions", type=int, default=10, help="versions of the ~5 MB model in the get repository"
    )
    parser.add_argument("--keep", action="store_true", help="keep the fixtures' temp folder (its path is printed)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    selected = [g for g in [*GROUPS, *ON_DEMAND] if (not args.only and g in GROUPS) or g in (args.only or [])]
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="kgit-bench-")
    log(f"fixtures in {tmp}")
    results: list[tuple[str, list[Row]]] = []
    failed = []
    fx = Fixtures(Path(tmp), args.versions, args.list_versions, args.get_versions, args.tag_versions)
    try:
        for group in selected:
            log(f"group {group}")
            try:
                results.append((group, {**GROUPS, **ON_DEMAND}[group](fx, args.runs)))
            except (SystemExit, Exception) as exc:  # report it, go on with the other groups
                failed.append(group)
                detail = "".join(traceback.format_exception(exc)) if isinstance(exc, Exception) else str(exc)
                log(f"group {group} FAILED: {detail}")
    finally:
        if args.keep:
            log(f"kept the fixtures in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    render(results, args.runs, time.perf_counter() - started)
    if failed:
        log(f"failed groups: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
