"""`kgit diff`: what changed between two releases, from git alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kgit as api

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


def test_diff_between_releases(kgit_repo: Path, plain_model, guide_model) -> None:  # type: ignore[no-untyped-def]
    api.release(
        plain_model, "d", formats="keras", repo=kgit_repo, hyperparams={"lr": 0.1, "epochs": 3}, dataset_id="set-1"
    )
    api.release(
        guide_model,
        "d",
        formats=["keras", "h5"],
        repo=kgit_repo,
        hyperparams={"lr": 0.2, "batch": 8},
        dataset_id="set-2",
    )
    from conftest import kgit

    result = json.loads(kgit(kgit_repo, "diff", "d@v1", "d@latest", "--json", check=True).stdout)
    changes = {(c["section"], c["key"]): (c["a"], c["b"]) for c in result["changes"]}
    assert changes[("hyperparameters", "lr")] == (0.1, 0.2)
    assert changes[("hyperparameters", "epochs")] == (3, None)
    assert changes[("hyperparameters", "batch")] == (None, 8)
    assert changes[("dataset", "id")] == ("set-1", "set-2")
    assert changes[("formats", "h5")] == (None, "yes")
    assert ("signature", "input x") in changes and ("signature", "input features") in changes
    assert ("sizes", "keras") in changes
    assert ("libraries", "tensorflow") not in changes  # same machine, same versions
    same = json.loads(kgit(kgit_repo, "diff", "d@v1", "d@v1", "--json", check=True).stdout)
    assert same["changes"] == []
    table = kgit(kgit_repo, "diff", "d@v1", "d@v2", check=True).stdout
    assert "hyperparameters" in table and "set-2" in table
    bad = kgit(kgit_repo, "diff", "d@v1", "d@v9")
    assert bad.returncode == 1 and "not released" in bad.stderr
