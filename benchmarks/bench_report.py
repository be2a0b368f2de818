"""``kgit report`` on the repository with --list-versions releases (git alone: tags, ``.dvc`` files),
against ``kgit list`` on the same repository; and the report's read of every version's metadata in
one ``git cat-file --batch`` against one ``git show`` per version."""

from __future__ import annotations

import resource
import shutil
import time

from bench_fixtures import MODEL, Fixtures
from bench_util import (
    KGIT,
    Row,
    baseline,
    run,
    timed,
    timed_interleaved,
    timing_baseline,
    timing_row,
    verdict,
)

TARGET = 5.0  # seconds: "1,500 versions render in a few seconds"


def bench(fx: Fixtures, runs: int) -> list[Row]:
    from kgit.registry import catalog
    from kgit.store.git_ops import Repo

    repo = fx.listing()
    fixture = f"{fx.list_versions:,} versions"
    out = fx.base / "report-site"
    t = timed_interleaved(
        runs,
        {"list": lambda: run([KGIT, "list"], repo), "report": lambda: run([KGIT, "report", "--out", str(out)], repo)},
    )
    pages = sum(1 for _ in (out / "models" / MODEL).iterdir())
    # CPU time too: on a shared machine the wall time mostly measures the other processes
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run([KGIT, "report", "--out", str(out)], repo)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    shutil.rmtree(out, ignore_errors=True)
    base = timing_baseline("`kgit list`", fixture, t["list"])
    rows = [
        base,
        timing_row(
            f"`kgit report` ({pages:,} version pages, {size:.0f} MB)",
            fixture,
            t["report"],
            base,
            verdict(t["report"].median < TARGET, f"< {TARGET:g} s"),
        ),
        Row(
            "`kgit report`: CPU time (user + sys), one run",
            fixture,
            cpu,
            "s",
            runs=1,
            target=verdict(cpu < TARGET, f"< {TARGET:g} s"),
        ),
    ]

    git = Repo(repo)
    rels = catalog.releases(git, MODEL)

    def one_by_one() -> float:
        t0 = time.perf_counter()
        for rel in rels:
            catalog.release_problems(git, rel)
            catalog.metadata(git, rel)
        return time.perf_counter() - t0

    def batch() -> float:
        t0 = time.perf_counter()
        texts = git.show_files([(r.commit, r.dvc_file(f)) for r in rels for f in r.formats])
        for rel in rels:
            catalog.checked_metadata(git, rel, texts)
        return time.perf_counter() - t0

    slow = timed(min(runs, 3), one_by_one)
    fast = timed(runs, batch)
    base = baseline("check and read every version's `.dvc` file, `git show` each", fixture, slow.median, runs=slow.runs)
    rows += [base, timing_row("the same, one `git cat-file --batch`, each parsed once", fixture, fast, base)]
    return rows
