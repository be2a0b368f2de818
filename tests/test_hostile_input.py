"""Hostile and hand-edited input: huge or deeply nested hyperparameters, edited metadata and .dvc files, planted symlinks, injection-shaped names. Nothing is lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import git, kgit, snapshot

import kgit as api

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


# -- hostile input --------------------------------------------------------------------------------
def test_deeply_nested_and_huge_hyperparameters(kgit_repo: Path, plain_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kgit.core.errors import KgitError

    before = snapshot(kgit_repo)
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    with pytest.raises(KgitError, match="nested too deeply"):
        api.release(plain_model, "hostile", repo=kgit_repo, hyperparams=deep)
    with pytest.raises(KgitError, match="larger than 1.0 MB"):
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
    from kgit.core.errors import KgitError

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
        assert (
            kgit(kgit_repo, "release", "ok", "--from", "support.zoo:plain_model", "--version", version).returncode == 1
        )
    for ref in [f"ok@v1;touch {marker}", "ok#../prod", "ok#$(id)"]:
        assert kgit(kgit_repo, "show", ref).returncode == 1
    assert not marker.exists()
    assert snapshot(kgit_repo) == before
    assert not shutil.which("pwned")
