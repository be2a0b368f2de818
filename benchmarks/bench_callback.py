"""What ``kgit.keras.ReleaseCallback`` costs a training run: ``fit`` of a small CNN on generated 28x28
images, 10 epochs, with and without the callback (``every="best"``), each run a whole process on a
fresh kgit repository, in turns; medians. And what one snapshot costs in the training loop, against
saving the model.

    .venv/bin/python benchmarks/bench_callback.py            # 5 runs of each
    .venv/bin/python benchmarks/bench_callback.py --runs 3

Prints progress on stderr and the tables on stdout; no pass/fail (the machine may be shared). The
target: training (``fit`` up to the end of the last epoch) at most 2 % slower with the callback; the
wait for the background releases when training ends is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import log  # noqa: E402

EPOCHS = 10
TARGET = 0.02
ROOT = Path(__file__).resolve().parents[1]


# -- inside one measured process ---------------------------------------------------------------------
def _data(n: int, seed: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(0).normal(size=(10, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, n)
    x = templates[y] + rng.normal(scale=2.5, size=(n, 28, 28, 1)).astype("float32")
    return x.astype("float32"), y


def _cnn() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _repo(base: Path) -> Path:
    import kgit

    repo = base / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@kgit.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@kgit.invalid",
    }
    os.environ.update(env)
    for args in (["init", "-q", "-b", "main"], ["add", "train.py"], ["commit", "-q", "-m", "code"]):
        if args[0] == "add":
            (repo / "train.py").write_text("# training code\n")
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    kgit.init(repo, remote=str(base / "remote"))
    return repo


def one_fit(mode: str) -> dict[str, Any]:
    """One ``fit`` in this process; its times in seconds."""
    import keras

    from kgit.models.runtime import import_keras

    import_keras()
    marks: dict[str, float] = {}

    class Mark(keras.callbacks.Callback):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def on_train_end(self, logs: Any = None) -> None:
            marks[self.name] = time.perf_counter()
            marks[self.name + "_cpu"] = time.process_time()

    x, y = _data(4000, 1)
    xv, yv = _data(1000, 2)
    model = _cnn()
    callbacks: list[Any] = [Mark("trained")]
    spent = [0.0]
    cb = None
    with tempfile.TemporaryDirectory(prefix="kgit-bench-callback-") as tmp:
        if mode != "without":
            from kgit.keras import ReleaseCallback

            cb = ReleaseCallback(
                "cnn", monitor="val_accuracy", every=mode, formats=["keras"], repo=_repo(Path(tmp)), verbose=0
            )
            for hook in ("on_train_begin", "on_epoch_end"):  # the callback's own time in the training thread
                original = getattr(cb, hook)

                def timed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                    t = time.perf_counter()
                    try:
                        return _original(*args, **kwargs)
                    finally:
                        spent[0] += time.perf_counter() - t

                setattr(cb, hook, timed)
            callbacks.append(cb)
        callbacks.append(Mark("done"))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        start, start_cpu = time.perf_counter(), time.process_time()
        model.fit(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=64, verbose=0, callbacks=callbacks)
        end = time.perf_counter()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the releaser and its validation processes
    background = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {
        "fit": end - start,
        "training": marks["trained"] - start,
        "wait": marks["done"] - marks["trained"],
        "training_cpu": marks["trained_cpu"] - start_cpu,
        "background_cpu": background,
        "in_loop": spent[0],
        "releases": len(cb.releases) if cb else 0,
        "superseded": len(cb._releases.superseded) if cb and cb._releases else 0,
        "errors": cb.errors if cb else [],
    }


def snapshot_costs(repeats: int = 10) -> dict[str, float]:
    """Medians (s) of taking one snapshot of the trained CNN against saving it."""
    from kgit.models import formats, snapshot
    from kgit.models.runtime import import_keras

    import_keras()
    model = _cnn()
    x, y = _data(512, 1)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    costs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="kgit-bench-snapshot-") as tmp:
        base = Path(tmp)
        ways = {
            "copy the variables (snapshot.take)": lambda i: snapshot.take(model),
            "copy and write them (.npz)": lambda i: snapshot.take(model).write(base / f"s{i}.npz"),
            "model.save(.keras)": lambda i: model.save(base / f"m{i}.keras"),
            "model.save_weights(.weights.h5)": lambda i: model.save_weights(base / f"w{i}.weights.h5"),
            "kgit's keras save (the base, once per run)": lambda i: formats.save(
                model, "keras", _mkdir(base / f"k{i}")
            ),
        }
        for i in range(repeats):
            for name, way in ways.items():
                t = time.perf_counter()
                way(i)
                costs.setdefault(name, []).append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in costs.items()}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


# -- the driver ------------------------------------------------------------------------------------------
def _child(*args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench_callback {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = snapshot_costs() if args.child[0] == "snapshot" else one_fit(args.child[0])
        print(json.dumps(result))
        return

    started = time.perf_counter()
    modes = ("without", "best", "train_end")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for i in range(args.runs):
        # in turns, reversed every other round: a load that rises or falls through the runs weighs on all alike
        for mode in modes if i % 2 == 0 else tuple(reversed(modes)):
            r = _child(mode)
            runs[mode].append(r)
            log(
                f"run {i + 1}/{args.runs} {mode:9s}: training {r['training']:.2f}s (cpu {r['training_cpu']:.2f}s), "
                f"wait {r['wait']:.2f}s, {r['releases']} releases" + (f", errors {r['errors']}" if r["errors"] else "")
            )
    costs = _child("snapshot")

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    def cells(key: str, fmt: str = "{:.2f} s") -> list[str]:
        return [fmt.format(med(m, key)) for m in modes]

    def versus(key: str) -> str:
        """Each callback mode against the runs without, median of the round-by-round ratios."""
        return ", ".join(
            f"{m}: {statistics.median(a[key] / b[key] - 1 for a, b in zip(runs[m], runs['without'])) * 100:+.1f} %"
            for m in modes[1:]
        )

    print(
        f"\nReleaseCallback(monitor='val_accuracy', formats=['keras']): small CNN (56,714 parameters), 4,000 "
        f"generated 28x28 images, 1,000 for validation, batch 64, {EPOCHS} epochs; {os.cpu_count()} cores, load "
        f"average {os.getloadavg()[0]:.1f} at the end; median of {args.runs} runs each, whole processes, in turns\n"
    )
    rows = [
        (
            "fit, training (to the end of the last epoch)",
            *cells("training"),
            f"{versus('training')} (target <= +{TARGET * 100:.0f} %)",
        ),
        ("  the callback's own time in the training thread", "-", *cells("in_loop", "{:.3f} s")[1:], ""),
        ("training process CPU time during training", *cells("training_cpu"), versus("training_cpu")),
        ("background processes' CPU time", "-", *cells("background_cpu")[1:], ""),
        ("wait for the background releases at the end", "-", *cells("wait")[1:], "reported apart"),
        ("fit, whole call", *cells("fit"), ""),
        (
            "releases made (superseded snapshots)",
            "-",
            *(f"{med(m, 'releases'):.0f} ({med(m, 'superseded'):.0f})" for m in modes[1:]),
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':{width}}  {'without':>9}  {'best':>9}  {'train_end':>9}  callback against without")
    for name, a, b, c, d in rows:
        print(f"{name:{width}}  {a:>9}  {b:>9}  {c:>9}  {d}")
    print("\nOne snapshot of the same model, trained one epoch (median of 10), in the training thread:")
    width = max(len(k) for k in costs)
    for name, seconds in costs.items():
        print(f"{name:{width}}  {seconds * 1000:7.1f} ms")
    log(f"done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
