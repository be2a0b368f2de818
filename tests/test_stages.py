"""Stages and deprecation: real tags in GTO's grammar, agreement with gto and DVC, a second clone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_refused, bare_origin, copy_project, git, kgit, new_repo

import kgit as api

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier

GTO = str(Path(sys.executable).with_name("gto"))


@pytest.fixture(scope="module")
def three_released(tmp_path_factory: pytest.TempPathFactory, plain_model) -> Path:  # type: ignore[no-untyped-def]
    """st@v1..v3 in a kgit repository, laid out as ``kgit_repo`` (repo/, remote/): made once."""
    base = tmp_path_factory.mktemp("three-versions")
    repo = new_repo(base, "README.md", "a project\n")
    api.init(repo, remote=str(base / "remote"))
    for i in range(3):
        api.release(plain_model, "st", formats="keras", repo=repo, hyperparams={"i": i})
    return base


@pytest.fixture
def three_versions(three_released: Path, tmp_path: Path) -> Path:
    return copy_project(three_released, tmp_path)


def gto_stages(repo: Path) -> dict[str, str]:
    out = subprocess.run([GTO, "show", "--json"], cwd=repo, capture_output=True, text=True, check=True).stdout
    return {stage: version for stage, version in json.loads(out)["st"]["stage"].items()}


def test_promote_demote_deprecate_lifecycle(three_versions: Path) -> None:
    repo = three_versions
    kgit(repo, "promote", "st@v1", "prod", check=True)
    kgit(repo, "promote", "st@v2", "staging", "--note", "candidate", check=True)
    rows = {r["version"]: r for r in json.loads(kgit(repo, "list", "st", "--json", check=True).stdout)}
    assert rows["v1"]["stages"] == ["prod"] and rows["v2"]["stages"] == ["staging"] and rows["v3"]["stages"] == []
    assert gto_stages(repo) == {"prod": "v1.0.0", "staging": "v2.0.0"}

    # promoting another version moves the stage
    kgit(repo, "promote", "st@v2", "prod", check=True)
    assert json.loads(kgit(repo, "show", "st#prod", "--json", check=True).stdout)["version"] == "v2"
    assert gto_stages(repo)["prod"] == "v2.0.0"
    kgit(repo, "demote", "st", "staging", check=True)
    assert "staging" not in gto_stages(repo)

    # deprecation: still there, no longer latest, no longer promotable
    kgit(repo, "deprecate", "st@v3", "--note", "bad data", check=True)
    assert api.show("st", "latest", repo=repo).metadata.version == "v2"
    shown = json.loads(kgit(repo, "show", "st@v3", "--json", check=True).stdout)
    assert shown["deprecated"] is True
    assert "deprecated" in kgit(repo, "list", check=True).stdout

    events = json.loads(kgit(repo, "history", "st", "--json", check=True).stdout)
    assert [(e["event"], e["version"], e["stage"]) for e in events] == [
        ("released", "v1", None),
        ("released", "v2", None),
        ("released", "v3", None),
        ("promoted", "v1", "prod"),
        ("promoted", "v2", "staging"),
        ("promoted", "v2", "prod"),
        ("demoted", "v2", "staging"),
        ("deprecated", "v3", None),
    ]
    assert all(e["who"].startswith("Kgit Tester") and e["when"] and len(e["commit"]) == 40 for e in events)
    assert "promoted" in kgit(repo, "history", "st", check=True).stdout


def test_stage_changes_in_the_same_second_keep_their_order_for_gto(three_versions: Path) -> None:
    """GTO orders a model's stage events by their tags' dates, in whole seconds: changes made one
    right after another (a script) still read, in gto, as the last one says."""
    repo = three_versions
    api.promote("st@v1", "prod", repo=repo)
    api.promote("st@v2", "prod", repo=repo)
    api.demote("st", "prod", repo=repo)
    api.promote("st@v3", "prod", repo=repo)
    dates = [
        int(git(repo, "for-each-ref", "--format=%(taggerdate:unix)", f"refs/tags/st#{tag}"))
        for tag in ("prod#1", "prod#2", "prod!#3", "prod#4")
    ]
    assert dates == sorted(set(dates)), dates  # each a second after the one before, at least
    assert dates[-1] - dates[0] <= 10  # and not much more (a validation, then a second at most each)
    assert gto_stages(repo) == {"prod": "v3.0.0"}
    assert json.loads(kgit(repo, "show", "st#prod", "--json", check=True).stdout)["version"] == "v3"


def test_everything_that_takes_a_version_takes_a_stage(three_versions: Path) -> None:
    repo = three_versions
    api.promote("st@v1", "staging", repo=repo)
    api.promote("st@v3", "prod", repo=repo)
    assert api.load("st", stage="prod", repo=repo) is not None
    assert json.loads(kgit(repo, "get", "st#prod", "--json", check=True).stdout)["version"] == "v3"
    d = json.loads(kgit(repo, "diff", "st#staging", "st#prod", "--json", check=True).stdout)
    assert (d["a"], d["b"]) == ("st@v1", "st@v3")
    assert json.loads(kgit(repo, "validate", "st#prod", "--json", check=True).stdout)[0]["version"] == "st@v3"
    dvc_get = subprocess.run(
        [
            sys.executable,
            "-m",
            "dvc",
            "artifacts",
            "get",
            str(repo),
            "st",
            "--stage",
            "prod",
            "-o",
            str(repo.parent / "fetched"),
        ],
        cwd=repo.parent,
        capture_output=True,
        text=True,
    )
    assert dvc_get.returncode == 0, dvc_get.stderr
    assert json.loads((repo.parent / "fetched" / "metadata.json").read_text())["version"] == "v3"


def test_bad_input_creates_no_tag(three_versions: Path) -> None:
    repo = three_versions
    api.promote("st@v1", "prod", repo=repo)
    api.deprecate("st@v2", repo=repo)
    assert_refused(repo, "promote", "st@v9", "prod", expect="not released", alone=True)
    assert_refused(repo, "promote", "st@v3", "Prod!", expect="invalid stage name", alone=True)
    assert_refused(repo, "promote", "st@v2", "staging", expect="deprecated", alone=True)
    assert_refused(repo, "promote", "st@v1", "prod", expect="already in prod", alone=True)
    assert_refused(repo, "demote", "st", "staging", expect="nothing to demote", alone=True)
    assert_refused(repo, "demote", "st", "no/such", expect="invalid stage name", alone=True)
    assert_refused(repo, "show", "st#staging", expect="no version of st is in stage 'staging'", alone=True)
    assert_refused(repo, "deprecate", "st@v2", expect="already deprecated", alone=True)
    assert_refused(repo, "deprecate", "st@v1", expect="demote it first", alone=True)
    assert_refused(repo, "deprecate", "st@latest", expect="explicitly", alone=True)
    (repo / ".gto").write_text("stages: [dev, prod]\n")
    git(repo, "add", ".gto")
    git(repo, "commit", "-q", "-m", "allowed stages")
    assert_refused(repo, "promote", "st@v3", "staging", expect="unknown stage 'staging'", alone=True)
    kgit(repo, "promote", "st@v3", "dev", check=True)


def test_promoting_validates_first(three_versions: Path) -> None:
    repo = three_versions
    (repo / ".git" / "kgit" / "validated.json").unlink()
    folder = repo / "artifacts" / "st" / "keras" / "v2"
    (folder / "reference_inputs.npz").unlink()
    assert_refused(repo, "promote", "st@v2", "prod", expect="files check", alone=True)
    proc = kgit(repo, "promote", "st@v1", "prod")
    assert proc.returncode == 0 and "round trip" in proc.stderr  # validated (afresh) before promoting


def test_stages_travel_with_push_and_fetch(three_versions: Path, tmp_path: Path) -> None:
    repo = three_versions
    origin = bare_origin(tmp_path, repo)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert subprocess.run(["git", "push", "-q", "-u", "origin", "main"], cwd=repo, env=env).returncode == 0
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    assert api.list_releases("st", repo=other)[0].stages == []

    # a stage tag travels with a plain `git push`; the hook validates the version it points to
    (repo / ".git" / "kgit" / "validated.json").unlink()
    api.promote("st@v2", "prod", repo=repo)  # validates (and records) v2 again
    (repo / ".git" / "kgit" / "validated.json").unlink()  # so the hook has to validate it itself
    push = subprocess.run(["git", "push", "origin", "main"], cwd=repo, env=env, capture_output=True, text=True)
    assert push.returncode == 0, push.stderr
    assert "st#prod#" in push.stderr and "validating st@v2" in push.stderr
    git(other, "fetch", "-q", "origin")
    assert [r.version for r in api.list_releases("st", repo=other) if "prod" in r.stages] == ["v2"]

    # a stage tag pointing at a broken version is refused by the hook
    api.promote("st@v3", "staging", repo=repo)
    (repo / "artifacts" / "st" / "keras" / "v3" / "model.keras").write_bytes(b"broken")
    push = subprocess.run(["git", "push", "origin", "main"], cwd=repo, env=env, capture_output=True, text=True)
    assert push.returncode != 0 and "st@v3" in push.stderr
    assert "st#staging" not in git(origin, "tag", "-l")
