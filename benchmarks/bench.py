"""kgit benchmarks: medians of several runs, each against what a user would do instead.

    .venv/bin/python benchmarks/bench.py            # all benchmarks
    .venv/bin/python benchmarks/bench.py --runs 7 --versions 100

Builds its own fixtures in a temp folder (real git, real DVC, a real Keras model); prints a table.
Timings only: no pass/fail here (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def median_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up (file cache, .pyc)
    return statistics.median(fn() for _ in range(runs))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def build_repo(base: Path, versions: int) -> tuple[Path, Path]:
    """A repo with ``versions`` released versions of one model, pushed to a bare origin with data.

    The first release is a real ``kgit.release``; the others copy its folder under new version
    names and track/commit/tag them the way a release does (so building takes seconds, not minutes).
    """
    import keras

    import kgit
    from kgit import dvc_ops, registry, txn
    from kgit.metadata import Metadata

    repo, origin = base / "repo", base / "origin.git"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    kgit.init(repo, remote=str(base / "dvc-remote"))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,), name="x"), keras.layers.Dense(4)])
    model.compile(optimizer="adam", loss="mse")
    first = kgit.release(model, "bench", formats="keras", repo=repo)
    src = repo / first.formats["keras"]["path"]
    folders = []
    for i in range(2, versions + 1):
        dst = src.with_name(f"v{i}")
        shutil.copytree(src, dst)
        meta = Metadata.read(dst)
        meta.version = f"v{i}"
        (dst / "metadata.json").write_text(meta.to_json())
        folders.append((i, dst, meta))
    if folders:
        dvc_ops.add(repo, [d for _, d, _ in folders])
        for i, dst, meta in folders:
            dvc_file = dst.with_name(dst.name + ".dvc")
            dvc_ops.write_meta(dvc_file, meta.to_dict(), f"kgit release bench v{i} (keras)")
            h = dvc_ops.out_hash(dvc_ops.read_dvc_file(dvc_file.read_text(), str(dvc_file)))
            rel = dst.relative_to(repo).as_posix()
            git(repo, "add", f"{rel}.dvc", f"{dst.parent.relative_to(repo).as_posix()}/.gitignore")
            git(repo, "commit", "-q", "--no-verify", "-m", f"Release bench v{i}\n\n{txn.TRAILER}: bench@v{i}.0.0")
            message = registry.tag_message("bench", f"v{i}", {"formats": {"keras": {"path": rel, **h}},
                                                              "created_at": meta.created_at, "dataset_id": None,
                                                              "source_commit": meta.git.commit})
            subprocess.run(["git", "tag", "-a", f"bench@v{i}.0.0", "-F", "-"], cwd=repo, input=message, text=True, check=True)
    git(base, "init", "-q", "--bare", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(["git", "push", "-q", "-u", "origin", "main"], cwd=repo, check=True, env=env, capture_output=True)
    return repo, origin


def bench_hooks(base: Path, versions: int, runs: int) -> list[tuple[str, str, float, str]]:
    repo, origin = build_repo(base, versions)
    assert len(git(repo, "tag", "-l").split()) == versions
    (repo / "notes.txt").write_text("work\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", "notes")
    stdin = f"refs/heads/main {git(repo, 'rev-parse', 'HEAD')} refs/heads/main {git(repo, 'rev-parse', 'origin/main')}\n"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    shim = repo / ".git" / "hooks" / "pre-push"
    rows = []
    dvc_hook = median_of(runs, lambda: run([str(BIN / "dvc"), "push"], repo, env=env))
    rows.append(("DVC's pre-push (`dvc push`, nothing to push)", f"{versions} versions", dvc_hook, "baseline"))
    direct = median_of(runs, lambda: run([str(BIN / "kgit"), "hook", "pre-push", "origin", str(origin)], repo, stdin, env))
    rows.append(("kgit pre-push, nothing new (kgit hook)", f"{versions} versions", direct, f"{direct / dvc_hook:.2f}x"))
    installed = median_of(runs, lambda: run([str(shim), "origin", str(origin)], repo, stdin, env))
    rows.append(("kgit pre-push, nothing new (installed shim)", f"{versions} versions", installed, f"{installed / dvc_hook:.2f}x"))
    listing = median_of(runs, lambda: run([str(BIN / "kgit"), "list"], repo, env=env))
    rows.append(("kgit list", f"{versions} versions", listing, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--versions", type=int, default=100, help="released versions in the hook benchmark repo")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="kgit-bench-") as tmp:
        rows = bench_hooks(Path(tmp), args.versions, args.runs)
    table = Table(title=f"kgit benchmarks (median of {args.runs} runs)")
    for col in ("measurement", "fixture", "seconds", "ratio to baseline"):
        table.add_column(col)
    for name, fixture, seconds, ratio in rows:
        table.add_row(name, fixture, f"{seconds:.3f}", ratio)
    Console().print(table)


if __name__ == "__main__":
    main()
