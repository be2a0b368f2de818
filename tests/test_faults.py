"""Prove nothing is lost: signals at every step, remote faults during the push, hostile input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, kgit, snapshot
from test_safety import RELEASE, assert_consistent

import kgit as api

POINTS = ["staged", "validated", "placed", "tracked", "committed", "tagged"]
FINISHED = {"committed", "tagged"}  # past the commit, an interrupted release is completed


def without_cache(snap: dict[str, object]) -> dict[str, object]:
    # DVC cache objects written before an interruption are unreferenced, harmless, and `dvc gc` food;
    # DVC's own scratch files (.dvc/tmp) come and go.
    def keep(entry: str) -> bool:
        return ".dvc/cache" not in entry and ".dvc/tmp" not in entry

    out = {k: v for k, v in snap.items() if k != "cache"}
    out["status"] = "\n".join(line for line in str(snap["status"]).splitlines() if keep(line))
    out["files"] = [f for f in snap["files"] if keep(f)]  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("point,sig", [(p, "INT") for p in POINTS] + [("validated", "TERM"), ("committed", "TERM")])
def test_interrupt_at_each_step(kgit_repo: Path, point: str, sig: str) -> None:
    before = snapshot(kgit_repo)
    env = {**os.environ, "KGIT_FAILPOINT": f"{point}:{sig}"}
    proc = subprocess.run([sys.executable, "-m", "kgit", *RELEASE], cwd=kgit_repo, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted" in proc.stderr
    assert_consistent(kgit_repo)
    if point in FINISHED:
        assert git(kgit_repo, "tag", "-l") == "safe@v1.0.0"
        assert git(kgit_repo, "status", "--porcelain") == ""
    else:
        assert without_cache(snapshot(kgit_repo)) == without_cache(before)
    retry = kgit(kgit_repo, *RELEASE)
    assert retry.returncode == 0, retry.stderr
    assert git(kgit_repo, "tag", "-l").split()[-1] == ("safe@v2.0.0" if point in FINISHED else "safe@v1.0.0")


# -- remote faults during the pre-push upload ---------------------------------------------------
def _published(repo: Path) -> dict[str, list[str]]:
    path = repo / ".git" / "kgit" / "published.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _set_remote(repo: Path, url: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "kgit", "url", str(url)], cwd=repo, check=True)
    git(repo, "commit", "-q", "--no-verify", "-am", f"remote {url.name}")


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A tiny real filesystem (tmpfs), to fill up. Needs root, as CI has."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _read_only(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)  # root ignores permission bits
    else:
        folder.chmod(0o555)


def _writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    folder.chmod(0o755)


@pytest.mark.parametrize("fault", ["missing", "read-only", "full"])
def test_remote_fault_refuses_push_and_retry_succeeds(kgit_repo: Path, tmp_path: Path, plain_model, fault: str,
                                                      request) -> None:  # type: ignore[no-untyped-def]
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(origin))
    git(kgit_repo, "remote", "add", "origin", str(origin))
    if fault == "missing":
        blocker = tmp_path / "gone"
        blocker.write_text("the remote's disk is not mounted here")
        bad = blocker / "store"
    elif fault == "read-only":
        bad = tmp_path / "ro-store"
        _read_only(bad)
    else:
        bad = request.getfixturevalue("tmpfs") / "store"
    _set_remote(kgit_repo, bad)
    big = __import__("support.zoo", fromlist=["guide_model"]).guide_model(units=64)  # larger than the tmpfs
    rec = api.release(big, "fault", formats=["keras", "h5"], repo=kgit_repo)
    push = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, capture_output=True, text=True)
    try:
        assert push.returncode != 0 and "uploading to DVC remote" in push.stderr and "failed" in push.stderr, push.stderr
        assert git(origin, "tag", "-l") == ""  # the git refs did not go either
        assert all(info["md5"] not in sum(_published(kgit_repo).values(), []) for info in rec.formats.values())
    finally:
        if fault == "read-only":
            _writable(bad)
    good = tmp_path / "good-store"
    _set_remote(kgit_repo, good)
    retry = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, capture_output=True, text=True)
    assert retry.returncode == 0, retry.stderr
    assert git(origin, "tag", "-l") == "fault@v1.0.0"
    assert all(info["md5"] in _published(kgit_repo)[str(good)] for info in rec.formats.values())
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(origin), str(fresh))
    assert kgit(fresh, "get", "fault@v1").returncode == 0  # what the push published is fetchable


# -- hostile input --------------------------------------------------------------------------------
def test_deeply_nested_and_huge_hyperparameters(kgit_repo: Path, plain_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kgit.errors import KgitError

    before = snapshot(kgit_repo)
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    with pytest.raises(KgitError, match="nested too deeply"):
        api.release(plain_model, "hostile", repo=kgit_repo, hyperparams=deep)
    with pytest.raises(KgitError, match="larger than 1 MB"):
        api.release(plain_model, "hostile", repo=kgit_repo, hyperparams={"blob": "x" * 2_000_000})
    params = tmp_path / "deep.yaml"
    params.write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    proc = kgit(kgit_repo, "release", "hostile", "--from", "support.zoo:plain_model", "--params", str(params))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert snapshot(kgit_repo) == before


def test_hand_edited_metadata_and_dvc_files(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    rec = api.release(plain_model, "edited", formats=["keras", "h5"], repo=kgit_repo)
    folder = kgit_repo / rec.formats["keras"]["path"]
    (folder / "metadata.json").write_text("{not json")
    dvc_file = kgit_repo / (rec.formats["h5"]["path"] + ".dvc")
    dvc_file.write_text("outs: [unclosed\n")
    proc = kgit(kgit_repo, "validate", "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    results = {r["format"]: r for r in json.loads(proc.stdout)}
    assert results["keras"]["check"] == "metadata" and "not valid JSON" in results["keras"]["error"]
    assert results["h5"]["check"] == "release" and "not valid YAML" in results["h5"]["error"]
    # list and show read the tag and the committed .dvc files: unaffected by the work tree
    assert kgit(kgit_repo, "list", "--json").returncode == 0
    assert kgit(kgit_repo, "show", "edited@v1", "--json").returncode == 0
    # committed by force, the broken .dvc file does not change what the release is: show reads the
    # release commit, and the push of that commit would be refused (tests/test_hooks.py)
    git(kgit_repo, "commit", "-q", "--no-verify", "-am", "break it")
    shown = json.loads(kgit(kgit_repo, "show", "edited@v1", "--format", "h5", "--json", check=True).stdout)
    assert shown["format"] == "h5" and shown["version"] == "v1"
    # and a new release of another model still works; the broken files stay as they were
    git(kgit_repo, "reset", "-q", "--hard", "HEAD~1")
    assert kgit(kgit_repo, "release", "other", "--from", "support.zoo:plain_model", "-f", "keras").returncode == 0


def test_symlink_planted_in_a_release_folder(kgit_repo: Path, plain_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rec = api.release(plain_model, "linked", formats="keras", repo=kgit_repo)
    folder = kgit_repo / rec.formats["keras"]["path"]
    secret = tmp_path / "outside.txt"
    secret.write_text("outside the repository")
    target = folder / "model.keras"
    target.unlink()
    target.symlink_to(secret)
    proc = kgit(kgit_repo, "validate", "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)[0]
    assert result["check"] == "files" and "symlink" in result["error"]
    from kgit.errors import KgitError

    with pytest.raises(KgitError, match="symlink"):
        api.load("linked", "v1", repo=kgit_repo)
    assert secret.read_text() == "outside the repository"


def test_release_from_a_folder_with_a_symlink_out(kgit_repo: Path, plain_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A source SavedModel folder with a symlink: kgit writes its own files, nothing links out."""
    src = tmp_path / "exported"
    plain_model.export(str(src), verbose=False)
    (tmp_path / "secret").write_text("s")
    (src / "assets" / "link").symlink_to(tmp_path / "secret")
    rec = api.release(str(src), "fromsm", formats="savedmodel", inference_only=True, repo=kgit_repo)
    out = kgit_repo / rec.formats["savedmodel"]["path"]
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_injection_shaped_names_and_versions_touch_nothing(kgit_repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    before = snapshot(kgit_repo)
    for name in [f"x;touch {marker}", f"$(touch {marker})", "../../etc", "a/../../b", "`id`", "x\ny"]:
        assert kgit(kgit_repo, "release", name, "--from", "support.zoo:plain_model").returncode == 1
    for version in [f"v1;touch {marker}", "v1/../../x", "../v1", "v1 --force"]:
        assert kgit(kgit_repo, "release", "ok", "--from", "support.zoo:plain_model", "--version", version).returncode == 1
    for ref in [f"ok@v1;touch {marker}", "ok#../prod", "ok#$(id)"]:
        assert kgit(kgit_repo, "show", ref).returncode == 1
    assert not marker.exists()
    assert snapshot(kgit_repo) == before
    assert not shutil.which("pwned")
