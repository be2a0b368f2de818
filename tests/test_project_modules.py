"""A custom layer registered in a module of the project imports the same way whatever the model
came from (``--from module:function``, a ``.keras`` file) and wherever kgit runs (any folder of
the repository, the installed ``kgit`` script whose sys.path holds no project folder): the
project's root is on the path for the release, the validation process and ``kgit.load``. And
`kgit validate NAME@VERSION -f FORMAT` checks the formats that are here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git

pytestmark = pytest.mark.slow  # real TensorFlow models

LAYERS = """import keras


@keras.saving.register_keras_serializable(package="project")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x
"""

MODEL = """import keras

from layers import Doubler


def build():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, keras.layers.Dense(2, name="y")(Doubler()(inputs)))
"""

# what `pip install` puts in bin/kgit: its own folder first on sys.path, no project folder
SCRIPT = "import sys\nfrom kgit.cli import main\nsys.exit(main())\n"


def run(cwd: Path, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def test_a_custom_layer_of_the_project_loads_from_a_builder_a_file_and_any_folder(
    kgit_repo: Path, tmp_path: Path
) -> None:
    repo = kgit_repo
    (repo / "layers.py").write_text(LAYERS)
    (repo / "model.py").write_text(MODEL)
    (repo / "notebooks").mkdir()
    (repo / "notebooks" / "README").write_text("where people run things from\n")
    git(repo, "add", "layers.py", "model.py", "notebooks")
    git(repo, "commit", "-q", "-m", "a model with a custom layer")
    model_file = tmp_path / "trained.keras"
    saved = subprocess.run(
        [sys.executable, "-c", f"import model; model.build().save({str(model_file)!r})"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert saved.returncode == 0, saved.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kgit_script = bin_dir / "kgit"
    kgit_script.write_text(SCRIPT)
    sub = repo / "notebooks"

    for name, source in (("fromcode", "model:build"), ("fromfile", str(model_file))):
        proc = run(
            sub,
            kgit_script,
            "release",
            name,
            "--from",
            source,
            "-f",
            "keras",
            "-f",
            "savedmodel",
            "--note",
            f"from {source}",
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        meta = json.loads(proc.stdout)["metadata"]
        assert meta["custom_modules"] == ["layers"] and meta["notes"] == f"from {source}"

    # validate one format, from a subfolder, in a fresh process that imports layers.py
    proc = run(sub, kgit_script, "validate", "fromfile@v1", "-f", "keras", "--recheck", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(r["version"], r["format"], r["status"]) for r in json.loads(proc.stdout)] == [
        ("fromfile@v1", "keras", "passed")
    ]

    # a format released but not here: refused with the command that fetches it, which then works
    shutil.rmtree(repo / "artifacts" / "fromfile" / "savedmodel" / "v1")
    proc = run(sub, kgit_script, "validate", "fromfile@v1", "-f", "savedmodel")
    assert proc.returncode == 1 and "fetch it with `kgit get fromfile@v1 -f savedmodel`" in proc.stderr, proc.stderr
    assert run(sub, kgit_script, "get", "fromfile@v1", "-f", "savedmodel", "-q").returncode == 0
    proc = run(sub, kgit_script, "validate", "fromfile@v1", "-f", "savedmodel", "--recheck", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["status"] == "passed", proc.stderr

    # kgit.load from a script in a subfolder (its sys.path: that folder, not the root)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import kgit, numpy as np\n"
            "m = kgit.load('fromfile@v1', format='keras', repo='..')\n"
            "print(type(m.layers[1]).__module__, m.predict(np.ones((1, 3)), verbose=0).shape)",
        ],
        cwd=sub,
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["layers", "(1,", "2)"]
