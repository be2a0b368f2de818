"""One timed release of the ~100 MB model in a fresh process (started by bench_release.py).

    python release_worker.py kgit|manual REPO RESULT.json
    python release_worker.py kgit-file REPO RESULT.json SOURCE.keras

Both modes build the same seeded, compiled model first (untimed), then time from the moment the
model exists, as a training script would have it:

  kgit    ``kgit.release(model, NAME, formats="keras")``; its progress callback marks each step,
          and kgit's own hashing (the wait for the hashes computed during validation) and
          model-save functions are wrapped to time them
  manual  the same steps by hand with the same libraries: model.save, reference inputs and
          outputs, metadata.json, reload in a fresh process and compare, ``dvc add`` (DVC's Python
          API), ``git add``, ``git commit``, ``git tag -a``

``kgit-file`` is the whole process of a release from a ``.keras`` file, timed from this process'
start (Python and TensorFlow's import included): ``kgit.release("SOURCE.keras", NAME, formats="keras")``,
its breakdown for bench_release_file.py (whose by-hand side is by_hand_release.py).

RESULT.json: {"total": seconds, "phases": {phase: seconds}}.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fixtures import LARGE, dense_model  # noqa: E402

NAME = "large"

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


def _kgit(model: Any, repo: Path, t0: float | None = None) -> dict[str, Any]:
    import kgit
    from kgit.models import formats
    from kgit.workflow import releasing

    extra = {"hash": 0.0, "model.save": 0.0}
    hashing: list[tuple[float, float]] = []  # (start, end) of each hash call: taken out of its step

    def timing(key: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                extra[key] += time.perf_counter() - t0
                if key == "hash":
                    hashing.append((t0, time.perf_counter()))

        return wrapper

    releasing.hash_folder = timing("hash", releasing.hash_folder)
    releasing.sha256_file = timing("hash", releasing.sha256_file)
    # the files' sha256 and md5 are computed in a thread while the release is validated: what is
    # timed is the wait for them after validation
    releasing.FolderDigests.result = timing("hash", releasing.FolderDigests.result)  # type: ignore[method-assign]
    formats.save = timing("model.save", formats.save)
    marks: list[tuple[float, str]] = []
    started = time.perf_counter()
    t0 = started if t0 is None else t0
    kgit.release(model, NAME, formats="keras", repo=repo, progress=lambda m: marks.append((time.perf_counter(), m)))
    end = time.perf_counter()
    steps = {
        "start": "start",
        "loading": "prepare",
        "saving": "save",
        "validating": "validate",
        "tracking": "dvc add",
        "committing": "git",
    }
    phases: dict[str, float] = {}
    bounds = [
        *([(t0, "start")] if t0 < started else []),
        (started, "loading"),
        *[(t, m.split()[0]) for t, m in marks],
        (end, ""),
    ]
    for (start, word), (stop, _next) in zip(bounds, bounds[1:]):
        phase = steps.get(word, "prepare")
        inside = sum(max(0.0, min(stop, b) - max(start, a)) for a, b in hashing)
        phases[phase] = phases.get(phase, 0.0) + stop - start - inside
    phases["hash"] = extra["hash"]
    phases["model.save"] = extra["model.save"]
    return {"total": end - t0, "phases": phases}


def _manual(model: Any, repo: Path) -> dict[str, Any]:
    import numpy as np

    phases: dict[str, float] = {}
    t0 = last = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal last
        now = time.perf_counter()
        phases[phase] = now - last
        last = now

    rel = Path("artifacts") / NAME / "keras" / "v1"
    folder = repo / rel
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    inputs = np.random.default_rng(0).standard_normal((3, LARGE[0])).astype("float32")
    outputs = np.asarray(model(inputs, training=False))
    np.savez(folder / "reference.npz", inputs=inputs, outputs=outputs)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    import keras
    import tensorflow as tf

    (folder / "metadata.json").write_text(
        json.dumps(
            {
                "name": NAME,
                "version": "v1",
                "format": "keras",
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "git_commit": commit,
                "optimizer": type(model.optimizer).__name__,
                "loss": "mse",
                "libraries": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
                "inputs": [list(inputs.shape[1:]), "float32"],
                "outputs": [list(outputs.shape[1:]), "float32"],
            },
            indent=2,
        )
    )
    lap("save")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    check = subprocess.run([sys.executable, "-c", CHECK, str(folder)], env=env, capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"the reloaded model differs or failed to load: {check.stderr[-2000:]}")
    lap("validate")
    from dvc.repo import Repo as DvcRepo

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        with DvcRepo(str(repo)) as dvc:
            dvc.add([str(rel)])
    finally:
        os.chdir(cwd)
    lap("dvc add")
    for args in (
        ["add", f"{rel}.dvc", f"{rel.parent}/.gitignore"],
        ["commit", "-q", "--no-verify", "-m", f"Release {NAME} v1"],
        ["tag", "-a", f"{NAME}@v1.0.0", "-m", f"{NAME} v1"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    lap("git")
    return {"total": time.perf_counter() - t0, "phases": phases}


def main(argv: list[str]) -> int:
    mode, repo, result = argv[0], Path(argv[1]), Path(argv[2])
    import contextlib
    import io

    from kgit.models import formats

    if mode == "kgit-file":
        with contextlib.redirect_stdout(io.StringIO()):
            out = _kgit(argv[3], repo, t0=_T0)
        result.write_text(json.dumps(out))
        return 0
    formats.import_keras()  # TensorFlow's start-up lines stay off the terminal
    model = dense_model(*LARGE)
    # DVC's own messages ("To track the changes with git, run: ...") are not part of the result
    with contextlib.redirect_stdout(io.StringIO()):
        out = _kgit(model, repo) if mode == "kgit" else _manual(model, repo)
    result.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
