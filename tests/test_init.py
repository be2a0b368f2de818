"""`kgit init`: real git, real DVC."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, git, kgit, snapshot

from kgit import project

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
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "team", str(tmp_path / "team")], cwd=git_repo, check=True)
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
