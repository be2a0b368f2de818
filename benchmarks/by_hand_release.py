"""A release of a ``.keras`` file done by hand, as one whole process (the comparison of
``kgit release NAME --from FILE``; started by bench_release_file.py and bench_large.py).

    python by_hand_release.py SOURCE.keras REPO NAME [RESULT.json]

The sequence a careful user would run with the same libraries: import TensorFlow, load the model,
save it into the repository, reference inputs and outputs, metadata.json, reload it in a fresh
process and compare, ``dvc add`` (DVC's Python API), ``git add``, ``git commit``, ``git tag -a``.
RESULT.json, if given: {"phases": {phase: seconds}} measured from the start of this process.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

CHECK = """
import sys
import numpy as np
import keras
folder = sys.argv[1]
model = keras.models.load_model(folder + "/model.keras")
ref = np.load(folder + "/reference.npz")
got = np.asarray(model(ref["inputs"], training=False))
sys.exit(0 if np.max(np.abs(got - ref["outputs"])) <= 1e-6 else 1)
"""


def main(argv: list[str]) -> int:
    source, repo, name = Path(argv[0]), Path(argv[1]), argv[2]
    phases: dict[str, float] = {}
    last = _T0

    def lap(phase: str) -> None:
        nonlocal last
        now = time.perf_counter()
        phases[phase] = now - last
        last = now

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    lap("start (Python, TensorFlow)")
    model = keras.models.load_model(source)
    lap("load")
    rel = Path("artifacts") / name / "keras" / "v1"
    folder = repo / rel
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    inputs = np.random.default_rng(0).standard_normal((3, *shape)).astype("float32")
    outputs = np.asarray(model(inputs, training=False))
    np.savez(folder / "reference.npz", inputs=inputs, outputs=outputs)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    (folder / "metadata.json").write_text(
        json.dumps(
            {
                "name": name,
                "version": "v1",
                "format": "keras",
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "git_commit": commit,
                "optimizer": type(model.optimizer).__name__ if model.optimizer else None,
                "libraries": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
                "inputs": [list(inputs.shape[1:]), "float32"],
                "outputs": [list(outputs.shape[1:]), "float32"],
            },
            indent=2,
        )
    )
    lap("save")
    check = subprocess.run([sys.executable, "-c", CHECK, str(folder)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"the reloaded model differs or failed to load: {check.stderr[-2000:]}")
    lap("validate")
    from dvc.repo import Repo as DvcRepo

    os.chdir(repo)
    with contextlib.redirect_stdout(io.StringIO()), DvcRepo(str(repo)) as dvc:
        dvc.add([str(rel)])
    lap("dvc add")
    for args in (
        ["add", f"{rel}.dvc", f"{rel.parent}/.gitignore"],
        ["commit", "-q", "--no-verify", "-m", f"Release {name} v1"],
        ["tag", "-a", f"{name}@v1.0.0", "-m", f"{name} v1"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    lap("git")
    if len(argv) > 3:
        Path(argv[3]).write_text(json.dumps({"phases": phases}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
