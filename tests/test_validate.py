"""`kgit validate` and the validation stage: incremental checks of released versions, missing data, dvc repro."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, kgit
from support import tamper

import kgit as api

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


def test_validate_is_incremental_and_catches_changes(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    rec = api.release(plain_model, "inc", formats="keras", repo=kgit_repo)
    first = json.loads(kgit(kgit_repo, "validate", "--json", check=True).stdout)
    assert [r["status"] for r in first] == ["cached"]  # validated while released
    fresh = json.loads(kgit(kgit_repo, "validate", "inc@v1", "--recheck", "--json", check=True).stdout)
    assert fresh[0]["status"] == "passed" and fresh[0]["max_abs_diff"] == 0.0
    tamper.tamper_byte(kgit_repo / rec.formats["keras"]["path"])
    proc = kgit(kgit_repo, "validate", "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)[0]
    assert result["status"] == "failed" and result["check"] == "files" and "model.keras" in result["error"]


def test_validate_reports_missing_data_as_missing(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    import shutil

    rec = api.release(plain_model, "gone", formats="keras", repo=kgit_repo)
    shutil.rmtree(kgit_repo / rec.formats["keras"]["path"])
    proc = kgit(kgit_repo, "validate", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)[0]["status"] == "missing"


def test_dvc_repro_runs_the_validation_stage(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    rec = api.release(plain_model, "staged", formats="keras", repo=kgit_repo)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ok = subprocess.run([sys.executable, "-m", "dvc", "repro", "kgit-validate"], cwd=kgit_repo, env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "staged@v1" in ok.stdout, ok.stdout + ok.stderr
    assert git(kgit_repo, "status", "--porcelain") == ""  # dvc.lock already held the stage
    tamper.delete_file(kgit_repo / rec.formats["keras"]["path"])
    bad = subprocess.run([sys.executable, "-m", "dvc", "repro", "kgit-validate"], cwd=kgit_repo, env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "missing file(s) reference_inputs.npz" in bad.stdout
