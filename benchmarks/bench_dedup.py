"""Storage that grows with what changed: 10 versions of a model released packed (kgit's default) and
whole (``--no-pack``, DVC alone), pushed to a local DVC remote after each; what the remote holds and
what each push uploaded; then one version's release and ``kgit get`` times, packed against whole.

    .venv/bin/python benchmarks/bench_dedup.py              # ~100 MB model (--mb 1000 for ~1 GB)
    .venv/bin/python benchmarks/bench_dedup.py --mb 1000 --versions 10
    .venv/bin/python benchmarks/bench_dedup.py --mb 1000 --rounds 5   # the times only, layouts taking turns

Two histories, each on a fresh repository per layout:

- head: a frozen backbone of dense layers and a small head; each version trains the head only;
- 10%: ten dense layers of equal size; each version changes one of them (10 % of the layers).

Each release is a whole ``kgit.release`` in this process (``keras`` format); each push is ``dvc
push`` of everything, the uploaded bytes being what the remote folder grew by. "Changed tensors" is
the bytes of the weights that differ from the version before (with their optimizer slots when
trained). Prints tables; no pass/fail (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fixtures import new_repo  # noqa: E402
from bench_util import DVC, KGIT, log, tool_env  # noqa: E402


def _remote_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "files").rglob("*") if p.is_file()) if store.exists() else 0


def _model(kind: str, mb: int) -> Any:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if kind == "head":
        width = int((mb * 1e6 / 4 / 4) ** 0.5)  # four square backbone layers hold the bytes
        inp = keras.Input((width,), name="x")
        h = inp
        for i in range(4):
            h = keras.layers.Dense(width, name=f"backbone{i}", trainable=False)(h)
        model = keras.Model(inp, keras.layers.Dense(10, name="head")(h))
    else:
        width = int((mb * 1e6 / 4 / 10) ** 0.5)
        inp = keras.Input((width,), name="x")
        h = inp
        for i in range(10):
            h = keras.layers.Dense(width, name=f"layer{i}")(h)
        model = keras.Model(inp, h)
    model.compile("adam", "mse")
    model.optimizer.build(model.trainable_variables)
    _ = np
    return model


def _next_version(model: Any, kind: str, step: int) -> int:
    """Change the model as the history says; returns the bytes of the weights that changed."""
    import numpy as np

    rng = np.random.default_rng(step)
    if kind == "head":
        layers = [model.get_layer("head")]
    else:
        layers = [model.get_layer(f"layer{step % 10}")]
    changed = 0
    for layer in layers:
        for v in layer.weights:
            v.assign(
                v.numpy()
                + rng.normal(scale=1e-3, size=v.shape).astype(v.dtype.name if hasattr(v.dtype, "name") else v.dtype)
            )
            changed += int(np.prod(v.shape)) * 4
    return changed


def _history(kind: str, mb: int, versions: int, pack: bool, base: Path) -> dict[str, Any]:
    import kgit
    from kgit.workflow.roundtrip import stop_preloaded

    stop_preloaded()  # each layout's first release starts its validation process, as a `kgit release` does
    repo, store = base / "repo", base / "store"
    new_repo(repo, store)
    env = tool_env()
    model = _model(kind, mb)
    uploads, changes, times = [], [], []
    one = 0
    for i in range(versions):
        changed = _next_version(model, kind, i) if i else sum(int(w.size) * 4 for w in model.get_weights())
        start = time.perf_counter()
        kgit.release(model, "m", formats="keras", pack=pack, repo=repo, allow_dirty=True)
        times.append(time.perf_counter() - start)
        before = _remote_bytes(store)
        subprocess.run([DVC, "push", "-q"], cwd=repo, env=env, check=True, capture_output=True)
        uploads.append(_remote_bytes(store) - before)
        changes.append(changed)
        if i == 0:
            one = _remote_bytes(store)
        log(
            f"{kind} {'packed' if pack else 'whole'} v{i + 1}: uploaded {uploads[-1] / 1e6:.1f} MB, changed {changed / 1e6:.1f} MB"
        )
    return {
        "one": one,
        "all": _remote_bytes(store),
        "uploads": uploads,
        "changes": changes,
        "release_s": times,
        "repo": repo,
    }


LOAD = """
import sys, time
import keras
start = time.perf_counter()
keras.saving.load_model(sys.argv[1])
print(time.perf_counter() - start)
"""


def _get_and_load(repo: Path, base: Path, runs: int = 3, sync: bool = False) -> tuple[float, float]:
    """``kgit get m@v1`` on a fresh clone of ``repo`` (its DVC remote, its commits), then loading the
    folder's ``model.keras`` with plain Keras in a fresh process, seconds: the medians of ``runs``,
    each on a clone of its own (an empty DVC cache). ``sync``: the get starts with nothing left to
    write to disk from before."""
    gets, loads = [], []
    for _ in range(runs):
        clone = base / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        if sync:
            os.sync()
        start = time.perf_counter()
        subprocess.run([KGIT, "get", "m@v1"], cwd=clone, env=tool_env(), check=True, capture_output=True)
        gets.append(time.perf_counter() - start)
        model = clone / "artifacts" / "m" / "keras" / "v1" / "model.keras"
        loaded = subprocess.run([sys.executable, "-c", LOAD, str(model)], check=True, capture_output=True, text=True)
        loads.append(float(loaded.stdout.split()[-1]))
        shutil.rmtree(clone)
    return statistics.median(gets), statistics.median(loads)


def _one_round(mb: int, pack: bool, base: Path) -> tuple[float, float, float, float]:
    """A fresh repository: release v1, push, change the head, release v2, push; then ``kgit get
    m@v1`` on a fresh clone and a plain-Keras load of its ``model.keras``. Seconds of each."""
    import kgit
    from kgit.workflow.roundtrip import stop_preloaded

    stop_preloaded()
    repo, store = base / "repo", base / "store"
    new_repo(repo, store)
    model = _model("head", mb)
    times = []
    for i in range(2):
        if i:
            _next_version(model, "head", i)
        os.sync()  # each timed step starts with nothing left to write from the one before
        start = time.perf_counter()
        kgit.release(model, "m", formats="keras", pack=pack, repo=repo, allow_dirty=True)
        times.append(time.perf_counter() - start)
        subprocess.run([DVC, "push", "-q"], cwd=repo, env=tool_env(), check=True, capture_output=True)
    get, load = _get_and_load(repo, base, runs=1, sync=True)
    return times[0], times[1], get, load


def _timing(mb: int, rounds: int) -> None:
    """``rounds`` rounds of ``_one_round`` per layout, the layouts taking turns to go first, after one
    uncounted round of a 10 MB model; per round and the medians, with packed against whole per round
    (paired: the same minutes of the machine)."""
    names = ("release v1", "release v2", "kgit get", "load")
    results: dict[bool, list[tuple[float, ...]]] = {True: [], False: []}
    for pack in (True, False):  # not counted: what a process does once (imports, first files read)
        with tempfile.TemporaryDirectory(prefix="kgit-bench-dedup-") as tmp:
            _one_round(10, pack, Path(tmp))
    for r in range(rounds):
        for pack in (True, False) if r % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory(prefix="kgit-bench-dedup-") as tmp:
                results[pack].append(_one_round(mb, pack, Path(tmp)))
            log(f"round {r + 1} {'packed' if pack else 'whole'}: " + ", ".join(f"{t:.2f} s" for t in results[pack][-1]))
    print(f"one ~{mb} MB model (head history), {rounds} rounds, each on fresh repositories, layouts taking turns:")
    print(f"{'':12} {'packed (each round)':>34} {'whole (each round)':>34} {'packed/whole, median of rounds':>32}")
    for i, name in enumerate(names):
        packed = [x[i] for x in results[True]]
        whole = [x[i] for x in results[False]]
        ratios = [a / b - 1 for a, b in zip(packed, whole)]
        print(
            f"{name:12} {' '.join(f'{x:5.2f}' for x in packed):>34} {' '.join(f'{x:5.2f}' for x in whole):>34} "
            f"{statistics.median(ratios) * 100:+7.1f} % (median {statistics.median(packed):.2f} against {statistics.median(whole):.2f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="the model's size in MB (default 100)")
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument(
        "--whole-versions",
        type=int,
        default=None,
        help="versions of the whole (--no-pack) histories (default: --versions)",
    )
    parser.add_argument("--history", action="append", choices=["head", "10%"], help="only this history (repeatable)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="instead: time release v1, v2, get and load, packed and whole taking turns, this many rounds",
    )
    args = parser.parse_args()
    if args.rounds:
        _timing(args.mb, args.rounds)
        return
    rows = []
    timing = {}
    for kind in args.history or ["head", "10%"]:
        for pack in (True, False):
            versions = args.versions if pack or args.whole_versions is None else args.whole_versions
            with tempfile.TemporaryDirectory(prefix="kgit-bench-dedup-") as tmp:
                h = _history(kind, args.mb, versions, pack, Path(tmp))
                if kind == "head":
                    timing[pack] = (
                        h["release_s"][0],
                        statistics.median(h["release_s"][1:]),
                        *_get_and_load(h["repo"], Path(tmp)),
                    )
            later = list(zip(h["uploads"][1:], h["changes"][1:]))
            worst = max((u - c) / max(c, 1) for u, c in later) if later else 0.0
            rows.append(
                (
                    kind,
                    "packed" if pack else "whole (--no-pack)",
                    h["one"],
                    h["all"],
                    h["all"] / h["one"],
                    statistics.median(u for u, _ in later),
                    statistics.median(c for _, c in later),
                    worst,
                )
            )
    whole = args.versions if args.whole_versions is None else args.whole_versions
    print(
        f"{args.versions} versions (whole: {whole}) of a ~{args.mb} MB model (keras format), a local DVC remote, dvc push after each"
    )
    print(
        f"{'history':8} {'layout':18} {'1 version':>10} {'all':>10} {'ratio':>6} {'upload/version':>15} {'changed':>10} {'upload over changed':>20}"
    )
    for kind, layout, one, total, ratio, up, ch, worst in rows:
        print(
            f"{kind:8} {layout:18} {one / 1e6:9.1f}M {total / 1e6:9.1f}M {ratio:6.2f} {up / 1e6:14.2f}M {ch / 1e6:9.2f}M {worst * 100:+19.1f}%"
        )
    print()
    print(
        "one version, head history: release of v1 (nothing stored yet) and of v2..N (median); on a fresh clone, "
        "kgit get m@v1, then keras.saving.load_model of its model.keras in a fresh process (medians of 3):"
    )
    for pack, (first, rel, get, load) in timing.items():
        print(
            f"  {'packed' if pack else 'whole ':7}  release v1 {first:6.2f} s   release v2..N {rel:6.2f} s   "
            f"kgit get {get:6.2f} s   load {load:6.2f} s"
        )


if __name__ == "__main__":
    main()
