"""Guarding pushes and commits: real `git push` to a real bare repository, real DVC remote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, bare_origin, copy_project, git, kgit, release_once, snapshot
from support import tamper

import kgit as api
from kgit.store import githooks

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


@pytest.fixture
def origin_repo(kgit_repo: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """kgit_repo with a bare `origin`; returns (repo, origin, dvc remote folder)."""
    origin = bare_origin(tmp_path, kgit_repo)
    return kgit_repo, origin, tmp_path / "remote"


@pytest.fixture(scope="module")
def released_once(tmp_path_factory: pytest.TempPathFactory, plain_model: Any) -> tuple[Path, Any]:
    """m@v1 released (keras) in a kgit repository, made once for the module (conftest.release_once)."""
    return release_once(tmp_path_factory, plain_model)


@pytest.fixture
def released_repo(released_once: tuple[Path, Any], tmp_path: Path) -> tuple[Path, Path, Path, Any]:
    """A copy of ``released_once`` with a bare `origin`: (repo, origin, dvc remote folder, m@v1's record)."""
    base, rec = released_once
    repo = copy_project(base, tmp_path)
    return repo, bare_origin(tmp_path, repo), tmp_path / "remote", rec


def push(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "push", "origin", "main", *args], cwd=repo, capture_output=True, text=True)


def remote_has_version(remote: Path, repo: Path, dvc_file: str) -> bool:
    """Every object of the version (its .dir manifest and each file) is in the DVC remote."""
    md5 = yaml.safe_load((repo / dvc_file).read_text())["outs"][0]["md5"]
    manifest = remote / "files" / "md5" / md5[:2] / md5[2:]
    if not manifest.exists():
        return False
    entries = json.loads(manifest.read_text())
    return all((remote / "files" / "md5" / e["md5"][:2] / e["md5"][2:]).exists() for e in entries)


def origin_tags(origin: Path) -> list[str]:
    return git(origin, "tag", "-l").split()


def test_good_release_is_pushed_with_its_data(origin_repo, plain_model) -> None:  # type: ignore[no-untyped-def]
    repo, origin, remote = origin_repo
    rec = api.release(plain_model, "good", formats=["keras", "savedmodel"], repo=repo)
    proc = push(repo)
    assert proc.returncode == 0, proc.stderr
    assert origin_tags(origin) == ["good@v1.0.0"]  # push.followTags sends the release tag
    for info in rec.formats.values():
        assert remote_has_version(remote, repo, info["path"] + ".dvc")
    assert "uploading good@v1" in proc.stderr
    # the release validated it already: the hook did not run the validation again
    assert "dvc repro" not in proc.stderr


@pytest.mark.parametrize(
    "tamper,check",
    [
        (tamper.tamper_byte, "files"),
        (tamper.edit_metadata, "metadata"),
        (tamper.change_reference_outputs, "files"),
        (tamper.delete_file, "files"),
    ],
)
def test_tampered_release_is_refused(released_repo, tamper, check: str) -> None:  # type: ignore[no-untyped-def]
    repo, origin, remote, rec = released_repo
    tamper(repo / rec.formats["keras"]["path"])
    proc = push(repo)
    assert proc.returncode != 0
    assert "push refused" in proc.stderr
    assert "m@v1" in proc.stderr and check in proc.stderr, proc.stderr
    assert origin_tags(origin) == [] and git(origin, "branch") == ""
    assert not (remote / "files").exists() or not any((remote / "files").rglob("*"))


def test_forged_reference_outputs_with_matching_hashes_are_refused(released_repo) -> None:  # type: ignore[no-untyped-def]
    """Reference outputs rewritten *with* matching hashes in metadata.json and the .dvc file: the file
    hashes agree, but the release recorded in git (the .dvc file at the tag's commit) does not."""
    repo, origin, _, rec = released_repo
    folder = repo / rec.formats["keras"]["path"]
    # --no-verify everywhere: this simulates someone forging a release by hand
    tamper.change_reference_outputs(folder)
    from kgit.core.metadata import Metadata, sha256_file

    meta = Metadata.read(folder)
    meta.files["reference_outputs.npz"] = meta.reference.outputs_sha256 = sha256_file(folder / "reference_outputs.npz")
    (folder / "metadata.json").write_text(meta.to_json())
    dvc_file = repo / (rec.formats["keras"]["path"] + ".dvc")
    data = yaml.safe_load(dvc_file.read_text())
    data["meta"]["kgit"] = meta.to_dict()
    dvc_file.write_text(yaml.safe_dump(data, sort_keys=False))
    git(repo, "commit", "-q", "--no-verify", "-am", "forge")
    proc = push(repo)
    assert proc.returncode != 0 and "m@v1" in proc.stderr
    # the forged .dvc file is a changed release: refused before anything is loaded
    assert "m@v1 (keras): branch main modifies artifacts/m/keras/v1.dvc" in proc.stderr, proc.stderr
    # and the forged data, whatever git says, fails validation against the release recorded at the tag
    proc = kgit(repo, "validate", "m@v1")
    assert proc.returncode != 0
    assert (
        "m@v1 (keras) metadata: metadata.json differs from the release's metadata in git (files, reference)"
        in proc.stderr + proc.stdout
    ), proc.stderr


def test_changed_dvc_file_in_pushed_commits_is_refused(released_repo) -> None:  # type: ignore[no-untyped-def]
    repo, origin, _, rec = released_repo
    assert push(repo).returncode == 0
    dvc_file = repo / (rec.formats["keras"]["path"] + ".dvc")
    dvc_file.unlink()
    git(repo, "commit", "-q", "--no-verify", "-am", "drop a release")
    proc = push(repo)
    assert proc.returncode != 0
    assert "m@v1 (keras)" in proc.stderr and "deleted" in proc.stderr
    assert push(repo, "--no-verify").returncode == 0  # the documented escape


def test_no_remote_is_refused_with_a_fix(released_repo) -> None:  # type: ignore[no-untyped-def]
    repo, origin, _, _ = released_repo
    subprocess.run([sys.executable, "-m", "dvc", "remote", "default", "--unset"], cwd=repo, check=True)
    proc = push(repo)
    assert proc.returncode != 0 and "no default DVC remote" in proc.stderr and "kgit init --remote" in proc.stderr
    assert origin_tags(origin) == []


def test_unreachable_remote_is_refused_then_retry_succeeds(origin_repo, plain_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, origin, _ = origin_repo
    rec = api.release(plain_model, "flaky", formats="keras", repo=repo)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote folder should be")
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "modify", "kgit", "url", str(blocker / "store")], cwd=repo, check=True
    )
    proc = push(repo)
    assert proc.returncode != 0 and "uploading to DVC remote" in proc.stderr and "failed" in proc.stderr
    assert origin_tags(origin) == []
    good = tmp_path / "good-store"
    subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "kgit", "url", str(good)], cwd=repo, check=True)
    proc = push(repo)
    assert proc.returncode == 0, proc.stderr
    assert remote_has_version(good, repo, rec.formats["keras"]["path"] + ".dvc")


def test_nothing_to_do_imports_neither_tensorflow_nor_dvc(released_repo) -> None:  # type: ignore[no-untyped-def]
    repo, origin, _, _ = released_repo
    assert push(repo).returncode == 0
    (repo / "notes.txt").write_text("more work\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", "notes")
    head, remote_head = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "origin/main")
    stdin = f"refs/heads/main {head} refs/heads/main {remote_head}\n"
    code = (
        "import sys\nfrom kgit.cli import main\n"
        "try:\n    main(['hook', 'pre-push', 'origin', sys.argv[1]])\nexcept SystemExit as e:\n    rc = e.code\nelse:\n    rc = 0\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'dvc', 'h5py') if m in sys.modules)\n"
        "sys.stderr.write(f'RC={rc} HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(origin)], cwd=repo, input=stdin, capture_output=True, text=True
    )
    assert "RC=None HEAVY=\n" in proc.stderr or "RC=0 HEAVY=\n" in proc.stderr, proc.stderr
    # and pushing a release that was already pushed elsewhere (new branch, same tag) is nothing to do too
    stdin = f"refs/heads/other {head} refs/heads/other {'0' * 40}\n"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(origin)], cwd=repo, input=stdin, capture_output=True, text=True
    )
    assert "HEAVY=\n" in proc.stderr, proc.stderr


def test_existing_hook_is_chained_and_restored(git_repo: Path, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    hooks_dir = git_repo / ".git" / "hooks"
    hooks_dir.mkdir(exist_ok=True)
    marker = tmp_path / "team-hook-ran"
    team_hook = f"#!/bin/sh\necho team >> {marker}\ncat > /dev/null\nexit ${{TEAM_HOOK_EXIT:-0}}\n"
    (hooks_dir / "pre-push").write_text(team_hook)
    (hooks_dir / "pre-push").chmod(0o755)
    api.init(git_repo, remote=str(tmp_path / "remote"))
    bare_origin(tmp_path, git_repo)
    api.release(plain_model, "chain", formats="keras", repo=git_repo)
    env = {**os.environ, "TEAM_HOOK_EXIT": "1"}
    proc = subprocess.run(["git", "push", "origin", "main"], cwd=git_repo, capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and marker.read_text() == "team\n"  # its failure still blocks
    assert push(git_repo).returncode == 0
    assert marker.read_text() == "team\nteam\n"
    kgit(git_repo, "hooks", "uninstall", check=True)
    assert (hooks_dir / "pre-push").read_text() == team_hook
    assert not (hooks_dir / "pre-commit").exists()


def test_dvc_hooks_installed_first_still_work(git_repo: Path, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    api.init(git_repo, remote=str(tmp_path / "remote"))
    kgit(git_repo, "hooks", "uninstall", check=True)
    subprocess.run([sys.executable, "-m", "dvc", "install"], cwd=git_repo, check=True, capture_output=True)
    dvc_hooks = {h: (git_repo / ".git" / "hooks" / h).read_text() for h in ("pre-push", "pre-commit", "post-checkout")}
    kgit(git_repo, "hooks", "install", check=True)
    assert githooks.MARKER in (git_repo / ".git" / "hooks" / "pre-push").read_text()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # DVC's hook calls `dvc`
    bare_origin(tmp_path, git_repo)
    (git_repo / "data.txt").write_text("tracked by dvc, pushed by DVC's own hook\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data.txt"], cwd=git_repo, check=True)
    git(git_repo, "add", "data.txt.dvc", ".gitignore")
    proc = subprocess.run(["git", "commit", "-q", "-m", "data"], cwd=git_repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["git", "push", "origin", "main"], cwd=git_repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert remote_has_file(tmp_path / "remote", git_repo / "data.txt.dvc")  # DVC's pre-push ran `dvc push`
    kgit(git_repo, "hooks", "uninstall", check=True)
    assert {h: (git_repo / ".git" / "hooks" / h).read_text() for h in dvc_hooks} == dvc_hooks


def remote_has_file(remote: Path, dvc_file: Path) -> bool:
    md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    return (remote / "files" / "md5" / md5[:2] / md5[2:]).exists()


def test_install_honours_core_hookspath_and_is_idempotent(git_repo: Path) -> None:
    git(git_repo, "config", "core.hooksPath", ".githooks")
    first = kgit(git_repo, "hooks", "install", check=True)
    assert "installed kgit's pre-push hook" in first.stderr and "installed kgit's pre-commit hook" in first.stderr
    assert (git_repo / ".githooks" / "pre-push").exists() and (git_repo / ".githooks" / "pre-commit").exists()
    again = kgit(git_repo, "hooks", "install", check=True)
    assert "nothing changed" in again.stderr


def test_pre_commit_refuses_changes_to_released_versions(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    rec = api.release(plain_model, "frozen", formats="keras", repo=kgit_repo)
    dvc_file = kgit_repo / (rec.formats["keras"]["path"] + ".dvc")
    before = snapshot(kgit_repo)
    text = dvc_file.read_text()
    dvc_file.write_text(text.replace("frozen", "thawed", 1))
    git(kgit_repo, "add", str(dvc_file.relative_to(kgit_repo)))
    proc = subprocess.run(["git", "commit", "-m", "edit"], cwd=kgit_repo, capture_output=True, text=True)
    assert proc.returncode != 0 and "frozen@v1 (keras)" in proc.stderr and "modifies" in proc.stderr
    git(kgit_repo, "rm", "-q", "--cached", str(dvc_file.relative_to(kgit_repo)))
    proc = subprocess.run(["git", "commit", "-m", "delete"], cwd=kgit_repo, capture_output=True, text=True)
    assert proc.returncode != 0 and "deletes" in proc.stderr
    git(kgit_repo, "reset", "-q", "HEAD")
    dvc_file.write_text(text)
    assert snapshot(kgit_repo) == before
    (kgit_repo / "other.txt").write_text("unrelated\n")
    git(kgit_repo, "add", "other.txt")
    assert subprocess.run(["git", "commit", "-q", "-m", "fine"], cwd=kgit_repo).returncode == 0


def test_shipped_hook_files_match_the_installer() -> None:
    for hook in (*githooks.HOOKS, "pre-receive"):  # pre-receive: for a bare repository (kgit server install)
        assert (ROOT / "hooks" / hook).read_text() == githooks.shim(hook)
        assert os.access(ROOT / "hooks" / hook, os.X_OK)
    entries = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {e["id"]: e["entry"] for e in entries} == {
        "kgit-pre-commit": "kgit hook pre-commit",
        "kgit-pre-push": "kgit hook pre-push",
    }
