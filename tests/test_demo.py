"""`kgit demo`: the README's main-job command works from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import git, kgit

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


def test_demo_releases_two_versions(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    proc = kgit(tmp_path, "demo", str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    repo = target / "project"
    assert git(repo, "tag", "-l").split() == ["circle#prod#1", "circle@v1.0.0", "circle@v2.0.0"]
    rows = json.loads(kgit(repo, "list", "--json", check=True).stdout)
    assert [r["version"] for r in rows] == ["v1", "v2"]
    v1 = json.loads(kgit(repo, "show", "circle@v1", "--json", check=True).stdout)
    v2 = json.loads(kgit(repo, "show", "circle@v2", "--json", check=True).stdout)
    assert v1["hyperparameters"]["learning_rate"] == 0.01 and v2["hyperparameters"]["learning_rate"] == 0.05
    assert "already released" in proc.stdout  # the narrated refusal
    # metrics measured on each released artifact by --evaluate; the gates let v2 into prod, not v1
    acc = {r["version"]: r["metrics"]["holdout.accuracy"] for r in rows}
    assert acc["v2"] >= 0.9 > acc["v1"] and all(
        set(r["measured"]) == {"holdout.accuracy", "holdout.loss"} for r in rows
    )
    assert "circle@v1 has holdout.accuracy" in proc.stdout and [r["stages"] for r in rows] == [[], ["prod"]]
    assert (target / "dvc-remote").is_dir()
    # step 6 pushed: the tags reached origin and the hook uploaded the data
    assert git(target / "origin.git", "tag", "-l").split() == ["circle#prod#1", "circle@v1.0.0", "circle@v2.0.0"]
    assert any((target / "dvc-remote" / "files" / "md5").rglob("*.dir"))
    # the last step wrote the registry report, with a chart of each measured metric
    assert (target / "report" / "models" / "circle" / "v2.html").is_file()
    assert 'data-metric="holdout.accuracy"' in (target / "report" / "models" / "circle.html").read_text()


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    proc = kgit(tmp_path, "demo", str(tmp_path / "busy"))
    assert proc.returncode == 1 and "not empty" in proc.stderr
