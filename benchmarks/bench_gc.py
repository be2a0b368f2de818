"""``kgit gc`` on many releases: the plan (a dry run) and the collection, local cache and DVC remote,
whole processes; then proof that every kept release is whole.

    .venv/bin/python benchmarks/bench_gc.py                  # 1,000 releases, keep the last 10
    .venv/bin/python benchmarks/bench_gc.py --versions 200 --keep 5

The repository: one real release of a tiny model, copied as versions 2..N (each its own
metadata.json, so each version has its own DVC directory object and shares the model files with
the others), tracked, committed and tagged as a release does, pushed to a local DVC remote. The work
tree's version folders are removed, so no release is kept for being present. Prints a table; no
pass/fail on time (the machine may be shared). Exits 1 if a kept release lost an object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fixtures import MODEL, derive_versions, dvc_push_all, new_repo, tiny_model, track_and_tag  # noqa: E402
from bench_util import KGIT, log, tool_env  # noqa: E402


def _objects(store: Path) -> set[str]:
    return {p.parent.name + p.name for p in (store / "files" / "md5").glob("*/*")}


def _version_objects(store: Path, md5: str) -> set[str]:
    listing = store / "files" / "md5" / md5[:2] / md5[2:]
    return {md5} | {e["md5"] for e in json.loads(listing.read_text())}


def _size(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "files").rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--keep", type=int, default=10)
    args = parser.parse_args()
    import kgit

    with tempfile.TemporaryDirectory(prefix="kgit-bench-gc-") as tmp:
        base = Path(tmp)
        repo, store = base / "repo", base / "store"
        log(f"making {args.versions} releases")
        new_repo(repo, store)
        first = kgit.release(tiny_model(), MODEL, formats="keras", repo=repo)
        src = repo / first.formats["keras"]["path"]
        track_and_tag(repo, MODEL, "keras", derive_versions(repo, src, 2, args.versions))
        log("pushing them to the DVC remote")
        dvc_push_all(repo)
        shutil.rmtree(src.parent)
        (src.parent).mkdir()
        md5 = {r.tag: r.formats["keras"]["md5"] for r in kgit.list_releases(repo=repo)}
        cache = repo / ".dvc" / "cache"
        before = (_size(cache), _size(store), len(_objects(store)))
        rows = []
        env = tool_env()
        for label, extra in (
            ("kgit gc (dry run)", []),
            ("kgit gc --remote --delete", ["--remote", "", "--delete"]),
            ("kgit gc (again: nothing left)", []),
        ):
            log(label)
            start = time.perf_counter()
            proc = subprocess.run(
                [KGIT, "gc", "--keep-last", str(args.keep), *extra, "--json"],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            took = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"{label} failed: {proc.stderr.strip()[-500:]}")
            result = json.loads(proc.stdout)
            rows.append((label, took, len(result["dropped"]), result["bytes"]))
        after = (_size(cache), _size(store), len(_objects(store)))
        kept = [t for t in md5 if int(t.split("@v")[1].split(".")[0]) > args.versions - args.keep]
        present = _objects(store)
        lost = sorted(t for t in kept if not _version_objects(store, md5[t]) <= present)
    width = max(len(r[0]) for r in rows)
    print(
        f"{args.versions} releases of one model (each folder its own listing and metadata.json), keep the last {args.keep}"
    )
    print(f"{'run'.ljust(width)}  {'seconds':>8}  {'dropped':>7}  bytes reclaimed")
    for label, took, dropped, size in rows:
        print(f"{label.ljust(width)}  {took:8.2f}  {dropped:7d}  {size:,}")
    print()
    print(
        f"DVC cache: {before[0]:,} -> {after[0]:,} bytes; remote: {before[1]:,} -> {after[1]:,} bytes, {before[2]} -> {after[2]} objects"
    )
    print(f"kept releases checked: {len(kept)}; with an object missing: {len(lost)}")
    if lost:
        sys.exit(f"kept releases lost objects: {lost[:5]}")


if __name__ == "__main__":
    main()
