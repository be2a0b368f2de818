"""Models Keras does not save and reload by itself: mixed precision, KerasHub (a backbone and a task),
a subclassed model, string lookups, tf_keras (Keras 2), and keras.applications code. Each is released
from the object and from the user's own file, validated in a fresh process, pushed, loaded in a second
clone, and must resume training exactly where the original is, or be refused with the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, kgit, new_repo, snapshot

import kgit as api
from kgit.core.errors import KgitError, one_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    path = new_repo(base, "train.py", "# training code\n")
    api.init(path, remote=str(base / "remote"))
    return path


def _optimizer_values(model: Any) -> list[np.ndarray]:
    from kgit.models.training_state import optimizer_variables

    return [np.asarray(v) for v in optimizer_variables(model.optimizer)]


def assert_same_training_state(loaded: Any, original: Any) -> None:
    """Same optimizer class, step and variable values (Keras 3 or tf_keras)."""
    from kgit.models.training_state import is_compiled

    assert is_compiled(loaded)
    assert type(loaded.optimizer).__name__ == type(original.optimizer).__name__
    assert int(loaded.optimizer.iterations.numpy()) == int(original.optimizer.iterations.numpy()) > 0
    want, got = _optimizer_values(original), _optimizer_values(loaded)
    assert len(got) == len(want)
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, atol=1e-7)


def assert_resumes(original: Any, loaded: list[Any], x: Any, y: Any, atol: float = 1e-6) -> None:
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
            np.testing.assert_allclose(a, b, atol=atol)


def _load_all(record: Any, repo: Path) -> list[Any]:
    return [api.load(record.name, record.version, format=f, repo=repo) for f in record.formats]


def _refused(repo: Path, match: str, call: Any) -> str:
    before = snapshot(repo)
    with pytest.raises(KgitError, match=match) as info:
        call()
    assert snapshot(repo) == before
    return str(info.value)


# -- the fleet: every kind of model released, pushed and cloned once -----------------------------
@dataclass
class Kind:
    """One kind of model in the fleet: how it is built, saved by its user, released and stepped."""

    build: str  # support.zoo factory: the trained original
    batch: Callable[[], tuple[Any, Any]]  # one more training step's data
    formats: tuple[str, ...] = ("savedmodel", "keras")  # released from the object
    file: str = ".keras"  # the user's own save, released too (as its own format)
    release_atol: float = 1e-6
    serve: bool = False  # also ask saved_model_cli (TensorFlow Serving's view)


def _batch(factory: str, *args: Any, **kwargs: Any) -> Callable[[], tuple[Any, Any]]:
    def make() -> tuple[Any, Any]:
        from support import zoo

        return getattr(zoo, factory)(*args, **kwargs)

    return make


def _lookup_batch(sentences: bool) -> Callable[[], tuple[Any, Any]]:
    def make() -> tuple[Any, Any]:
        from support import zoo

        x, y = zoo.lookup_data(4, seed=3)
        return zoo.strings(zoo.sentences(x) if sentences else x), y

    return make


FLEET = {
    "application": Kind("application_model", _batch("application_data", 4, seed=1), serve=True),
    "hub-backbone": Kind("hub_backbone", _batch("hub_backbone_data", 4, seed=21), serve=True),
    "hub-task": Kind("hub_classifier", _batch("hub_inputs", 4, seed=22)),
    "tf-keras": Kind("tf_keras_model", _batch("data", 8, seed=23), formats=("savedmodel", "h5"), file=".h5"),
    # the exported graph computes in float16 where Keras' eager call differs by ~2e-4
    "mixed": Kind("mixed_precision_model", _batch("data", 8, seed=24), release_atol=1e-3),
    "subclassed": Kind("subclassed_model", _batch("data", 8, seed=25)),
    "string-lookup": Kind("string_lookup_model", _lookup_batch(sentences=False), serve=True),
    "text-vectorization": Kind("text_vectorization_model", _lookup_batch(sentences=True)),
}
FILE_FORMATS = {".keras": "keras", ".h5": "h5"}
DATA_FILES = {"savedmodel": "saved_model.pb", "keras": "model.keras", "h5": "model.h5"}


@dataclass
class Fleet:
    world: Any
    clone: Path  # a fresh clone: its own, empty DVC cache
    models: dict[str, Any]  # kind -> the original model
    releases: dict[str, list[Any]]  # kind -> [from the object, from the user's file]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """Every kind released from the object and from the user's file into one repository, one real
    `git push` (the pre-push hook uploads the data to the DVC remote folder), one fresh clone."""
    from support import zoo
    from support.world import World

    base = tmp_path_factory.mktemp("fleet")
    (base / "world").mkdir()
    w = World.create(base / "world")
    models, releases = {}, {}
    for name, kind in FLEET.items():
        model = models[name] = getattr(zoo, kind.build)()
        source = base / f"{name}{kind.file}"
        model.save(str(source))  # the user's own file, as a training script writes it
        releases[name] = [
            api.release(model, name, formats=list(kind.formats), atol=kind.release_atol, repo=w.repo),
            api.release(str(source), name, formats=[FILE_FORMATS[kind.file]], atol=kind.release_atol, repo=w.repo),
        ]
    proc = w.push("main")
    assert proc.returncode == 0, proc.stderr
    return Fleet(w, w.clone("teammate"), models, releases)


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
        assert (optimizer["class_name"], optimizer["variables"], optimizer["iterations"]) == (
            "LossScaleOptimizer",
            14,
            2,
        )
        assert record.metadata["resumable"] is True
    loaded = [m for r in (from_object, from_keras, from_h5, from_folder) for m in _load_all(r, repo)]
    for m in loaded:
        assert_same_training_state(m, model)
    # kgit's own .keras files hold the optimizer in use, so plain Keras reloads it too
    again = keras.saving.load_model(repo / from_object.formats["keras"]["path"] / "model.keras")
    assert_same_training_state(again, model)
    x, y = zoo.data(8, seed=5)
    assert_resumes(model, loaded, x, y)


# -- KerasHub (resumed in a clone by the fleet) --------------------------------------------------
def test_keras_hub_task_recompiles_with_the_users_compile_config(fleet: Fleet, tmp_path: Path) -> None:
    import keras

    hub_model = fleet.models["hub-task"]
    keras_file = tmp_path / "hub.keras"
    hub_model.save(keras_file)
    plain = keras.saving.load_model(keras_file)  # compile() overridden: Keras compiles with defaults
    assert len(plain.optimizer.variables) < len(hub_model.optimizer.variables) == 52
    for record in fleet.releases["hub-task"]:
        assert record.metadata["training"]["optimizer"]["variables"] == 52
        assert any(m.startswith("keras_hub") for m in record.metadata["custom_modules"])
        for m in _load_all(record, fleet.world.repo):
            assert type(m).__name__ == "BertTextClassifier"
            assert abs(float(m.optimizer.learning_rate.numpy()) - 1e-3) < 1e-9  # the user's, not the task's default


def test_h5_of_a_registered_task_names_the_formats_that_work(repo: Path, fleet: Fleet) -> None:
    message = _refused(
        repo,
        "legacy H5 format cannot hold this model",
        lambda: api.release(fleet.models["hub-task"], "hubh5", formats=["h5"], repo=repo),
    )
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
    _refused(
        repo,
        "OwnCompile overrides compile.*--inference-only",
        lambda: api.release(str(source), "owncompile", formats=["keras"], repo=repo),
    )
    assert (
        api.release(str(source), "owncompile", formats=["keras"], inference_only=True, repo=repo).metadata["resumable"]
        is False
    )


def test_inference_only_from_the_cli_is_recorded_and_shown(repo: Path, tmp_path: Path) -> None:
    from support import zoo

    model = zoo.plain_model()
    source = tmp_path / "plain.keras"
    model.save(source)
    proc = kgit(
        repo, "release", "infer", "--from", str(source), "-f", "keras", "-f", "h5", "--inference-only", "--json"
    )
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
    _refused(
        repo,
        "no optimizer state.*--inference-only",
        lambda: api.release(str(exported), "exported", formats=["savedmodel"], repo=repo),
    )
    record = api.release(str(exported), "exported", formats=["savedmodel"], inference_only=True, repo=repo)
    assert record.metadata["resumable"] is False


# -- subclassed models (resumed in a clone by the fleet) -----------------------------------------
def test_built_subclassed_model_records_its_build_shapes(repo: Path, fleet: Fleet) -> None:
    from support import zoo

    for record in fleet.releases["subclassed"]:
        sig = record.metadata["signature"]
        assert [(s["shape"], s["dtype"]) for s in sig["inputs"]] == [([None, 4], "float32")]
        assert [s["shape"] for s in sig["outputs"]] == [[None, 2]]
        assert record.metadata["reference"]["generated"] is True
    message = _refused(
        repo,
        "legacy H5 format cannot hold this model",
        lambda: api.release(zoo.subclassed_model(), "subh5", formats=["h5"], repo=repo),
    )
    assert "keras, savedmodel or weights" in message


def test_unbuilt_subclassed_model_is_refused_with_the_fix(repo: Path) -> None:
    from support import zoo

    message = _refused(repo, "has not been built", lambda: api.release(zoo.TinySubclassed(), "unbuilt", repo=repo))
    assert "--reference-input" in message


# -- strings (resumed in a clone by the fleet) ---------------------------------------------------
@pytest.mark.parametrize("name", ["string-lookup", "text-vectorization"])
def test_generated_strings_exercise_the_vocabulary(fleet: Fleet, name: str) -> None:
    from support import zoo

    for record in fleet.releases[name]:
        folder = fleet.world.repo / record.formats["keras"]["path"]
        inputs = np.load(folder / "reference_inputs.npz")
        words = next(iter(inputs.values())).ravel().tolist()
        known = [w for w in words if any(v in w for v in zoo.WORDS)]
        assert len(known) == len(words) - 1 and len(set(known)) > 1  # the model's own words, and one unknown
        outputs = next(iter(np.load(folder / "reference_outputs.npz").values()))
        assert len({tuple(row) for row in outputs.round(6)}) == len(outputs)  # each row looked up differently


@pytest.mark.parametrize("dtype", ["unicode", "bytes", "object"])
def test_user_string_reference_inputs_are_accepted(repo: Path, dtype: str, tmp_path: Path) -> None:
    from support import zoo

    words = np.array([["red", "blue"], ["cyan", "green"], ["green", "nope"]])
    arrays = {"unicode": words, "bytes": np.char.encode(words, "utf-8"), "object": words.astype(object)}
    if dtype == "unicode":  # from a file, as `kgit release --reference-input` gives it to the API
        path = tmp_path / "ref.npz"
        np.savez(path, words=arrays[dtype])
        metadata = api.release(
            "support.zoo:string_lookup_model", f"given-{dtype}", formats=["keras"], reference_inputs=path, repo=repo
        ).metadata
    else:
        metadata = api.release(
            zoo.string_lookup_model(),
            f"given-{dtype}",
            formats=["keras"],
            reference_inputs={"words": arrays[dtype]},
            repo=repo,
        ).metadata
    assert metadata["reference"]["generated"] is False
    assert metadata["signature"]["inputs"][0]["dtype"] == "string"
    numbers = {"words": np.zeros((2, 2), dtype="float32")}
    _refused(
        repo,
        "dtype float32, the model expects string",
        lambda: api.release(zoo.string_lookup_model(), "given-numbers", reference_inputs=numbers, repo=repo),
    )


# -- messages and the manual ------------------------------------------------------------------------
def test_long_messages_are_cut_at_a_word_boundary() -> None:
    from kgit.models.formats import _explain_load_error

    text = " ".join(f"word{i}" for i in range(200))
    message = str(_explain_load_error(Path("m.keras"), ValueError(text)))
    assert message.endswith(" …")
    shown = message.split(": ", 2)[2].removesuffix(" …").split()
    assert shown == text.split()[: len(shown)] and 10 < len(shown) < 200  # whole words only
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
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(source),
            "-w",
            str(wheels),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
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

    from_object = api.release(
        model, "tfk", formats=["savedmodel", "h5", "weights"], builder="support.zoo:tf_keras_model_untrained", repo=repo
    )
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
    _refused(
        repo,
        "releases as savedmodel, h5, weights, not keras",
        lambda: api.release(model, "tfk-keras", formats=["keras"], repo=repo),
    )
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
    proc = subprocess.run(
        [sys.executable, "-c", code, "release", "tfk-missing", "--from", str(saved_dir)],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "kgit: error: this is a tf_keras (Keras 2) model, and tf_keras is not installed here: pip install 'kgit[tf-keras]'"
    )
    assert snapshot(repo) == before


# -- every kind of model, in a teammate's clone -----------------------------------------------------
@pytest.mark.parametrize("name", list(FLEET))
def test_every_kind_resumes_in_a_second_clone(fleet: Fleet, name: str, tmp_path: Path) -> None:
    """Third-party model code (keras.applications, KerasHub), Keras 2, mixed precision, subclassed and
    string models: validated at release, pushed, then fetched and loaded in another clone with its
    own DVC cache, where one more training step gives the weights the original gets."""
    from support.world import dvc_md5, has_version_data
    from support.world import kgit as kgit_in

    kind, original = FLEET[name], fleet.models[name]
    loaded = []
    for record in fleet.releases[name]:
        assert all(v["ok"] for v in record.validation), record.validation
        assert record.metadata["resumable"] is True
        assert f"{name}@{record.version}.0.0" in fleet.world.origin_tags()
        for fmt, info in record.formats.items():
            dvc_file = f"artifacts/{name}/{fmt}/{record.version}.dvc"
            assert has_version_data(fleet.world.store, dvc_md5(fleet.world.repo, dvc_file)), dvc_file
            folder = fleet.clone / info["path"]
            assert not (folder / DATA_FILES[fmt]).exists(), "data in the clone before it was asked for"
            if name == "application":  # fetched by the command line; the others by kgit.load itself
                proc = kgit_in(fleet.clone, "get", f"{name}@{record.version}", "-f", fmt)
                assert proc.returncode == 0, proc.stderr
            model = api.load(name, record.version, format=fmt, repo=fleet.clone)
            assert type(model).__name__ == type(original).__name__
            assert_same_training_state(model, original)
            loaded.append(model)
            if fmt == "savedmodel" and kind.serve:
                assert_served(folder, tmp_path / f"served-{record.version}")
    assert len(loaded) == len(kind.formats) + 1
    assert_resumes(original, loaded, *kind.batch())


def assert_served(folder: Path, out: Path) -> None:
    """TensorFlow Serving's view of a release: `saved_model_cli run` of serving_default on the
    recorded reference inputs gives the recorded outputs."""
    meta = json.loads((folder / "metadata.json").read_text())
    inputs = folder / meta["reference"]["inputs_file"]
    spec = ";".join(f"{key}={inputs}[{key}]" for key in np.load(inputs).files)
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("saved_model_cli")),
            "run",
            "--dir",
            str(folder),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            spec,
            "--outdir",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = np.load(folder / meta["reference"]["outputs_file"])
    served = sorted(out.glob("*.npy"))
    assert len(served) == len(expected.files) > 0
    by_name = {p.stem: np.load(p) for p in served}
    for i, key in enumerate(expected.files):
        got = by_name[key] if key in by_name else np.load(served[i])
        np.testing.assert_allclose(got, expected[key], atol=meta["reference"]["atol"])


def test_savedmodel_holds_each_weight_once(fleet: Fleet, tmp_path: Path) -> None:
    """The savedmodel folder is about the model plus its optimizer state: variables/ holds each
    weight once, and assets.extra/model.keras only what variables/ does not (architecture, compile
    config, optimizer variables)."""
    import io

    import h5py

    from kgit.core.metadata import hash_folder

    model = fleet.models["application"]  # a real network: batch norm statistics, depthwise convolutions
    folder = fleet.world.repo / fleet.releases["application"][0].formats["savedmodel"]["path"]
    weights = sum(np.asarray(v).nbytes for v in model.weights)
    optimizer = sum(np.asarray(v).nbytes for v in model.optimizer.variables)
    data = sum(f.stat().st_size for f in (folder / "variables").glob("variables.data-*"))
    assert weights <= data < 1.05 * weights
    stored: dict[str, int] = {}

    def add(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            stored[name.split("/")[0]] = stored.get(name.split("/")[0], 0) + obj.id.get_storage_size()

    embedded = folder / "assets.extra" / "model.keras"
    with zipfile.ZipFile(embedded) as zf, h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r") as fh:
        fh.visititems(add)
    assert stored == {"optimizer": optimizer}  # no layer weight in the embedded model
    model.save(tmp_path / "whole.keras")  # Keras' own file holds them all
    assert embedded.stat().st_size < (tmp_path / "whole.keras").stat().st_size - 0.99 * weights
    assert "assets.extra/weights_in_variables.json" in hash_folder(folder)  # in the recorded sha256s


def test_savedmodel_layouts_old_new_and_damaged(tmp_path: Path) -> None:
    """A folder written before (complete model.keras, no weights_in_variables.json) loads the old
    way; the new layout's model.keras lacks the layer weights (plain Keras refuses it rather than
    giving random weights) and kgit fills them from variables/, checking each; a damaged variables/
    or map is refused with the fix."""
    import keras
    from support import zoo

    from kgit.models import formats, model_source, savedmodel

    model = zoo.guide_model(seed=3)
    new, old = tmp_path / "new", tmp_path / "old"
    for folder in (new, old):
        folder.mkdir()
        formats.save(model, "savedmodel", folder)
    # the old layout: the whole model in model.keras, as kgit wrote it before
    (old / savedmodel.WEIGHTS_MAP).unlink()
    (old / savedmodel.KERAS_FILE).unlink()
    model.save(old / savedmodel.KERAS_FILE)
    with zipfile.ZipFile(new / savedmodel.KERAS_FILE) as zf:
        lean = zf.getinfo("model.weights.h5").file_size
    with zipfile.ZipFile(old / savedmodel.KERAS_FILE) as zf:
        full = zf.getinfo("model.weights.h5").file_size
    kernels = sum(np.asarray(v).nbytes for v in model.weights)
    assert full - lean >= kernels  # every layer weight left out, and only there
    entries = json.loads((new / savedmodel.WEIGHTS_MAP).read_text())["weights"]
    assert len(entries) == len(model.weights) and all(e["variable"].startswith("variables/") for e in entries)
    with pytest.raises(ValueError, match="could not be loaded"):
        keras.saving.load_model(new / savedmodel.KERAS_FILE)

    def load(folder: Path) -> Any:  # the guide model's custom classes: the module its release records
        return formats.load_keras_model(
            folder, "savedmodel", custom_objects={}, modules=["support.zoo"], builder=None, unsafe=False
        )

    for folder in (new, old):
        for again in (load(folder), model_source.obtain_model(str(folder), {}, False)):
            assert len(again.weights) == len(model.weights)
            for a, b in zip(model.weights, again.weights):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            assert_same_training_state(again, model)

    # a damaged release: a weight's bytes in variables/ differ from what the map recorded
    bad_map = json.loads((new / savedmodel.WEIGHTS_MAP).read_text())
    bad_map["weights"][0]["sha256"] = "0" * 64
    (new / savedmodel.WEIGHTS_MAP).write_text(json.dumps(bad_map))
    with pytest.raises(
        KgitError, match=r"does not hold the weight .* the release is damaged, fetch it again with kgit get"
    ):
        load(new)
    (new / savedmodel.WEIGHTS_MAP).write_text("{not json")
    with pytest.raises(KgitError, match=r"weights_in_variables.json is damaged .*: fetch the release again"):
        load(new)
