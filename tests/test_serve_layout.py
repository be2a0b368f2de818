"""`kgit serve-layout`: releases laid out as TensorFlow Serving reads them, checked with the clients
available here: `saved_model_cli run` on the laid-out folders, models.config parsed with
tensorflow-serving-api's protos, a PredictRequest built for serving_default. Real git, DVC, Keras.

Every test but the first two shares one released world (four releases and a push, about 90 s here),
so they are marked slow."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import snapshot
from support.world import World, kgit

import kgit as api
from kgit.core.errors import InvalidVersionError
from kgit.serving import layout as serving_layout
from kgit.serving import serving_config

SAVED_MODEL_CLI = str(Path(sys.executable).with_name("saved_model_cli"))
V1, V2, V21 = 1_000_000, 2_000_000, 2_001_000  # serving numbers of srv@v1, srv@v2, srv@v2.1.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, plain_model) -> World:  # type: ignore[no-untyped-def]
    """srv@v1 (prod), srv@v2 (staging, also keras), srv@v2.1.0, konly@v1 (keras only), other@v1;
    pushed to origin."""
    from support import zoo

    w = World.create(tmp_path_factory.mktemp("serve-world"))
    api.release(plain_model, "srv", formats=["savedmodel"], repo=w.repo)
    api.release(zoo.plain_model(1), "srv", formats=["savedmodel", "keras"], repo=w.repo)
    api.release(zoo.plain_model(2), "srv", version="v2.1.0", formats=["savedmodel"], repo=w.repo)
    api.release(plain_model, "konly", formats=["keras"], repo=w.repo)
    api.release(zoo.plain_model(3), "other", formats=["savedmodel"], repo=w.repo)
    api.promote("srv@v1", "prod", repo=w.repo)
    api.promote("srv@v2", "staging", repo=w.repo)
    proc = w.push("main")
    assert proc.returncode == 0, proc.stderr
    return w


@pytest.fixture
def w(world: World, tmp_path: Path) -> World:
    return world.copy(tmp_path / "w")


def release_folder(w: World, version: str) -> Path:
    return w.repo / "artifacts" / "srv" / "savedmodel" / version


def files_state(folder: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, size and mtime of every file: what "untouched" means for a release folder."""
    return {
        p.relative_to(folder).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_size,
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def out_state(out: Path) -> dict[str, tuple[str, int]]:
    """Every entry under the serving folder with its content hash and inode."""
    return (
        {
            p.relative_to(out).as_posix(): (
                hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                p.stat().st_ino,
            )
            for p in sorted(out.rglob("*"))
        }
        if out.exists()
        else {}
    )


def layout(repo: Path, *args: str) -> dict[str, Any]:
    proc = kgit(repo, "serve-layout", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def rows(result: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {(v["version"], v["serving_version"], tuple(v["labels"]), v["action"]) for v in result["versions"]}


def parsed_config(out: Path) -> Any:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse((out / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())


def config_of(out: Path) -> dict[str, tuple[str, str, list[int], dict[str, int]]]:
    return {
        c.name: (c.base_path, c.model_platform, list(c.model_version_policy.specific.versions), dict(c.version_labels))
        for c in parsed_config(out).model_config_list.config
    }


# -- the integer versions and the config text ------------------------------------------------------
def test_serving_numbers_are_stable_unique_and_ordered() -> None:
    assert serving_config.serving_version("v1") == serving_config.serving_version("v1.0.0") == 1_000_000
    assert serving_config.serving_version("v1.2.3") == 1_002_003
    assert serving_config.serving_version("v0.0.5") == 5 != serving_config.serving_version("v5")
    highest = serving_config.serving_version("v999999999.999.999")
    assert highest == 999_999_999_999_999 < 2**63 - 1  # TF Serving's versions are int64
    versions = ["v0.0.1", "v0.1.0", "v1", "v1.0.1", "v1.999.999", "v2", "v2.1.0", "v10", "v999999999.999.999"]
    numbers = [serving_config.serving_version(v) for v in versions]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    for bad in ("v1.1000.0", "v1.0.1000"):
        with pytest.raises(InvalidVersionError, match="must be below 1000"):
            serving_config.serving_version(bad)


def test_config_text_parses_with_the_serving_protos() -> None:
    odd = '/srv/mo"dels\\ with space\né/x'
    models = [
        serving_config.ServedModel("b-model", odd, [2_000_000, 1_000_000], {"prod": 2_000_000, "staging": 1_000_000}),
        serving_config.ServedModel("a_model", "/models/a_model", [5], {}),
    ]
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(serving_config.config_text(models), model_server_config_pb2.ModelServerConfig())
    got = {
        c.name: (c.base_path, c.model_platform, list(c.model_version_policy.specific.versions), dict(c.version_labels))
        for c in config.model_config_list.config
    }
    assert got == {
        "a_model": ("/models/a_model", "tensorflow", [5], {}),
        "b-model": (odd, "tensorflow", [1_000_000, 2_000_000], {"prod": 2_000_000, "staging": 1_000_000}),
    }


# -- laying out ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_laid_out_versions_reproduce_the_recorded_outputs_in_saved_model_cli(w: World) -> None:
    out = w.base / 'serving "root" é'  # the config must quote what a path can hold
    before = {v: files_state(release_folder(w, v)) for v in ("v1", "v2", "v2.1.0")}
    result = layout(w.repo, "srv#prod", "srv@v2.1.0", "--out", str(out))
    assert rows(result) == {("v1", V1, ("prod",), "added"), ("v2.1.0", V21, (), "added")}
    assert {v["how"] for v in result["versions"]} == {"hardlink"} and result["changed"] is True
    assert sorted(os.listdir(out)) == ["kgit-serving.json", "models.config", "srv"]
    assert sorted(os.listdir(out / "srv")) == [str(V1), str(V21)]  # all-digit folders only, no leftovers
    assert config_of(out) == {"srv": (str(out / "srv"), "tensorflow", [V1, V21], {"prod": V1})}

    outputs = {}
    for number, version in ((V1, "v1"), (V21, "v2.1.0")):
        folder = out / "srv" / str(number)
        # hard links to the verified release files; kgit's Keras copy for training is not served
        assert os.path.samefile(folder / "saved_model.pb", release_folder(w, version) / "saved_model.pb")
        assert not (folder / "assets.extra").exists() and not (folder / "kgit.sig").exists()
        assert (release_folder(w, version) / "assets.extra" / "model.keras").is_file()  # released, not served
        meta = json.loads((folder / "metadata.json").read_text())
        assert (meta["name"], meta["version"]) == ("srv", version)
        shown = subprocess.run(
            [SAVED_MODEL_CLI, "show", "--dir", str(folder), "--tag_set", "serve", "--signature_def", "serving_default"],
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0, shown.stderr
        assert "inputs['x']" in shown.stdout and "DT_FLOAT" in shown.stdout
        result_dir = w.base / f"cli-{number}"
        run = subprocess.run(
            [
                SAVED_MODEL_CLI,
                "run",
                "--dir",
                str(folder),
                "--tag_set",
                "serve",
                "--signature_def",
                "serving_default",
                "--inputs",
                f"x={folder / 'reference_inputs.npz'}[x]",
                "--outdir",
                str(result_dir),
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        recorded = np.load(folder / "reference_outputs.npz")
        assert len(recorded.files) == 1
        got = np.load(result_dir / "output_0.npy")
        expected = recorded[recorded.files[0]]
        assert got.shape == expected.shape and np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, rtol=0, atol=max(meta["reference"]["atol"], 1e-6))
        outputs[version] = got
    assert not np.allclose(outputs["v1"], outputs["v2.1.0"])  # two different models: no mix-up possible
    assert {v: files_state(release_folder(w, v)) for v in before} == before  # releases untouched


@pytest.mark.slow
def test_a_predict_request_built_for_serving_default_matches_the_signature(w: World) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    out = w.base / "serving"
    api.serve_layout(["srv#prod"], out, repo=w.repo)
    labels = config_of(out)["srv"][3]
    folder = out / "srv" / str(labels["prod"])
    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    spec = signature.structured_input_signature[1]
    recorded = json.loads((folder / "metadata.json").read_text())["signature"]["inputs"]
    assert set(spec) == {i["name"] for i in recorded} == {"x"}

    inputs = np.load(folder / "reference_inputs.npz")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "srv"
    request.model_spec.signature_name = "serving_default"
    request.model_spec.version_label = "prod"
    for name in inputs.files:
        request.inputs[name].CopyFrom(tf.make_tensor_proto(inputs[name]))
    wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # as the server receives it
    assert wire.model_spec.version_label in labels
    assert set(wire.inputs) == set(spec)
    for name, tensor in wire.inputs.items():
        assert tensor.dtype == spec[name].dtype.as_datatype_enum
        assert tf.TensorShape([d.size for d in tensor.tensor_shape.dim]).is_compatible_with(spec[name].shape)
    answer = signature(**{n: tf.constant(tf.make_ndarray(t)) for n, t in wire.inputs.items()})
    expected = np.load(folder / "reference_outputs.npz")
    np.testing.assert_allclose(answer["output_0"].numpy(), expected[expected.files[0]], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_rerun_follows_promotions_and_changes_nothing_when_nothing_is_new(w: World) -> None:
    out = w.base / "serving"
    first = layout(w.repo, "srv", "--out", str(out))  # NAME: every version in a stage
    assert rows(first) == {("v1", V1, ("prod",), "added"), ("v2", V2, ("staging",), "added")}
    assert config_of(out)["srv"][2:] == ([V1, V2], {"prod": V1, "staging": V2})
    settled = out_state(out)
    stamps = {f: (out / f).stat().st_mtime_ns for f in ("models.config", "kgit-serving.json")}

    again = layout(w.repo, "srv", "--out", str(out))
    assert again["changed"] is False and {v["action"] for v in again["versions"]} == {"kept"}
    assert out_state(out) == settled  # same files, same inodes: nothing rewritten
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps
    assert "already in sync" in kgit(w.repo, "serve-layout", "srv", "--out", str(out)).stderr

    proc = kgit(w.repo, "promote", "srv@v2.1.0", "prod")
    assert proc.returncode == 0, proc.stderr
    moved = layout(w.repo, "srv", "--out", str(out))
    assert rows(moved) == {
        ("v2", V2, ("staging",), "kept"),
        ("v2.1.0", V21, ("prod",), "added"),
        ("v1", V1, (), "removed"),
    }
    assert sorted(os.listdir(out / "srv")) == [str(V2), str(V21)]
    assert config_of(out)["srv"][2:] == ([V2, V21], {"prod": V21, "staging": V2})
    # prod moved onto a version this run added: TF Serving needs to be told (see docs/operations.md)
    assert first["notes"] == [] and len(moved["notes"]) == 1
    assert f"label prod of srv moves to {V21}" in moved["notes"][0]
    assert "--force_allow_any_version_labels_for_unavailable_models" in moved["notes"][0]
    assert (out / "srv" / str(V2)).stat().st_ino == settled[f"srv/{V2}"][1]  # the kept version was not rebuilt
    manifest = json.loads((out / "kgit-serving.json").read_text())["models"]["srv"]
    assert {n: (e["tag"], e["how"]) for n, e in manifest["versions"].items()} == {
        str(V2): ("srv@v2.0.0", "hardlink"),
        str(V21): ("srv@v2.1.0", "hardlink"),
    }
    assert (release_folder(w, "v1") / "saved_model.pb").is_file()  # removing a link never removes the release

    # the folder as a container sees it; copies instead of links; one stage only
    proc = kgit(w.repo, "serve-layout", "srv#staging", "--out", str(out), "--base-path", "/models/", "--copy")
    assert proc.returncode == 0, proc.stderr
    assert "removed" in proc.stdout and "v2.1.0" in proc.stdout
    assert config_of(out) == {"srv": ("/models/srv", "tensorflow", [V2], {"staging": V2})}
    assert (out / "srv" / str(V2)).stat().st_ino == settled[f"srv/{V2}"][1]
    # a model no longer selected leaves models.config and the folder
    both = layout(w.repo, "srv#staging", "other@v1", "--out", str(out))
    assert ("v1", V1, (), "added") in rows(both) and set(config_of(out)) == {"srv", "other"}
    alone = layout(w.repo, "srv#staging", "--out", str(out))
    assert ("v1", V1, (), "removed") in rows(alone) and [v["model"] for v in alone["versions"]] == ["srv", "other"]
    assert set(config_of(out)) == {"srv"} and sorted(os.listdir(out)) == ["kgit-serving.json", "models.config", "srv"]
    assert set(json.loads((out / "kgit-serving.json").read_text())["models"]) == {"srv"}

    fresh = w.base / "copies"
    copied = layout(w.repo, "srv@v2", "--out", str(fresh), "--copy")
    assert [v["how"] for v in copied["versions"]] == ["copy"]
    assert not os.path.samefile(fresh / "srv" / str(V2) / "saved_model.pb", release_folder(w, "v2") / "saved_model.pb")
    assert files_state(fresh / "srv" / str(V2)).keys() == files_state(out / "srv" / str(V2)).keys()


@pytest.mark.slow
def test_serve_layout_imports_neither_tensorflow_nor_dvc(w: World) -> None:
    out = w.base / "serving"
    code = (
        "import sys, kgit; r = kgit.serve_layout(['srv#prod'], sys.argv[1]); "
        "print(r.versions[0].serving_version, sorted(m for m in ('tensorflow', 'keras', 'dvc', 'h5py') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=w.repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(V1), "[]"]


# -- refusals and atomicity ------------------------------------------------------------------------
def refused(w: World, out: Path, *args: str, expect: str) -> None:
    before, repo_before = out_state(out), snapshot(w.repo)
    proc = kgit(w.repo, "serve-layout", *args, "--out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("kgit: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert expect in proc.stderr, proc.stderr
    assert out_state(out) == before and snapshot(w.repo) == repo_before


@pytest.mark.slow
def test_refusals_are_one_line_and_lose_nothing(w: World) -> None:
    out = w.base / "serving"
    refused(w, out, "konly@v1", expect="konly@v1 has no savedmodel format (it has keras)")
    assert (
        "--from artifacts/konly/keras/v1/model.keras -f savedmodel"
        in kgit(w.repo, "serve-layout", "konly@v1", "--out", str(out)).stderr
    )
    (w.base / "link-to-release").symlink_to(release_folder(w, "v1"))
    refused(w, w.base / "link-to-release", "srv@v1", expect="inside the repository's releases")
    refused(w, out, "konly", expect="no version of konly is in a stage")
    refused(w, out, "nosuch#prod", expect="no releases of model 'nosuch'")
    refused(w, out, "srv#canary", expect="no version of srv is in stage 'canary'")
    refused(w, out, "srv@v7", expect="srv@v7 is not released")
    refused(w, out, "Srv", expect="invalid model name")
    refused(w, out, "srv@v1", "--base-path", "/", expect="--base-path is empty")
    assert not out.exists()
    refused(
        w,
        w.repo / "artifacts" / "srv" / "savedmodel" / "v1" / "tfs",
        "srv@v1",
        expect="inside the repository's releases",
    )

    foreign = w.base / "somebody-else"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    refused(w, foreign, "srv@v1", expect="is not empty (notes.txt) and holds no kgit-serving.json")

    layout(w.repo, "srv#prod", "--out", str(out))
    (out / "srv" / str(V21)).mkdir()
    (out / "srv" / str(V21) / "saved_model.pb").write_text("someone's own")
    refused(w, out, "srv#prod", "srv@v2.1.0", expect=f"{out / 'srv' / str(V21)} exists and was not laid out by kgit")
    (out / "srv" / str(V21) / "saved_model.pb").unlink()
    (out / "srv" / str(V21)).rmdir()
    (out / "README").write_text("someone's notes\n")  # not in kgit's way: left alone
    assert rows(layout(w.repo, "srv#prod", "srv@v2.1.0", "--out", str(out))) == {
        ("v1", V1, ("prod",), "kept"),
        ("v2.1.0", V21, (), "added"),
    }
    assert rows(layout(w.repo, "srv#prod", "--out", str(out))) == {
        ("v1", V1, ("prod",), "kept"),
        ("v2.1.0", V21, (), "removed"),
    }
    assert (out / "README").read_text() == "someone's notes\n"
    (out / "srv" / str(V1) / "extra.txt").write_text("edited by hand\n")
    refused(w, out, "srv#prod", expect="was changed after kgit laid it out (extra.txt)")
    (out / "srv" / str(V1) / "extra.txt").unlink()
    (out / "kgit-serving.json").write_text('{"schema_version": 1, "models": {"srv": {"versions": {"5": 3}}}}')
    refused(w, out, "srv#prod", expect="is not a manifest kgit wrote")
    (out / "kgit-serving.json").write_text("{not json")
    refused(w, out, "srv#prod", expect="is not a manifest kgit wrote")

    busy = w.base / "busy"
    layout(w.repo, "srv#prod", "--out", str(busy))
    import fcntl

    fd = os.open(busy, os.O_RDONLY)  # another serve-layout holds the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        refused(w, busy, "srv@v2", expect=f"another kgit serve-layout is writing {busy}")
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_tampered_workspace_copy_is_not_served(w: World) -> None:
    out = w.base / "serving"
    data = next((release_folder(w, "v1") / "variables").glob("variables.data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    refused(w, out, "srv#prod", expect="srv@v1 (savedmodel) does not match its release: files check")
    assert not out.exists() or not any(out.rglob("*.pb"))


@pytest.mark.slow
def test_an_interrupted_layout_leaves_no_visible_version_and_the_rerun_completes(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = w.base / "serving"
    api.serve_layout(["srv#prod"], out, repo=w.repo)
    config_before = (out / "models.config").read_text()
    calls = {"n": 0}
    real = serving_layout.sha256_file

    def interrupted(path: Path, *args: Any) -> str:  # Ctrl-C while the new version's files are checked
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(serving_layout, "sha256_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.serve_layout(["srv#prod", "srv@v2.1.0"], out, repo=w.repo)
    monkeypatch.undo()
    assert sorted(os.listdir(out / "srv")) == [str(V1)]  # no half-built version under an all-digit name
    assert (out / "models.config").read_text() == config_before  # the server's config still names what exists
    pending = json.loads((out / "kgit-serving.json").read_text())["models"]["srv"]["versions"]
    assert pending[str(V21)]["how"] == "pending"  # recorded before it was built: never an unknown folder

    (out / "srv" / f".kgit-old-{V1}-x").mkdir()  # what a kill -9 between rename and delete leaves
    result = api.serve_layout(["srv#prod", "srv@v2.1.0"], out, repo=w.repo)
    assert [(v.serving_version, v.action) for v in result.versions] == [(V1, "kept"), (V21, "added")]
    assert sorted(os.listdir(out / "srv")) == [str(V1), str(V21)]
    assert config_of(out)["srv"][2] == [V1, V21]


@pytest.mark.slow
def test_a_second_clone_fetches_only_the_served_version(w: World) -> None:
    other = w.clone("teammate")
    v1, v2 = (other / "artifacts" / "srv" / "savedmodel" / v for v in ("v1", "v2"))
    assert not v1.exists() and not v2.exists()
    out = w.base / "serving"
    result = layout(other, "srv#prod", "--out", str(out))
    assert rows(result) == {("v1", V1, ("prod",), "added")}
    assert (v1 / "saved_model.pb").is_file() and not v2.exists()  # that version, that format only
    meta = json.loads((out / "srv" / str(V1) / "metadata.json").read_text())
    for rel, sha in meta["files"].items():
        if not rel.startswith("assets.extra/"):  # kgit's extras for training are not served
            assert hashlib.sha256((out / "srv" / str(V1) / rel).read_bytes()).hexdigest() == sha, rel
    assert config_of(out) == {"srv": (str(out / "srv"), "tensorflow", [V1], {"prod": V1})}
