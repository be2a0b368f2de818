"""Fetching one version on a fresh clone: ``kgit get NAME@VERSION`` against ``dvc pull`` of everything
(and ``dvc pull`` of that version's ``.dvc`` file): time, and bytes fetched (the clone's DVC cache
afterwards). Each run clones the origin again (untimed)."""

from __future__ import annotations

from bench_fixtures import MEDIUM, MODEL, Fixtures, describe
from bench_util import (
    DVC,
    KGIT,
    MB,
    Row,
    baseline,
    git,
    remove,
    run,
    timed_interleaved,
    timing_baseline,
    timing_row,
    tree_bytes,
    verdict,
)

NAME = "get"


def bench(fx: Fixtures, runs: int) -> list[Row]:
    from kgit.registry import catalog
    from kgit.store.git_ops import Repo

    origin, source = fx.fetching()
    releases = catalog.releases(Repo(source), MODEL)
    rel = releases[len(releases) // 2]
    ref = f"{MODEL}@{rel.version}"
    info = rel.formats["keras"]
    size = int(info["size"])
    everything = sum(int(r.formats["keras"]["size"]) for r in releases)
    fixture = f"fresh clone, {len(releases)} versions of a {describe(MEDIUM)}"
    fetched: dict[str, list[int]] = {"pull": [], "get": [], "pull-one": []}
    count = [0]

    def one(kind: str, cmd: list[str]) -> float:
        count[0] += 1
        clone = fx.base / f"clone-{count[0]}"
        git(fx.base, "clone", "-q", str(origin), str(clone))
        seconds = run(cmd, clone)
        fetched[kind].append(tree_bytes(clone / ".dvc" / "cache"))
        remove(clone)
        return seconds

    t = timed_interleaved(
        runs,
        {
            "pull": lambda: one("pull", [DVC, "pull", "-q"]),
            "get": lambda: one("get", [KGIT, "get", ref]),
            "pull-one": lambda: one("pull-one", [DVC, "pull", "-q", f"{info['path']}.dvc"]),
        },
    )
    base = timing_baseline("`dvc pull` (everything)", fixture, t["pull"])
    rows = [
        base,
        timing_row(f"`kgit get {ref}`", fixture, t["get"], base),
        timing_row(f"`dvc pull {info['path']}.dvc`", fixture, t["pull-one"], base),
    ]
    # bytes are the same at every run; the last run's are shown (the fetched folders are checked below)
    got = {k: v[-1] for k, v in fetched.items()}
    if len({*fetched["get"]}) != 1 or len({*fetched["pull"]}) != 1:
        raise SystemExit(f"bytes fetched differ between runs: {fetched}")
    base_bytes = baseline(
        "bytes fetched by `dvc pull` (everything)",
        f"all {len(releases)} versions: {everything / MB:.1f} MB",
        got["pull"] / MB,
        "MB",
    )
    near = abs(got["get"] - size) <= 0.01 * size  # DVC's cache also holds the folder's .dir listing
    rows += [
        base_bytes,
        Row(
            f"bytes fetched by `kgit get {ref}`",
            f"that version: {size / MB:.2f} MB",
            got["get"] / MB,
            "MB",
            target=verdict(near, f"= {size / MB:.2f} MB (+ DVC's .dir listing)"),
        ).compared_to(base_bytes),
        Row(
            f"bytes fetched by `dvc pull {info['path']}.dvc`",
            f"that version: {size / MB:.2f} MB",
            got["pull-one"] / MB,
            "MB",
        ).compared_to(base_bytes),
    ]
    return rows
