"""Models Keras does not save and reload by itself: mixed precision, a KerasHub task, a subclassed
model, string lookups; and keras.applications code, loaded in a second clone. Each is released from
the object and from a file, validated in a fresh process, loaded, and must resume training exactly
where the original is, or be refused with the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, kgit, new_repo, snapshot

import kgit as api
from kgit.errors import KgitError, one_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    path = new_repo(base, "train.py", "# training code\n")
    api.init(path, remote=str(base / "remote"))
    return path


def _optimizer_values(model: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in model.optimizer.variables]


def assert_same_training_state(loaded: Any, original: Any) -> None:
    assert loaded.compiled
    assert type(loaded.optimizer).__name__ == type(original.optimizer).__name__
    assert int(loaded.optimizer.iterations.numpy()) == int(original.optimizer.iterations.numpy()) > 0
    want, got = _optimizer_values(original), _optimizer_values(loaded)
    assert len(got) == len(want)
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, atol=1e-7)


def assert_resumes(original: Any, loaded: list[Any], x: Any, y: Any) -> None:
    """One more training step on each loaded model gives the weights the original gets (the
    original takes its step last, so it is stepped once)."""
    for model in loaded:
        model.train_on_batch(x, y)
    original.train_on_batch(x, y)
    want = original.get_weights()
    for model in loaded:
        got = model.get_weights()
        assert len(got) == len(want)
        for a, b in zip(want, got):
            np.testing.assert_allclose(a, b, atol=1e-6)


def _load_all(record: Any, repo: Path) -> list[Any]:
    return [api.load(record.name, record.version, format=f, repo=repo) for f in record.formats]


def _refused(repo: Path, match: str, call: Any) -> str:
    before = snapshot(repo)
    with pytest.raises(KgitError, match=match) as info:
        call()
    assert snapshot(repo) == before
    return str(info.value)


# -- mixed precision ------------------------------------------------------------------------------
def test_mixed_precision_training_state_survives_every_source(repo: Path, tmp_path: Path) -> None:
    import keras
    from support import zoo

    before = keras.mixed_precision.global_policy().name
    model = zoo.mixed_precision_model()
    assert keras.mixed_precision.global_policy().name == before  # the zoo put the policy back
    assert type(model.optimizer).__name__ == "LossScaleOptimizer" and len(model.optimizer.variables) == 14
    keras_file, h5_file = tmp_path / "mixed.keras", tmp_path / "mixed.h5"
    model.save(keras_file)  # saved by the user, as a training script would
    model.save(h5_file)
    # Keras alone comes back with a fresh inner optimizer: 10 variables at step 0
    plain = keras.saving.load_model(keras_file)
    assert type(plain.optimizer).__name__ == "Adam" and len(plain.optimizer.variables) == 10
    assert int(plain.optimizer.iterations.numpy()) == 0

    # float16 arithmetic in the exported graph differs from eager by ~2e-4
    from_object = api.release(model, "mixed", formats=["keras", "h5", "savedmodel"], atol=1e-3, repo=repo)
    from_keras = api.release(str(keras_file), "mixed", formats=["keras"], atol=1e-3, repo=repo)
    from_h5 = api.release(str(h5_file), "mixed", formats=["keras"], atol=1e-3, repo=repo)
    folder = repo / from_object.formats["savedmodel"]["path"]
    from_folder = api.release(str(folder), "mixed", formats=["h5"], atol=1e-3, repo=repo)
    from_function = api.release("support.zoo:mixed_precision_model", "mixed", formats=["keras"], atol=1e-3, repo=repo)
    for record in (from_object, from_keras, from_h5, from_folder, from_function):
        assert all(v["ok"] for v in record.validation), record.validation
        optimizer = record.metadata["training"]["optimizer"]
        assert (optimizer["class_name"], optimizer["variables"], optimizer["iterations"]) == ("LossScaleOptimizer", 14, 2)
        assert record.metadata["resumable"] is True
    loaded = [m for r in (from_object, from_keras, from_h5, from_folder) for m in _load_all(r, repo)]
    for m in loaded:
        assert_same_training_state(m, model)
    # kgit's own .keras files hold the optimizer in use, so plain Keras reloads it too
    again = keras.saving.load_model(repo / from_object.formats["keras"]["path"] / "model.keras")
    assert_same_training_state(again, model)
    x, y = zoo.data(8, seed=5)
    assert_resumes(model, loaded, x, y)


# -- KerasHub -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub_model():  # type: ignore[no-untyped-def]
    from support import zoo

    return zoo.hub_classifier()


def test_keras_hub_task_resumes_from_object_and_file(repo: Path, hub_model: Any, tmp_path: Path) -> None:
    import keras
    from support import zoo

    keras_file = tmp_path / "hub.keras"
    hub_model.save(keras_file)
    plain = keras.saving.load_model(keras_file)  # compile() overridden: Keras compiles with defaults
    assert len(plain.optimizer.variables) < len(hub_model.optimizer.variables) == 52

    from_object = api.release(hub_model, "hub", formats=["keras", "savedmodel"], repo=repo)
    from_file = api.release(str(keras_file), "hub", formats=["keras"], repo=repo)
    for record in (from_object, from_file):
        assert all(v["ok"] for v in record.validation)
        assert record.metadata["training"]["optimizer"]["variables"] == 52
        assert any(m.startswith("keras_hub") for m in record.metadata["custom_modules"])
    loaded = _load_all(from_object, repo) + _load_all(from_file, repo)
    for m in loaded:
        assert type(m).__name__ == "BertTextClassifier"
        assert_same_training_state(m, hub_model)
        assert abs(float(m.optimizer.learning_rate.numpy()) - 1e-3) < 1e-9  # the user's, not the task's default
    x, y = zoo.hub_inputs(4, seed=9)
    assert_resumes(hub_model, loaded, x, y)


def test_h5_of_a_registered_task_names_the_formats_that_work(repo: Path, hub_model: Any) -> None:
    message = _refused(repo, "legacy H5 format cannot hold this model",
                       lambda: api.release(hub_model, "hubh5", formats=["h5"], repo=repo))
    assert "keras, savedmodel or weights" in message
    assert "register_keras_serializable" not in message


# -- a model whose training state cannot come back: refused with the fix, or released on request --
def test_unrestorable_state_is_refused_unless_inference_only(repo: Path, tmp_path: Path) -> None:
    from support import zoo

    model = zoo.own_compile_model()
    message = _refused(repo, "--inference-only", lambda: api.release(model, "owncompile", formats=["keras"], repo=repo))
    assert "OwnCompile overrides compile()" in message
    record = api.release(model, "owncompile", formats=["keras", "savedmodel"], inference_only=True, repo=repo)
    assert record.metadata["resumable"] is False
    with zipfile.ZipFile(repo / record.formats["keras"]["path"] / "model.keras") as zf:
        assert "compile_config" not in json.loads(zf.read("config.json"))
    for m in _load_all(record, repo):
        assert getattr(m, "optimizer", None) is None or not m.compiled
    # the same answer from a file: refused with the fix, released when asked
    source = tmp_path / "own.keras"
    model.save(source)
    _refused(repo, "OwnCompile overrides compile.*--inference-only",
             lambda: api.release(str(source), "owncompile", formats=["keras"], repo=repo))
    assert api.release(str(source), "owncompile", formats=["keras"], inference_only=True, repo=repo).metadata["resumable"] is False


def test_inference_only_from_the_cli_is_recorded_and_shown(repo: Path, tmp_path: Path) -> None:
    from support import zoo

    model = zoo.plain_model()
    source = tmp_path / "plain.keras"
    model.save(source)
    proc = kgit(repo, "release", "infer", "--from", str(source), "-f", "keras", "-f", "h5", "--inference-only", "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["metadata"]["resumable"] is False
    assert record["metadata"]["training"]["optimizer"]["class_name"] == "Adam"  # what it was trained with
    shown = kgit(repo, "show", "infer@v1", check=True).stdout
    assert "resumable" in shown and "inference only" in shown
    assert json.loads(kgit(repo, "show", "infer@v1", "--json", check=True).stdout)["resumable"] is False
    loaded = api.load("infer", "v1", format="h5", repo=repo)
    assert not loaded.compiled
    api.release(model, "trainable", formats=["keras"], repo=repo)
    assert "training resumes" in kgit(repo, "show", "trainable@v1", check=True).stdout
    # kgit list --json (git tags only): each format's entry in the tag says whether it is resumable
    listed = {r["name"]: r for r in json.loads(kgit(repo, "list", "--json", check=True).stdout)}
    assert {f: i.get("resumable") for f, i in listed["infer"]["formats"].items()} == {"keras": False, "h5": False}
    assert listed["trainable"]["formats"]["keras"].get("resumable") is True


def test_exported_savedmodel_needs_inference_only(repo: Path, tmp_path: Path) -> None:
    from support import zoo

    exported = tmp_path / "exported"
    zoo.plain_model().export(str(exported), verbose=False)
    _refused(repo, "no optimizer state.*--inference-only",
             lambda: api.release(str(exported), "exported", formats=["savedmodel"], repo=repo))
    record = api.release(str(exported), "exported", formats=["savedmodel"], inference_only=True, repo=repo)
    assert record.metadata["resumable"] is False


# -- subclassed models ------------------------------------------------------------------------------
def test_built_subclassed_model_records_its_build_shapes(repo: Path, tmp_path: Path) -> None:
    from support import zoo

    model = zoo.subclassed_model()
    source = tmp_path / "sub.keras"
    model.save(source)
    from_object = api.release(model, "sub", formats=["keras", "savedmodel"], repo=repo)
    from_file = api.release(str(source), "sub", formats=["keras"], repo=repo)
    for record in (from_object, from_file):
        sig = record.metadata["signature"]
        assert [(s["shape"], s["dtype"]) for s in sig["inputs"]] == [([None, 4], "float32")]
        assert [s["shape"] for s in sig["outputs"]] == [[None, 2]]
        assert record.metadata["reference"]["generated"] is True
    loaded = _load_all(from_object, repo) + _load_all(from_file, repo)
    for m in loaded:
        assert type(m).__name__ == "TinySubclassed"
        assert_same_training_state(m, model)
    x, y = zoo.data(8, seed=6)
    assert_resumes(model, loaded, x, y)
    message = _refused(repo, "legacy H5 format cannot hold this model",
                       lambda: api.release(zoo.subclassed_model(), "subh5", formats=["h5"], repo=repo))
    assert "keras, savedmodel or weights" in message


def test_unbuilt_subclassed_model_is_refused_with_the_fix(repo: Path) -> None:
    from support import zoo

    message = _refused(repo, "has not been built", lambda: api.release(zoo.TinySubclassed(), "unbuilt", repo=repo))
    assert "--reference-input" in message


# -- strings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", ["string_lookup_model", "text_vectorization_model"])
def test_generated_strings_exercise_the_vocabulary(repo: Path, factory: str, tmp_path: Path) -> None:
    from support import zoo

    model = getattr(zoo, factory)()
    name = factory.replace("_", "-")
    source = tmp_path / "strings.keras"
    model.save(source)
    from_object = api.release(model, name, formats=["keras", "savedmodel"], repo=repo)
    from_file = api.release(str(source), name, formats=["keras"], repo=repo)
    folder = repo / from_object.formats["keras"]["path"]
    inputs = np.load(folder / "reference_inputs.npz")
    words = next(iter(inputs.values())).ravel().tolist()
    known = [w for w in words if any(v in w for v in zoo.WORDS)]
    assert len(known) == len(words) - 1 and len(set(known)) > 1  # the model's own words, and one unknown
    outputs = next(iter(np.load(folder / "reference_outputs.npz").values()))
    assert len({tuple(row) for row in outputs.round(6)}) == len(outputs)  # each row looked up differently
    loaded = _load_all(from_object, repo) + _load_all(from_file, repo)
    for m in loaded:
        assert_same_training_state(m, model)
    x, y = zoo.lookup_data(4, seed=3)
    batch = zoo.strings(zoo.sentences(x) if factory == "text_vectorization_model" else x)
    assert_resumes(model, loaded, batch, y)


@pytest.mark.parametrize("dtype", ["unicode", "bytes", "object"])
def test_user_string_reference_inputs_are_accepted(repo: Path, dtype: str, tmp_path: Path) -> None:
    from support import zoo

    words = np.array([["red", "blue"], ["cyan", "green"], ["green", "nope"]])
    arrays = {"unicode": words, "bytes": np.char.encode(words, "utf-8"), "object": words.astype(object)}
    if dtype == "unicode":  # from a file, as --reference-input gives it
        path = tmp_path / "ref.npz"
        np.savez(path, words=arrays[dtype])
        proc = kgit(repo, "release", f"given-{dtype}", "--from", "support.zoo:string_lookup_model", "-f", "keras",
                    "--reference-input", str(path), "--json")
        assert proc.returncode == 0, proc.stderr
        metadata = json.loads(proc.stdout)["metadata"]
    else:
        metadata = api.release(zoo.string_lookup_model(), f"given-{dtype}", formats=["keras"],
                               reference_inputs={"words": arrays[dtype]}, repo=repo).metadata
    assert metadata["reference"]["generated"] is False
    assert metadata["signature"]["inputs"][0]["dtype"] == "string"
    numbers = {"words": np.zeros((2, 2), dtype="float32")}
    _refused(repo, "dtype float32, the model expects string",
             lambda: api.release(zoo.string_lookup_model(), "given-numbers", reference_inputs=numbers, repo=repo))


# -- messages and the manual ------------------------------------------------------------------------
def test_long_messages_are_cut_at_a_word_boundary() -> None:
    from kgit.formats import _explain_load_error

    text = " ".join(f"word{i}" for i in range(200))
    message = str(_explain_load_error(Path("m.keras"), ValueError(text)))
    assert message.endswith(" …")
    shown = message.split(": ", 2)[2].removesuffix(" …").split()
    assert shown == text.split()[:len(shown)] and 10 < len(shown) < 200  # whole words only
    assert one_line("short\nmessage") == "short message"


def test_git_kgit_help_shows_the_manual(tmp_path: Path) -> None:
    """`git kgit --help` is `git help kgit`, which runs `man git-kgit`: pip installs the page into
    <prefix>/share/man/man1, where man looks for a <prefix>/bin on PATH."""
    source, wheels = tmp_path / "source", tmp_path / "wheels"  # a copy: building writes build/ beside it
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("kgit", "man"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(wheels)], check=True, capture_output=True, cwd=tmp_path)
    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(next(wheels.glob("kgit-*.whl"))) as zf:
        pages = [n for n in zf.namelist() if "/data/share/man/man1/" in n]
        assert sorted(Path(n).name for n in pages) == ["git-kgit.1", "kgit.1"]
        for n in pages:
            target = prefix / "share" / "man" / "man1" / Path(n).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(n))
    (prefix / "bin").mkdir()
    exe = Path(sys.executable).with_name("git-kgit")
    (prefix / "bin" / "git-kgit").symlink_to(exe)
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "PAGER", "GIT_PAGER")}
    env.update({"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": "100"})
    proc = subprocess.run(["git", "kgit", "--help"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "GIT-KGIT(1)" in proc.stdout and "kgit release [OPTIONS] NAME" in proc.stdout
    assert "--inference-only" in proc.stdout
    # every command is in the page (regenerate with scripts/make_man.py after changing the CLI)
    import typer

    from kgit.cli import app

    top = typer.main.get_command(app)
    page = (ROOT / "man" / "git-kgit.1").read_text()
    for name in top.list_commands(typer.Context(top)):  # type: ignore[attr-defined]
        assert f"kgit {name}" in page, name


# -- tf_keras (Keras 2) -------------------------------------------------------------------------------
def test_tf_keras_model_releases_with_its_training_state(repo: Path, tmp_path: Path) -> None:
    import tf_keras
    from support import zoo

    model = zoo.tf_keras_model()
    saved_dir, h5_file = tmp_path / "tfk_savedmodel", tmp_path / "tfk.h5"
    model.save(str(saved_dir), save_format="tf")  # Keras 2's SavedModel, with the optimizer
    model.save(str(h5_file), save_format="h5")
    plain = tf_keras.models.load_model(str(saved_dir))  # tf_keras alone: a fresh optimizer
    assert int(plain.optimizer.iterations.numpy()) == 0

    from_object = api.release(model, "tfk", formats=["savedmodel", "h5", "weights"],
                              builder="support.zoo:tf_keras_model_untrained", repo=repo)
    from_dir = api.release(str(saved_dir), "tfk", formats=["savedmodel"], repo=repo)
    from_h5 = api.release(str(h5_file), "tfk", formats=["h5"], repo=repo)
    for record in (from_object, from_dir, from_h5):
        assert all(v["ok"] for v in record.validation), record.validation
        meta = record.metadata
        assert meta["keras_flavour"] == "tf_keras" and meta["libraries"]["tf_keras"] == tf_keras.__version__
        assert (meta["training"]["optimizer"]["variables"], meta["training"]["optimizer"]["iterations"]) == (9, 2)
    assert (repo / from_object.formats["savedmodel"]["path"] / "keras_metadata.pb").is_file()
    loaded = [m for r in (from_object, from_dir, from_h5) for m in _load_all(r, repo)]
    for m in loaded:
        assert isinstance(m, tf_keras.Model)
        assert int(m.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 2
        want = [np.asarray(v) for v in model.optimizer.variables()]
        got = [np.asarray(v) for v in m.optimizer.variables()]
        assert len(got) == len(want)
        for a, b in zip(want, got):
            np.testing.assert_allclose(a, b, atol=1e-7)
    x, y = zoo.data(8, seed=7)
    assert_resumes(model, loaded, x, y)
    _refused(repo, "releases as savedmodel, h5, weights, not keras",
             lambda: api.release(model, "tfk-keras", formats=["keras"], repo=repo))
    bare = api.release(model, "tfk", formats=["h5"], inference_only=True, repo=repo)
    assert bare.metadata["resumable"] is False and bare.metadata["keras_flavour"] == "tf_keras"
    assert not api.load("tfk", bare.version, repo=repo)._is_compiled  # no optimizer, no compile config


def test_tf_keras_source_without_the_package_says_how_to_install(repo: Path, tmp_path: Path) -> None:
    from support import zoo

    saved_dir = tmp_path / "tfk_savedmodel"
    zoo.tf_keras_model().save(str(saved_dir), save_format="tf")
    before = snapshot(repo)
    # this interpreter cannot import tf_keras, as if it were not installed
    code = "import sys\nsys.modules['tf_keras'] = None\nfrom kgit.cli import main\nmain(sys.argv[1:])\n"
    proc = subprocess.run([sys.executable, "-c", code, "release", "tfk-missing", "--from", str(saved_dir)],
                          cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "kgit: error: this is a tf_keras (Keras 2) model, and tf_keras is not installed here: pip install 'kgit[tf-keras]'")
    assert snapshot(repo) == before


# -- third-party model code, in a teammate's clone ---------------------------------------------------
def test_keras_application_resumes_in_a_second_clone(tmp_path: Path) -> None:
    """keras.applications' code (not ours) released from the object and from a .keras file, pushed
    (the hook uploads the data), then fetched and loaded in another clone: same training state."""
    from support import zoo
    from support.world import World, dvc_md5, has_version_data
    from support.world import kgit as kgit_in

    (tmp_path / "world").mkdir()
    w = World.create(tmp_path / "world")
    model = zoo.application_model()
    assert type(model).__name__ == "Functional" and model.name.startswith("MobileNetV3Small")
    source = tmp_path / "app.keras"
    model.save(source)
    from_object = api.release(model, "app", formats=["savedmodel", "keras"], repo=w.repo)
    from_file = api.release(str(source), "app", formats=["keras"], repo=w.repo)
    for record in (from_object, from_file):
        assert all(v["ok"] for v in record.validation), record.validation
        assert record.metadata["resumable"] is True
        assert record.metadata["training"]["optimizer"]["iterations"] == 1
    # the SavedModel's checkpoint holds each weight once (Keras' export alone writes them twice)
    variables = w.repo / from_object.formats["savedmodel"]["path"] / "variables"
    weights = sum(np.asarray(v).nbytes for v in model.weights)
    assert weights < sum(f.stat().st_size for f in variables.glob("variables.data-*")) < 1.1 * weights
    proc = w.push("main")
    assert proc.returncode == 0, proc.stderr
    assert {"app@v1.0.0", "app@v2.0.0"} <= set(w.origin_tags())
    dvc_files = {(r.version, f): f"artifacts/app/{f}/{r.version}.dvc" for r in (from_object, from_file) for f in r.formats}
    for dvc_file in dvc_files.values():
        assert has_version_data(w.store, dvc_md5(w.repo, dvc_file)), dvc_file

    other = w.clone("teammate")
    data_files = {"savedmodel": "saved_model.pb", "keras": "model.keras"}
    for record in (from_object, from_file):
        for fmt in record.formats:
            assert not (other / record.formats[fmt]["path"] / data_files[fmt]).exists(), "data before kgit get"
        proc = kgit_in(other, "get", f"app@{record.version}")
        assert proc.returncode == 0, proc.stderr
    loaded = [api.load("app", version, format=fmt, repo=other) for version, fmt in dvc_files]
    assert len(loaded) == 3
    for m in loaded:
        assert m.name == model.name and len(m.layers) == len(model.layers)
        assert_same_training_state(m, model)
    x, y = zoo.application_data(4, seed=1)
    assert_resumes(model, loaded, x, y)
