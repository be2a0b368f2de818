"""All or nothing: crashes (SIGKILL at each step), Ctrl-C, concurrent releases, tags on origin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import git, kgit, snapshot

RELEASE = ["release", "safe", "--from", "support.zoo:plain_model", "-f", "keras", "-f", "h5"]


def assert_consistent(repo: Path) -> None:
    """No tag without its commit, no committed .dvc whose data is missing from the cache,
    no leftover journal or staging, and every kgit file still parses."""
    for tag in git(repo, "tag", "-l").split():
        git(repo, "rev-parse", "--verify", f"{tag}^{{commit}}")
    tracked = [p for p in git(repo, "ls-files", "*.dvc").split() if p.startswith("artifacts/")]
    for rel in tracked:
        out = yaml.safe_load((repo / rel).read_text())["outs"][0]
        md5 = out["md5"]
        assert (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists(), rel
    yaml.safe_load((repo / "dvc.yaml").read_text())
    git(repo, "fsck", "--no-progress")


def run_with_failpoint(repo: Path, point: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KGIT_FAILPOINT": point}
    return subprocess.run([sys.executable, "-m", "kgit", *RELEASE], cwd=repo, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("point,survives", [
    ("staged", False), ("validated", False), ("placed", False), ("tracked", False),
    ("committed", True), ("tagged", True),
])
def test_sigkill_at_each_step_leaves_a_consistent_repo(kgit_repo: Path, point: str, survives: bool) -> None:
    head_before = git(kgit_repo, "rev-parse", "HEAD")
    proc = run_with_failpoint(kgit_repo, point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # Never a tag without its commit; before the commit, no commit and no tag at all.
    assert_consistent(kgit_repo)
    if not survives:
        assert git(kgit_repo, "rev-parse", "HEAD") == head_before
        assert git(kgit_repo, "tag", "-l") == ""
    # The next kgit command that writes cleans up: finishes a committed release, or removes it all.
    retry = kgit(kgit_repo, *RELEASE, "--json")
    assert retry.returncode == 0, retry.stderr
    assert_consistent(kgit_repo)
    tags = git(kgit_repo, "tag", "-l").split()
    if survives:
        assert "finished the interrupted release safe@v1.0.0" in retry.stderr
        assert tags == ["safe@v1.0.0", "safe@v2.0.0"]
    else:
        assert tags == ["safe@v1.0.0"]
        assert git(kgit_repo, "rev-parse", "HEAD~1") == head_before
    assert git(kgit_repo, "status", "--porcelain") == ""
    # no orphan folder: every version folder on disk is a tracked release
    for fmt in ("keras", "h5"):
        folder = kgit_repo / "artifacts" / "safe" / fmt
        dirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        dvcs = sorted(p.name[:-4] for p in folder.glob("*.dvc"))
        assert dirs == dvcs
    assert not (kgit_repo / ".git" / "kgit" / "journal.json").exists()
    assert not any((kgit_repo / ".git" / "kgit" / "staging").glob("*"))


def test_ctrl_c_during_validation_leaves_no_trace(kgit_repo: Path) -> None:
    before = snapshot(kgit_repo)
    proc = subprocess.Popen([sys.executable, "-m", "kgit", *RELEASE], cwd=kgit_repo, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "validating" in line:
            break
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C does
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    after = snapshot(kgit_repo)
    assert after == before
    assert kgit(kgit_repo, *RELEASE).returncode == 0


def test_concurrent_releases_get_distinct_versions(kgit_repo: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-m", "kgit", *RELEASE, "--json"], cwd=kgit_repo, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        for _ in range(3)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    busy = [r for r in results if r[0] == 1 and "another kgit command" in r[2]]
    assert len(ok) + len(busy) == 3, results
    import json

    versions = sorted(json.loads(out)["version"] for _, out, _ in ok)
    assert len(versions) == len(set(versions)) == len(ok) >= 1
    assert sorted(git(kgit_repo, "tag", "-l").split()) == sorted(f"safe@{v}.0.0" for v in versions)
    assert_consistent(kgit_repo)
    assert git(kgit_repo, "status", "--porcelain") == ""


def test_version_tagged_on_origin_is_refused(kgit_repo: Path, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    import kgit as api

    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(kgit_repo, "remote", "add", "origin", str(origin))
    git(kgit_repo, "push", "-q", "origin", "main")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    git(other, "tag", "-a", "safe@v1.0.0", "-m", "released elsewhere")
    git(other, "push", "-q", "origin", "safe@v1.0.0")
    before = snapshot(kgit_repo)
    proc = kgit(kgit_repo, *RELEASE)
    assert proc.returncode == 1 and "already exists on origin" in proc.stderr, proc.stderr
    assert snapshot(kgit_repo) == before
    assert api.release(plain_model, "safe", repo=kgit_repo, version="v2", formats="keras").version == "v2"


def test_folder_left_by_hand_blocks_that_version(kgit_repo: Path) -> None:
    stray = kgit_repo / "artifacts" / "safe" / "keras" / "v1"
    stray.mkdir(parents=True)
    (stray / "x").write_text("someone else's file")
    proc = kgit(kgit_repo, *RELEASE)
    assert proc.returncode == 0, proc.stderr
    assert "safe@v2.0.0" in git(kgit_repo, "tag", "-l")  # v1 looked taken, so v2 was chosen
    assert (stray / "x").read_text() == "someone else's file"
