"""Releasing and loading: every format's round trip, optimizer state, metadata, layout, tags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import git, kgit

import kgit as api
from kgit.core.metadata import Metadata, sha256_file

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


def _outputs(model, folder: Path) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    ref_in = np.load(folder / "reference_inputs.npz")
    ref_out = np.load(folder / "reference_outputs.npz")
    got = model(ref_in["features"], training=False)
    return np.asarray(got), ref_out["output_0"]


def test_layout_tags_and_commit(released) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    assert record.version == "v1" and record.tag == "guide@v1.0.0"
    assert git(repo, "rev-parse", "guide@v1.0.0^{commit}") == record.commit
    assert git(repo, "cat-file", "-t", "guide@v1.0.0") == "tag"  # annotated
    assert "guide v1" in git(repo, "log", "-1", "--format=%s", record.commit)
    for fmt in ("savedmodel", "keras", "h5", "weights"):
        folder = repo / "artifacts" / "guide" / fmt / "v1"
        assert (folder / "metadata.json").is_file()
        dvc_file = folder.with_name("v1.dvc")
        assert git(repo, "ls-files", str(dvc_file.relative_to(repo))) != ""
        assert git(repo, "ls-files", str(folder.relative_to(repo))) == ""  # bytes are not in git
        assert git(repo, "check-ignore", str(folder.relative_to(repo))) != ""
        md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
        cache = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        assert cache.exists(), "the version's data must be in the DVC cache"
    assert git(repo, "status", "--porcelain") == ""


def test_gto_lists_kgit_releases(released) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("gto")), "show", "guide", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    versions = json.loads(proc.stdout)
    assert any(v["version"] == "v1.0.0" and v["commit_hexsha"] == record.commit for v in versions), versions


@pytest.mark.parametrize("fmt", ["keras", "h5", "savedmodel"])
def test_full_model_formats_resume_training(released, guide_model, fmt: str) -> None:  # type: ignore[no-untyped-def]
    from support import zoo

    repo, _ = released
    loaded = api.load("guide", "v1", format=fmt, repo=repo)
    out, ref = _outputs(loaded, repo / "artifacts" / "guide" / fmt / "v1")
    assert np.max(np.abs(out - ref)) <= 1e-6
    # optimizer state came back: same iteration count and the same slot values
    assert loaded.compiled
    assert int(loaded.optimizer.iterations.numpy()) == int(guide_model.optimizer.iterations.numpy()) > 0
    orig = {v.path: np.asarray(v) for v in guide_model.optimizer.variables}
    got = {v.path: np.asarray(v) for v in loaded.optimizer.variables}
    assert len(orig) == len(got)
    for (_, a), (_, b) in zip(sorted(orig.items()), sorted(got.items())):
        np.testing.assert_allclose(a, b, atol=1e-7)
    # ...so one more training step gives the same weights as on the original (on a copy of it)
    import keras

    twin = keras.models.clone_model(guide_model)
    twin.compile(optimizer=keras.optimizers.Adam(0.01), loss=zoo.WeightedMSE(2.0))
    twin.set_weights(guide_model.get_weights())
    twin.optimizer.build(twin.trainable_variables)
    for dst, src in zip(twin.optimizer.variables, guide_model.optimizer.variables):
        dst.assign(src)
    x, y = zoo.data(8, seed=5)
    twin.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(twin.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_weights_format_rebuilds_with_the_builder(released) -> None:  # type: ignore[no-untyped-def]
    repo, _ = released
    loaded = api.load("guide", "v1", format="weights", repo=repo)
    out, ref = _outputs(loaded, repo / "artifacts" / "guide" / "weights" / "v1")
    assert np.max(np.abs(out - ref)) <= 1e-6
    meta = api.show("guide", "v1", format="weights", repo=repo).metadata
    assert meta.builder == "support.zoo:guide_model_untrained"


def test_savedmodel_serves_with_tensorflow(released) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    repo, _ = released
    folder = repo / "artifacts" / "guide" / "savedmodel" / "v1"
    loaded = tf.saved_model.load(str(folder))
    fn = loaded.signatures["serving_default"]
    x = np.load(folder / "reference_inputs.npz")["features"]
    out = list(fn(features=tf.constant(x)).values())[0].numpy()
    ref = np.load(folder / "reference_outputs.npz")["output_0"]
    assert np.max(np.abs(out - ref)) <= 1e-6


def test_metadata_fields(released) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    folder = repo / "artifacts" / "guide" / "keras" / "v1"
    meta = Metadata.read(folder)
    assert meta.schema_version == 1
    assert (meta.name, meta.version, meta.format) == ("guide", "v1", "keras")
    assert meta.formats == ["savedmodel", "keras", "h5", "weights"]
    assert meta.created_at.endswith("Z")
    assert meta.git.commit == git(repo, "rev-parse", f"{record.commit}^")
    assert meta.git.branch == "main" and meta.git.dirty is False
    assert meta.dataset.id == "guide-data-1"
    assert meta.hyperparameters == {"epochs": 1, "batch_size": 8}
    assert meta.training["optimizer"]["class_name"] == "Adam"
    assert abs(meta.training["optimizer"]["config"]["learning_rate"] - 0.01) < 1e-6
    assert meta.training["loss"]["class_name"] == "WeightedMSE"
    assert meta.training["metrics"] == ["mae"]
    for lib in ("tensorflow", "keras", "python", "kgit", "numpy"):
        assert meta.libraries[lib]
    assert [(s.name, s.shape, s.dtype) for s in meta.signature.inputs] == [("features", [None, 4], "float32")]
    assert [(s.name, s.shape) for s in meta.signature.outputs] == [("output_0", [None, 2])]
    assert meta.reference.atol == 1e-6 and meta.reference.generated
    assert meta.reference.inputs_sha256 == sha256_file(folder / meta.reference.inputs_file)
    assert meta.reference.outputs_sha256 == sha256_file(folder / meta.reference.outputs_file)
    assert set(meta.files) == {"model.keras", "reference_inputs.npz", "reference_outputs.npz"}
    for rel, digest in meta.files.items():
        assert sha256_file(folder / rel) == digest
    assert meta.custom_modules == ["support.zoo"]
    assert meta.notes == "all formats"
    # the same record is in git (the .dvc file's meta), readable before any `dvc pull`
    in_git = yaml.safe_load(git(repo, "show", f"{record.commit}:artifacts/guide/keras/v1.dvc"))["meta"]["kgit"]
    assert in_git == json.loads((folder / "metadata.json").read_text())


def test_list_and_show_read_git_only(released) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    proc = kgit(repo, "list", "--json", check=True)
    rows = json.loads(proc.stdout)
    assert [(r["name"], r["version"], list(r["formats"])) for r in rows] == [
        ("guide", "v1", ["savedmodel", "keras", "h5", "weights"])
    ]
    assert rows[0]["commit"] == record.commit and rows[0]["dataset_id"] == "guide-data-1"
    table = kgit(repo, "list", check=True).stdout
    assert "guide" in table and "v1" in table and "guide-data-1" in table
    shown = json.loads(kgit(repo, "show", "guide@latest", "--json", check=True).stdout)
    assert shown["version"] == "v1" and shown["tag"] == "guide@v1.0.0"
    assert "hyperparameters" in kgit(repo, "show", "guide@v1").stdout


@pytest.mark.parametrize("command", [["list"], ["list", "guide", "--json"], ["show", "guide@v1", "--json"], ["--help"]])
def test_git_only_commands_do_not_import_tensorflow_or_dvc(released, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    repo, _ = released
    code = (
        "import sys\nfrom kgit.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'dvc', 'h5py') if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *command], cwd=repo, capture_output=True, text=True)
    assert "HEAVY=\n" in proc.stderr, proc.stderr


def test_versions_count_up_and_semver_on_request(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    assert api.release(plain_model, "plain", repo=kgit_repo, formats="keras").version == "v1"
    assert api.release(plain_model, "plain", repo=kgit_repo, formats="keras").version == "v2"
    rec = api.release(plain_model, "plain", repo=kgit_repo, formats="keras", bump="minor")
    assert (rec.version, rec.tag) == ("v2.1.0", "plain@v2.1.0")
    rec = api.release(plain_model, "plain", repo=kgit_repo, formats="keras", version="v5.0.1")
    assert rec.version == "v5.0.1"
    assert api.release(plain_model, "plain", repo=kgit_repo, formats="keras").version == "v6"
    assert [r.version for r in api.list_releases("plain", repo=kgit_repo)] == ["v1", "v2", "v2.1.0", "v5.0.1", "v6"]
    assert api.show("plain", "latest", repo=kgit_repo).metadata.version == "v6"


def test_h5_with_string_loss_and_metrics_loads_compiled(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    api.release(plain_model, "plainh5", repo=kgit_repo, formats=["h5"])
    loaded = api.load("plainh5", "v1", repo=kgit_repo)
    assert loaded.compiled
    assert int(loaded.optimizer.iterations.numpy()) == int(plain_model.optimizer.iterations.numpy())
    for a, b in zip(plain_model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)


@pytest.mark.parametrize("factory", ["multi_io_model", "list_io_model", "string_model"])
def test_reference_inputs_are_generated_for_any_signature(kgit_repo: Path, factory: str) -> None:
    from support import zoo

    model = getattr(zoo, factory)()
    fmts = ["keras"] if factory == "string_model" else ["savedmodel", "keras"]
    rec = api.release(model, factory.replace("_", "-"), repo=kgit_repo, formats=fmts)
    assert all(v["ok"] for v in rec.validation)
    again = api.release(model, factory.replace("_", "-"), repo=kgit_repo, formats=fmts)
    # deterministic: the same signature gives the same reference inputs
    a = Path(kgit_repo, rec.formats["keras"]["path"], "reference_inputs.npz")
    b = Path(kgit_repo, again.formats["keras"]["path"], "reference_inputs.npz")
    assert sha256_file(a) == sha256_file(b)


def test_release_from_cli_with_files_params_and_dataset(kgit_repo: Path, guide_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess as sp

    model_file = tmp_path / "guide.keras"
    guide_model.save(model_file)
    (kgit_repo / "data").mkdir()
    (kgit_repo / "data" / "train.csv").write_text("1,2\n")
    sp.run([sys.executable, "-m", "dvc", "add", "-q", "data"], cwd=kgit_repo, check=True)
    (kgit_repo / "params.yaml").write_text("train:\n  lr: 0.01\n  epochs: 3\n")
    git(kgit_repo, "add", "-A")
    git(kgit_repo, "commit", "-q", "-m", "data and params")
    refs = tmp_path / "ref.npz"
    np.savez(refs, features=np.ones((2, 4), dtype="float32"))
    proc = kgit(
        kgit_repo,
        "release",
        "guide",
        "--from",
        str(model_file),
        "-f",
        "keras",
        "--params",
        "params.yaml",
        "--param",
        "seed=7",
        "--param",
        "note=hello",
        "--dataset",
        "data",
        "--reference-input",
        str(refs),
        "--atol",
        "1e-5",
        "--notes",
        "from the CLI",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    meta = record["metadata"]
    assert meta["hyperparameters"] == {"train": {"lr": 0.01, "epochs": 3}, "seed": 7, "note": "hello"}
    assert meta["dataset"]["path"] == "data"
    assert meta["dataset"]["dvc_hash"] == yaml.safe_load((kgit_repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert meta["reference"]["generated"] is False and meta["reference"]["atol"] == 1e-5
    np.testing.assert_array_equal(
        np.load(kgit_repo / record["formats"]["keras"]["path"] / "reference_inputs.npz")["features"], np.ones((2, 4))
    )
    assert "from the CLI" in git(kgit_repo, "log", "-1", "--format=%B")


def test_git_kgit_alias(released) -> None:  # type: ignore[no-untyped-def]
    import shutil

    repo, _ = released
    exe = shutil.which("git-kgit") or str(Path(sys.executable).with_name("git-kgit"))
    assert Path(exe).exists()
    env = {**__import__("os").environ, "PATH": f"{Path(exe).parent}:{__import__('os').environ['PATH']}"}
    proc = subprocess.run(["git", "kgit", "list", "--json"], cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["name"] == "guide"


def test_h5_before_keras_keeps_the_optimizer(kgit_repo: Path) -> None:
    """Keras' H5 writer strips the optimizer from the model's compile config; kgit keeps it, so a
    .keras saved after an .h5 (same release, or a later one) still resumes training."""
    from support import zoo

    model = zoo.guide_model()
    api.release(model, "order", formats=["h5", "keras"], repo=kgit_repo)
    api.release(model, "order", formats=["keras"], repo=kgit_repo)
    assert model.get_compile_config()["optimizer"]["class_name"] == "Adam"  # the user's model is intact
    model.save(kgit_repo.parent / "by-hand.h5")  # the user saving H5 themselves damages the model...
    api.release(model, "order", formats=["keras"], repo=kgit_repo)  # ...kgit repairs it before saving
    for version in ("v1", "v2", "v3"):
        loaded = api.load("order", version, format="keras", repo=kgit_repo)
        assert type(loaded.optimizer).__name__ == "Adam"
        assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
