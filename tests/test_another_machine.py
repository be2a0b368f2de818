"""Use a release on another machine. Two machines, honestly: separate clones, separate DVC caches,
separate HOME; they share only the git remote and the DVC remote (a local folder, or a real SSH
server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import bare_origin, git
from sshd import start
from support.machine import Machine, cache_files

import kgit as api

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier

FORMATS = ["savedmodel", "keras", "h5", "weights"]

LOAD_EVERY_FORMAT = """
import json, sys
import numpy as np
import kgit
out = {}
for fmt in sys.argv[1:]:
    model = kgit.load("shared", "v1", format=fmt)
    folder = f"artifacts/shared/{fmt}/v1"
    x = np.load(f"{folder}/reference_inputs.npz")["features"]
    got = np.asarray(model(x, training=False))
    out[fmt] = {"outputs": got.tolist(), "compiled": bool(model.compiled)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = start(tmp_path_factory.mktemp("sshd"))
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.mark.parametrize("remote_kind", ["local", "ssh"])
def test_release_on_a_fetch_on_b(tmp_path: Path, guide_model, remote_kind: str, request) -> None:  # type: ignore[no-untyped-def]
    origin = bare_origin(tmp_path)
    a, b = Machine(tmp_path, "a"), Machine(tmp_path, "b")
    store = tmp_path / "dvc-store"
    if remote_kind == "ssh":
        server = request.getfixturevalue("ssh_server")
        remote_url = server.url(store)
        for m in (a, b):
            server.trust(m.home)
    else:
        remote_url = str(store)

    # -- machine A: set up, release every format, push ------------------------------------------
    a.run("git", "clone", "-q", str(origin), str(a.repo), cwd=tmp_path)
    (a.repo / "train.py").write_text("# training code\n")
    a.run("git", "add", "train.py")
    a.run("git", "commit", "-q", "-m", "code")
    a.kgit("init", "--remote", remote_url)
    if remote_kind == "ssh":
        a.run("python-m", "dvc", "remote", "modify", "--local", "kgit", "keyfile", str(server.client_key))
    model_file = tmp_path / "guide.keras"
    guide_model.save(model_file)
    a.kgit(
        "release",
        "shared",
        "--from",
        str(model_file),
        *[x for f in FORMATS for x in ("-f", f)],
        "--builder",
        "support.zoo:guide_model_untrained",
        "--dataset-id",
        "shared-data",
    )
    pushed = a.run("git", "push", "-u", "origin", "main")
    assert "uploading shared@v1" in pushed.stderr
    reference = {
        fmt: np.load(a.repo / f"artifacts/shared/{fmt}/v1/reference_outputs.npz")["output_0"] for fmt in FORMATS
    }
    direct = np.asarray(
        guide_model(np.load(a.repo / "artifacts/shared/keras/v1/reference_inputs.npz")["features"], training=False)
    )

    # -- machine B: clone; list/show before any data -----------------------------------------------
    b.run("git", "clone", "-q", str(origin), str(b.repo), cwd=tmp_path)
    if remote_kind == "ssh":
        b.run("python-m", "dvc", "remote", "modify", "--local", "kgit", "keyfile", str(server.client_key))
    rows = json.loads(b.kgit("list", "--json").stdout)
    assert [(r["name"], r["version"]) for r in rows] == [("shared", "v1")]
    shown = json.loads(b.kgit("show", "shared@v1", "--json").stdout)
    assert shown["dataset"]["id"] == "shared-data"
    assert not (b.repo / "artifacts/shared/keras/v1").exists() and cache_files(b.repo) == 0

    # kgit get fetches only what was asked: one format of one version
    got = json.loads(b.kgit("get", "shared@latest", "--format", "keras", "--json").stdout)
    assert got["formats"]["keras"]["fetched"] is True
    assert (b.repo / "artifacts/shared/keras/v1/model.keras").exists()
    assert not (b.repo / "artifacts/shared/h5/v1").exists()
    keras_only = cache_files(b.repo)
    assert (
        keras_only == 1 + len(json.loads((a.repo / "artifacts/shared/keras/v1/metadata.json").read_text())["files"]) + 1
    )

    # dvc pull restores the rest; kgit validate passes on B (its own fresh validation)
    b.run("python-m", "dvc", "pull")
    for fmt in FORMATS:
        assert (b.repo / f"artifacts/shared/{fmt}/v1/metadata.json").exists()
    validated = json.loads(b.kgit("validate", "shared@v1", "--json").stdout)
    assert {r["format"]: r["status"] for r in validated} == {f: "passed" for f in FORMATS}

    # every format loads on B and reproduces what A recorded (and what A's model computes)
    out = json.loads(b.run(sys.executable, "-c", LOAD_EVERY_FORMAT, *FORMATS).stdout)
    for fmt in FORMATS:
        outputs = np.asarray(out[fmt]["outputs"])
        assert np.max(np.abs(outputs - reference[fmt])) <= 1e-6, fmt
        assert np.max(np.abs(outputs - direct)) <= 1e-5, fmt
        assert out[fmt]["compiled"], fmt

    # kgit.load fetches a missing version by itself
    (b.repo / "artifacts/shared/h5/v1").rename(tmp_path / "moved-away")
    reloaded = json.loads(b.run(sys.executable, "-c", LOAD_EVERY_FORMAT, "h5").stdout)
    assert np.max(np.abs(np.asarray(reloaded["h5"]["outputs"]) - reference["h5"])) <= 1e-6


def test_dvc_artifacts_get_fetches_a_release_without_cloning(tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    origin = bare_origin(tmp_path)
    repo = tmp_path / "a"
    git(tmp_path, "clone", "-q", str(origin), str(repo))
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    api.init(repo, remote=str(tmp_path / "store"))
    api.release(plain_model, "art", formats=["keras", "savedmodel"], repo=repo)
    api.release(plain_model, "art", formats=["keras"], repo=repo, hyperparams={"second": True})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert subprocess.run(["git", "push", "-q", "-u", "origin", "main"], cwd=repo, env=env).returncode == 0
    declared = yaml.safe_load(git(repo, "show", "art@v1.0.0:dvc.yaml"))["artifacts"]["art"]
    assert declared["type"] == "model" and declared["path"] == "artifacts/art/keras/v1"
    out = tmp_path / "fetched"
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "artifacts", "get", str(origin), "art", "--rev", "v1.0.0", "-o", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "metadata.json").read_text())["version"] == "v1"
    latest = tmp_path / "latest"
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "artifacts", "get", str(origin), "art", "-o", str(latest)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and json.loads((latest / "metadata.json").read_text())["version"] == "v2"
