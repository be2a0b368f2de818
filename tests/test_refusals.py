"""Bad input: one line on stderr, exit 1, no traceback, and nothing changed (work tree, index,
HEAD, tags, DVC cache)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused, git, kgit, new_repo, snapshot

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


@pytest.fixture(scope="module")
def repo_v1(tmp_path_factory: pytest.TempPathFactory, plain_model):  # type: ignore[no-untyped-def]
    """An initialised repo with plain@v1 released, and model files to release from."""
    import kgit as api

    base = tmp_path_factory.mktemp("refusals")
    repo = new_repo(base, "train.py", "# training code\n")
    api.init(repo, remote=str(base / "remote"))
    api.release(plain_model, "plain", formats="keras", repo=repo)
    files = base / "files"
    files.mkdir()
    plain_model.save(files / "plain.keras")
    plain_model.save(files / "plain.h5")
    plain_model.export(str(files / "exported"), verbose=False)
    return repo, files


def test_not_a_git_repo(tmp_path: Path, repo_v1) -> None:  # type: ignore[no-untyped-def]
    _, files = repo_v1
    outside = tmp_path / "plain-folder"
    outside.mkdir()
    proc = kgit(outside, "release", "m", "--from", str(files / "plain.keras"))
    assert proc.returncode == 1 and "not inside a git repository" in proc.stderr and "Traceback" not in proc.stderr
    assert list(outside.iterdir()) == []


def test_not_initialised(git_repo: Path, repo_v1) -> None:  # type: ignore[no-untyped-def]
    _, files = repo_v1
    assert_refused(git_repo, "release", "m", "--from", str(files / "plain.keras"), expect="run `kgit init` first")


@pytest.mark.parametrize("name", ["../x", "a/b", "has space", "Upper", "a.b", "x-", "x;id", "$(id)"])
def test_bad_names(repo_v1, name: str) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(repo, "release", name, "--from", str(files / "plain.keras"), expect="invalid model name")


@pytest.mark.parametrize("version", ["1.x", "v1.2", "vv1", "../v9", "v1.2.3-rc1", "v0.0.0"])
def test_bad_versions(repo_v1, version: str) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(
        repo, "release", "plain", "--from", str(files / "plain.keras"), "--version", version, expect="version"
    )


@pytest.mark.parametrize("version", ["v1", "v1.0.0", "1.0.0"])
def test_existing_version_is_never_overwritten(repo_v1, version: str) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(
        repo,
        "release",
        "plain",
        "--from",
        str(files / "plain.keras"),
        "-f",
        "keras",
        "-f",
        "h5",
        "--version",
        version,
        expect="already released",
    )


def test_unknown_format(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(
        repo, "release", "plain", "--from", str(files / "plain.keras"), "-f", "onnx", expect="unknown format"
    )


def test_bad_bump(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(
        repo, "release", "plain", "--from", str(files / "plain.keras"), "--bump", "huge", expect="invalid bump"
    )


def test_weights_without_builder(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(repo, "release", "plain", "--from", str(files / "plain.keras"), "-f", "weights", expect="--builder")


def test_missing_model_file(repo_v1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, _ = repo_v1
    assert_refused(repo, "release", "plain", "--from", str(tmp_path / "nope.keras"), expect="does not exist")


def test_corrupt_keras_file(repo_v1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"definitely not a zip file" * 10)
    assert_refused(repo, "release", "plain", "--from", str(bad), expect="not a valid .keras file")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((files / "plain.keras").read_bytes()[:2000])
    assert_refused(repo, "release", "plain", "--from", str(truncated), expect="not a valid .keras file")


def test_truncated_h5_file(repo_v1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    truncated = tmp_path / "truncated.h5"
    data = (files / "plain.h5").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert_refused(repo, "release", "plain", "--from", str(truncated), expect="not a valid HDF5 model file")


def test_not_a_model_file(repo_v1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, _ = repo_v1
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    assert_refused(repo, "release", "plain", "--from", str(txt), expect="unsupported model file")


def test_savedmodel_without_variables(repo_v1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    broken = tmp_path / "broken"
    shutil.copytree(files / "exported", broken)
    shutil.rmtree(broken / "variables")
    assert_refused(repo, "release", "plain", "--from", str(broken), expect="variables/ folder is missing")


def test_hyperparameters_not_json(repo_v1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    params = tmp_path / "params.yaml"
    params.write_text("trained_on: 2024-01-01\n")  # YAML makes this a date, which JSON cannot hold
    assert_refused(
        repo,
        "release",
        "plain",
        "--from",
        str(files / "plain.keras"),
        "--params",
        str(params),
        expect="not JSON-serialisable",
    )


def test_hyperparameters_not_json_from_python(repo_v1, plain_model) -> None:  # type: ignore[no-untyped-def]
    import kgit as api
    from kgit.core.errors import KgitError

    repo, _ = repo_v1
    before = snapshot(repo)
    with pytest.raises(KgitError, match="not JSON-serialisable"):
        api.release(plain_model, "plain", repo=repo, hyperparams={"callback": object()})
    with pytest.raises(KgitError, match="not JSON-serialisable"):
        api.release(plain_model, "plain", repo=repo, hyperparams={"lr": float("nan")})
    assert snapshot(repo) == before


def test_reference_input_not_matching_signature(repo_v1, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, x=np.ones((2, 5), dtype="float32"))
    assert_refused(
        repo,
        "release",
        "plain",
        "--from",
        str(files / "plain.keras"),
        "--reference-input",
        str(wrong_shape),
        expect="has shape [2, 5], the model expects [None, 4]",
    )
    wrong_name = tmp_path / "name.npz"
    np.savez(wrong_name, y=np.ones((2, 4), dtype="float32"))
    assert_refused(
        repo,
        "release",
        "plain",
        "--from",
        str(files / "plain.keras"),
        "--reference-input",
        str(wrong_name),
        expect="do not match the model's inputs",
    )


def test_nan_in_reference_outputs(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, _ = repo_v1
    assert_refused(repo, "release", "nanmodel", "--from", "support.zoo:nan_model", expect="NaN or inf")


def test_dirty_repo(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    (repo / "train.py").write_text("# changed, not committed\n")
    try:
        assert_refused(
            repo, "release", "plain", "--from", str(files / "plain.keras"), expect="uncommitted changes in train.py"
        )
    finally:
        git(repo, "checkout", "--", "train.py")


def test_unregistered_custom_class_names_the_class_and_both_fixes(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, _ = repo_v1
    assert_refused(repo, "release", "custom", "--from", "support.zoo:unregistered_model", expect="Unregistered")
    proc = kgit(repo, "release", "custom", "--from", "support.zoo:unregistered_model")
    assert "register_keras_serializable" in proc.stderr and "--custom-object MODULE:Unregistered" in proc.stderr


def test_custom_objects_option_makes_it_loadable(kgit_repo: Path) -> None:
    proc = kgit(
        kgit_repo,
        "release",
        "custom",
        "--from",
        "support.zoo:unregistered_model",
        "-f",
        "keras",
        "--custom-object",
        "support.zoo:Unregistered",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout)["metadata"]["custom_objects"] == ["support.zoo:Unregistered"]


def test_class_defined_in_the_training_script_is_caught(kgit_repo: Path) -> None:
    """The failure a teammate would hit later, caught at release time."""
    script = kgit_repo.parent / "train_script.py"
    script.write_text(
        "import keras, kgit, sys\n"
        "@keras.saving.register_keras_serializable(package='Mine')\n"
        "class Doubler(keras.layers.Layer):\n"
        "    def call(self, x):\n        return 2 * x\n"
        "inp = keras.Input((3,), name='x')\n"
        "model = keras.Model(inp, Doubler()(inp))\n"
        "try:\n    kgit.release(model, 'scripted', repo=sys.argv[1], formats='keras')\n"
        "except kgit.KgitError as e:\n    print('ERR', e)\n"
    )
    before = snapshot(kgit_repo)
    proc = subprocess.run([sys.executable, str(script), str(kgit_repo)], capture_output=True, text=True)
    assert "ERR custom class Doubler is defined in the training script (__main__)" in proc.stdout, (
        proc.stdout + proc.stderr
    )
    assert snapshot(kgit_repo) == before


def test_lambda_refused_unless_unsafe(repo_v1, kgit_repo: Path) -> None:  # type: ignore[no-untyped-def]
    repo, _ = repo_v1
    assert_refused(repo, "release", "lam", "--from", "support.zoo:lambda_model", expect="--unsafe")
    proc = kgit(kgit_repo, "release", "lam", "--from", "support.zoo:lambda_model", "-f", "keras", "--unsafe", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"unsafe": true' in proc.stdout


def test_bad_atol_and_params(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(repo, "release", "plain", "--from", str(files / "plain.keras"), "--atol", "-1", expect="--atol")
    assert_refused(
        repo, "release", "plain", "--from", str(files / "plain.keras"), "--param", "novalue", expect="KEY=VALUE"
    )


def test_unknown_release_in_show(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, _ = repo_v1
    assert_refused(repo, "show", "plain@v9", expect="not released")
    assert_refused(repo, "show", "nosuch@v1", expect="no releases of model")
    assert_refused(repo, "show", "plain@1.x", expect="invalid version")
    latest = json.loads(kgit(repo, "show", "plain", "--json", check=True).stdout)  # a bare name: the latest
    assert (latest["name"], latest["version"]) == ("plain", "v1")


def test_plain_savedmodel_only_as_savedmodel(repo_v1) -> None:  # type: ignore[no-untyped-def]
    repo, files = repo_v1
    assert_refused(
        repo,
        "release",
        "exported",
        "--from",
        str(files / "exported"),
        "-f",
        "keras",
        expect="only be released as --format savedmodel",
    )
