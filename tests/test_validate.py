"""`kgit validate` and the validation stage: incremental checks of released versions, missing data, dvc repro."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_project, git, kgit, release_once
from support import tamper

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


@pytest.fixture(scope="module")
def released_once(tmp_path_factory: pytest.TempPathFactory, plain_model: Any) -> tuple[Path, Any]:
    """m@v1 released (keras) in a kgit repository, made once for the module (conftest.release_once)."""
    return release_once(tmp_path_factory, plain_model)


@pytest.fixture
def released_repo(released_once: tuple[Path, Any], tmp_path: Path) -> tuple[Path, Any]:
    """A copy of ``released_once``: (repo, m@v1's record)."""
    base, rec = released_once
    return copy_project(base, tmp_path), rec


def test_validate_is_incremental_and_catches_changes(released_repo: tuple[Path, Any]) -> None:
    kgit_repo, rec = released_repo
    first = json.loads(kgit(kgit_repo, "validate", "--json", check=True).stdout)
    assert [r["status"] for r in first] == ["cached"]  # validated while released
    fresh = json.loads(kgit(kgit_repo, "validate", "m@v1", "--recheck", "--json", check=True).stdout)
    assert fresh[0]["status"] == "passed" and fresh[0]["max_abs_diff"] == 0.0
    tamper.tamper_byte(kgit_repo / rec.formats["keras"]["path"])
    proc = kgit(kgit_repo, "validate", "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)[0]
    assert result["status"] == "failed" and result["check"] == "files" and "model.keras" in result["error"]


def test_validate_reports_missing_data_as_missing(released_repo: tuple[Path, Any]) -> None:
    import shutil

    kgit_repo, rec = released_repo
    shutil.rmtree(kgit_repo / rec.formats["keras"]["path"])
    proc = kgit(kgit_repo, "validate", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)[0]["status"] == "missing"


def test_dvc_repro_runs_the_validation_stage(released_repo: tuple[Path, Any]) -> None:
    kgit_repo, rec = released_repo
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ok = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "kgit-validate"], cwd=kgit_repo, env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "m@v1" in ok.stdout, ok.stdout + ok.stderr
    assert git(kgit_repo, "status", "--porcelain") == ""  # dvc.lock already held the stage
    tamper.delete_file(kgit_repo / rec.formats["keras"]["path"])
    bad = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "kgit-validate"], cwd=kgit_repo, env=env, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "missing file(s) reference_inputs.npz" in bad.stdout


SCALE_LAYER = """
import keras

FACTOR = {factor}


@keras.saving.register_keras_serializable(package="scaled")
class Scale(keras.layers.Layer):
    def call(self, x):
        return x * FACTOR


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, Scale()(keras.layers.Dense(3)(inputs)))
    model.compile(optimizer="adam", loss="mse")
    return model
"""


def test_a_reload_that_computes_differently_fails_the_round_trip(kgit_repo: Path, tmp_path: Path) -> None:
    """Every file as released, but the custom layer's code changed since: only reloading the model
    and comparing its outputs with the recorded ones shows it."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "scaled.py").write_text(SCALE_LAYER.format(factor="1.0"))
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{os.environ['PYTHONPATH']}", "PYTHONDONTWRITEBYTECODE": "1"}
    kgit(kgit_repo, "release", "scaled", "--from", "scaled:build", "-f", "keras", env=env, check=True)
    assert (
        json.loads(kgit(kgit_repo, "validate", "scaled@v1", "--recheck", "--json", env=env, check=True).stdout)[0][
            "status"
        ]
        == "passed"
    )
    (code / "scaled.py").write_text(SCALE_LAYER.format(factor="2.5"))
    proc = kgit(kgit_repo, "validate", "scaled@v1", "--recheck", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)[0]
    assert (result["status"], result["check"]) == ("failed", "roundtrip"), result
    assert result["max_abs_diff"] > 1e-3 and result["outputs"][0]["ok"] is False
    assert "differs by" in proc.stderr.splitlines()[-1]
