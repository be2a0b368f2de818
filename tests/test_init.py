"""`kgit init`: real git, real DVC."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, git, kgit, snapshot

from kgit.workflow import project

pytestmark = pytest.mark.slow  # real `dvc init` and DVC config: the full suite, not the fast tier


def test_init_sets_everything_up_and_commits(git_repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "store"
    proc = kgit(git_repo, "init", "--remote", str(remote))
    assert proc.returncode == 0, proc.stderr
    assert (git_repo / ".dvc" / "config").exists()
    stage = yaml.safe_load((git_repo / "dvc.yaml").read_text())["stages"][project.STAGE_NAME]
    assert stage == project.VALIDATE_STAGE
    config = (git_repo / ".dvc" / "config").read_text()
    assert str(remote) in config and "remote = kgit" in config
    assert remote.is_dir()
    assert git(git_repo, "config", "push.followTags") == "true"
    lock = yaml.safe_load((git_repo / "dvc.lock").read_text())
    assert lock["stages"][project.STAGE_NAME] == {"cmd": project.VALIDATE_STAGE["cmd"]}
    for hook in ("pre-commit", "pre-push"):
        assert "kgit-hook-shim" in (git_repo / ".git" / "hooks" / hook).read_text()
    assert git(git_repo, "status", "--porcelain") == ""  # everything kgit wrote is committed
    assert "kgit: set up model releases" in git(git_repo, "log", "-1", "--format=%s")


def test_init_is_idempotent(git_repo: Path, tmp_path: Path) -> None:
    kgit(git_repo, "init", "--remote", str(tmp_path / "store"), check=True)
    before = snapshot(git_repo)
    proc = kgit(git_repo, "init", "--json")
    assert proc.returncode == 0
    assert '"changes": []' in proc.stdout
    assert snapshot(git_repo) == before
    # same remote given again: still nothing to do
    kgit(git_repo, "init", "--remote", str(tmp_path / "store"), check=True)
    assert snapshot(git_repo) == before


def test_default_remote_is_a_folder_beside_the_repo(git_repo: Path) -> None:
    kgit(git_repo, "init", check=True)
    expected = project.default_remote_path(git_repo.resolve())
    assert expected.is_dir()
    assert str(expected) in (git_repo / ".dvc" / "config").read_text()


def test_init_keeps_an_existing_dvc_setup_and_remote(git_repo: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=git_repo, check=True)
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "team", str(tmp_path / "team")], cwd=git_repo, check=True
    )
    (git_repo / "dvc.yaml").write_text("# our pipeline\nstages:\n  train:\n    cmd: python train.py\n")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "dvc")
    kgit(git_repo, "init", check=True)
    text = (git_repo / "dvc.yaml").read_text()
    assert "# our pipeline" in text and "python train.py" in text and project.STAGE_NAME in text
    assert "remote = team" in (git_repo / ".dvc" / "config").read_text()


def test_init_outside_git_is_a_clear_error(tmp_path: Path) -> None:
    proc = kgit(tmp_path, "init")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "not inside a git repository" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".dvc").exists()


def test_this_repository_holds_the_stage_kgit_init_writes() -> None:
    """One source of truth: the project's own dvc.yaml has exactly the stage kgit writes."""
    data = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert data["stages"][project.STAGE_NAME] == project.VALIDATE_STAGE
    assert project.lock_with_validate_stage(ROOT) is None  # dvc.lock holds it as kgit init writes it
    assert (ROOT / ".dvc" / "config").exists()


def test_init_in_an_empty_checkout_names_the_branch_with_the_set_up(git_repo: Path, tmp_path: Path) -> None:
    """origin's HEAD names `master`, the team pushes `main`: a clone checks out nothing, and `kgit init`
    there would make a second DVC set-up and remote. It is refused, naming the branch; on it, kgit works."""
    import subprocess

    kgit(git_repo, "init", "--remote", str(tmp_path / "store"), check=True)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=master", str(origin))
    git(git_repo, "remote", "add", "origin", str(origin))
    git(git_repo, "push", "-q", "origin", "main")
    clone = tmp_path / "clone"
    cloned = subprocess.run(["git", "clone", str(origin), str(clone)], capture_output=True, text=True)
    assert cloned.returncode == 0 and "nonexistent ref" in cloned.stderr, cloned.stderr  # git's own warning
    assert not (clone / "dvc.yaml").exists()

    proc = kgit(clone, "init")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "no commit checked out" in proc.stderr and "origin/main" in proc.stderr
    assert "`git checkout main`" in proc.stderr
    assert git(clone, "status", "--porcelain", "--ignored") == ""
    assert sorted(p.name for p in clone.iterdir()) == [".git"]  # no .dvc, no dvc.yaml
    assert not (clone / ".git" / "kgit").exists() and not (tmp_path / "clone.dvc-storage").exists()
    assert kgit(clone, "init", "--remote", str(tmp_path / "other-store")).returncode == 1
    assert not (tmp_path / "other-store").exists()

    git(clone, "checkout", "-q", "main")
    done = kgit(clone, "init", "--json")
    assert done.returncode == 0, done.stderr
    assert '"commit": null' in done.stdout  # the set-up was there: only this clone's hooks and settings
    assert git(clone, "status", "--porcelain") == "" and git(clone, "rev-list", "--count", "HEAD") == "2"
    assert "kgit-hook-shim" in (clone / ".git" / "hooks" / "pre-push").read_text()
    assert kgit(clone, "list").returncode == 0


def test_init_in_a_new_empty_repository_still_sets_up(tmp_path: Path) -> None:
    """No commit and no branch holding kgit's set-up (a brand-new repository): kgit init sets it up."""
    repo = tmp_path / "new"
    git(tmp_path, "init", "-q", str(repo))
    proc = kgit(repo, "init", "--remote", str(tmp_path / "store"))
    assert proc.returncode == 0, proc.stderr
    assert (repo / ".dvc" / "config").exists() and git(repo, "status", "--porcelain") == ""
