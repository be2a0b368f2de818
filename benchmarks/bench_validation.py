"""What a round-trip validation costs in a Python process that validates more than once (a training
run's callback, a notebook, a script releasing several models): the first validation starts the
preloaded validation process, which imports TensorFlow; each later one is a process forked from it.

    .venv/bin/python benchmarks/bench_validation.py            # 5 of each
    .venv/bin/python benchmarks/bench_validation.py --runs 9

In one process, on a fresh kgit repository with a small model: a validation with no preloaded process
running (``stop_preloaded()`` first: it starts one, which imports TensorFlow, as every validation did
before) against a validation forked from the running one; then whole releases, the first of the
process against later ones. Wall time, medians. Prints progress on stderr and the table on stdout;
no pass/fail (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT / "tests")]

from bench_util import log  # noqa: E402


def _repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com")
    env.update(GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "start"]):
        if args[0] == "add":
            (repo / "README.md").write_text("a project\n")
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    return repo


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import warnings

    from support.zoo import plain_model

    import kgit
    from kgit.workflow.roundtrip import roundtrip, stop_preloaded

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="kgit-bench-validation-") as tmp:
        repo = _repo(Path(tmp))
        kgit.init(repo)
        model = plain_model()
        log("first release of the process")
        first_release = _timed(lambda: kgit.release(model, "m", formats="keras", repo=repo))
        later_releases = []
        for i in range(args.runs):
            log(f"release {i + 2} of the process")
            later_releases.append(_timed(lambda: kgit.release(model, "m", formats="keras", repo=repo)))
        folder = repo / "artifacts" / "m" / "keras" / "v1"
        cold, forked = [], []
        for i in range(args.runs):
            log(f"validation {i + 1}: cold, then forked")
            stop_preloaded()
            cold.append(_timed(lambda: roundtrip([folder])))
            forked.append(_timed(lambda: roundtrip([folder])))
        stop_preloaded()

    rows = [
        ("validation, no preloaded process (imports TensorFlow)", statistics.median(cold)),
        ("validation, forked from the preloaded process", statistics.median(forked)),
        ("release, the first of the process", first_release),
        ("release, a later one", statistics.median(later_releases)),
    ]
    print(f"| small model, {args.runs} runs, medians | wall time |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2f} s |")


if __name__ == "__main__":
    main()
