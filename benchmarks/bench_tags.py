"""Thousands of release tags (``--tag-versions``, default 15,000, of one model): the commands that
read git alone, each timed as wall time and as CPU time (user + sys of the command and its git
children; the machine may be shared, and CPU time is what the code itself costs).

  list, list --json       every tag
  show NAME@vMID          one version (must not read every tag)
  resolve one version     what `kgit get` / `kgit validate` / `kgit.load` do before touching data:
                          ``catalog.resolve`` of vMID, and of ``latest``, each in a fresh process
  pre-push, nothing new   ``kgit hook pre-push`` for a plain commit
  server pre-receive      ``kgit hook pre-receive`` receiving a plain commit; a commit that changes
                          ``artifacts/`` (every release's released file is compared with the tip's
                          tree: the state check); a new branch grown from main
  the floor               ``python -c pass`` and ``kgit --version`` (CPU), in the same minutes

Each measurement runs once more before the timed runs, so kgit's tag cache (``.git/kgit/tagcache.json``)
is warm, as it is in a clone that has listed its tags once; the first, cold ``kgit list`` is reported
on its own row.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_fixtures import MODEL, Fixtures
from bench_util import KGIT, CommandFailed, Row, git, tool_env, verdict

TARGET_ONE = 0.3  # seconds: resolving one version
TARGET_LIST = 1.0  # seconds: kgit list


def commit_touching_artifacts(repo: Path) -> str:
    """A commit on top of HEAD that adds ``artifacts/NOTES.md`` (no release changes), made with git's
    plumbing and a private index: no branch moves, the work tree is untouched."""
    index = repo / ".git" / "bench-index"
    env = {**tool_env(), "GIT_INDEX_FILE": str(index)}
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=repo,
        input="notes\n",
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    for args in (["read-tree", "HEAD"], ["update-index", "--add", "--cacheinfo", f"100644,{blob},artifacts/NOTES.md"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    tree = subprocess.run(
        ["git", "write-tree"], cwd=repo, capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    index.unlink()
    return subprocess.run(
        ["git", "commit-tree", tree, "-p", "HEAD", "-m", "notes beside the models"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()


def run_cpu(cmd: Sequence[str], cwd: Path, stdin: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=tool_env(),
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise CommandFailed(
            f"benchmark command failed (exit {proc.returncode}): {' '.join(cmd)} in {cwd}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _rows(measurement: str, fixture: str, samples: list[tuple[float, float]], target: float) -> list[Row]:
    wall = statistics.median(s[0] for s in samples)
    cpu = statistics.median(s[1] for s in samples)
    return [
        Row(f"{measurement}: wall", fixture, wall, runs=len(samples), target=verdict(wall < target, f"< {target} s")),
        Row(
            f"{measurement}: CPU (user+sys)",
            fixture,
            cpu,
            runs=len(samples),
            target=verdict(cpu < target, f"< {target} s"),
        ),
    ]


def bench(fx: Fixtures, runs: int) -> list[Row]:
    repo, origin = fx.many_tags()
    n = fx.tag_versions
    fixture = f"{n:,} tags"
    mid = f"v{n // 2}"
    (repo / ".git" / "kgit" / "tagcache.json").unlink(missing_ok=True)
    rows = _rows("`kgit list`, first run (no tag cache)", fixture, [run_cpu([KGIT, "list"], repo)], TARGET_LIST)
    resolve = (
        "from kgit.registry import catalog; from kgit.store.git_ops import Repo; "
        "catalog.resolve(Repo('.'), {model!r}, {version!r})"
    )
    stdin = (
        f"refs/heads/main {git(repo, 'rev-parse', 'HEAD')} refs/heads/main {git(repo, 'rev-parse', 'origin/main')}\n"
    )
    received = f"{git(repo, 'rev-parse', 'HEAD~1')} {git(repo, 'rev-parse', 'HEAD')} refs/heads/main\n"
    touching = commit_touching_artifacts(repo)
    cases: list[tuple[str, list[str], Path, str | None, float]] = [
        ("`kgit list`", [KGIT, "list"], repo, None, TARGET_LIST),
        ("`kgit list --json`", [KGIT, "list", "--json"], repo, None, TARGET_LIST),
        (f"`kgit show {MODEL}@{mid}`", [KGIT, "show", f"{MODEL}@{mid}"], repo, None, TARGET_ONE),
        (
            f"resolve {MODEL}@{mid} (get/validate/load)",
            [sys.executable, "-c", resolve.format(model=MODEL, version=mid)],
            repo,
            None,
            TARGET_ONE,
        ),
        (
            f"resolve {MODEL}@latest (get/validate/load)",
            [sys.executable, "-c", resolve.format(model=MODEL, version="latest")],
            repo,
            None,
            TARGET_ONE,
        ),
        (
            "pre-push, nothing new (`kgit hook pre-push`)",
            [KGIT, "hook", "pre-push", "origin", str(origin)],
            repo,
            stdin,
            TARGET_ONE,
        ),
        ("server pre-receive, a plain commit", [KGIT, "hook", "pre-receive"], repo / ".git", received, TARGET_ONE),
        (
            "server pre-receive, a commit changing artifacts/ (every release checked)",
            [KGIT, "hook", "pre-receive"],
            repo / ".git",
            f"{git(repo, 'rev-parse', 'HEAD')} {touching} refs/heads/main\n",
            TARGET_LIST,
        ),
        (
            "server pre-receive, a new branch grown from main",
            [KGIT, "hook", "pre-receive"],
            repo / ".git",
            f"{'0' * 40} {git(repo, 'rev-parse', 'HEAD')} refs/heads/feature\n",
            TARGET_LIST,
        ),
    ]
    for _name, cmd, cwd, text, _target in cases:  # warm-up: the tag cache, .pyc, the file cache
        run_cpu(cmd, cwd, text)
    samples: dict[str, list[tuple[float, float]]] = {c[0]: [] for c in cases}
    for _ in range(runs):  # in turns, so that the machine's slow moments are shared out
        for name, cmd, cwd, text, _target in cases:
            samples[name].append(run_cpu(cmd, cwd, text))
    for name, _cmd, _cwd, _text, target in cases:
        rows += _rows(name, fixture, samples[name], target)
    # the floor every command stands on, measured in the same minutes: this machine's speed varies
    for name, cmd in (
        ("Python start-up alone (`python -c pass`)", [sys.executable, "-c", "pass"]),
        ("start-up and the command line's imports (`kgit --version`)", [KGIT, "--version"]),
    ):
        rows += _rows(name, "-", [run_cpu(cmd, repo) for _ in range(runs)], TARGET_ONE)[1:]
    return rows
