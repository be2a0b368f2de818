"""Peak memory of ``kgit release`` and ``kgit validate --recheck`` of the ~100 MB model, against the
model's size. Two figures per command: the largest single process (``ru_maxrss``: the command or
one of its children, e.g. the fresh validation process) and the largest sum over the command and
its live children (sampled every 20 ms).

The model comes from ``--from bench_fixtures:large_model`` (built in code, seeded, compiled), as in
the release group. One more release, from the same model saved as a ``.keras`` file, shows what a
release from a file costs: Keras builds the optimizer's slots when it loads a compiled model, so
the released folder is larger than the file.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench_fixtures import LARGE, Fixtures, describe
from bench_util import KGIT, MB, Row, Usage, baseline, log, measure_usage, remove, tool_env

NAME = "memory"
MODEL_NAME = "large"
FLOOR = "import tensorflow as tf, keras; tf.constant(0)"
BY_HAND = """
import sys
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1])
model(np.zeros((3,) + tuple(model.inputs[0].shape[1:]), "float32"), training=False)
"""


def _size(repo: Path, version: str) -> int:
    from kgit.registry import catalog
    from kgit.store.git_ops import Repo

    return int(catalog.resolve(Repo(repo), MODEL_NAME, version).formats["keras"]["size"])


def bench(fx: Fixtures, runs: int) -> list[Row]:
    source = fx.large_model_file()
    repo = fx.copy_of_empty("memory")
    env = tool_env(PYTHONPATH=str(Path(__file__).resolve().parent))
    fixture = describe(LARGE) + ", keras"
    release: list[Usage] = []
    validate: list[Usage] = []
    floor: list[Usage] = []
    by_hand: list[Usage] = []
    for i in range(1, runs + 1):
        floor.append(measure_usage([sys.executable, "-c", FLOOR], repo))
        by_hand.append(measure_usage([sys.executable, "-c", BY_HAND, str(source)], repo))
        release.append(
            measure_usage(
                [KGIT, "release", MODEL_NAME, "--from", "bench_fixtures:large_model", "-f", "keras"], repo, env
            )
        )
        validate.append(measure_usage([KGIT, "validate", f"{MODEL_NAME}@v{i}", "--recheck"], repo))
        log(
            f"memory run {i}: release {release[-1].max_rss / MB:.0f} MB / {release[-1].tree_peak / MB:.0f} MB, "
            f"validate {validate[-1].max_rss / MB:.0f} MB / {validate[-1].tree_peak / MB:.0f} MB"
        )
    from_file = measure_usage([KGIT, "release", MODEL_NAME, "--from", str(source), "-f", "keras"], repo)
    released = _size(repo, "v1")
    released_from_file = _size(repo, f"v{runs + 1}")
    remove(repo)

    def med(values: list[Usage], attr: str) -> float:
        return statistics.median(getattr(u, attr) for u in values)

    base = baseline("model size (its released folder)", fixture, released / MB, "MB")
    rows = [
        base,
        Row(
            "peak RSS of importing TensorFlow + Keras alone",
            "no model",
            med(floor, "max_rss") / MB,
            "MB",
            runs=len(floor),
        ).compared_to(base),
        Row(
            "peak RSS by hand: `keras.models.load_model` + predict, one process",
            fixture,
            med(by_hand, "max_rss") / MB,
            "MB",
            runs=len(by_hand),
        ).compared_to(base),
    ]
    for usages, cmd in (
        (release, "`kgit release` (model built in code: MODULE:FUNCTION)"),
        (validate, "`kgit validate NAME@VERSION --recheck`"),
    ):
        n = len(usages)
        rows += [
            Row(f"{cmd}: peak RSS, largest process", fixture, med(usages, "max_rss") / MB, "MB", runs=n).compared_to(
                base
            ),
            Row(
                f"{cmd}: peak RSS, whole process tree", fixture, med(usages, "tree_peak") / MB, "MB", runs=n
            ).compared_to(base),
            Row(f"{cmd}: wall time (TensorFlow start-up included)", fixture, med(usages, "seconds"), "s", runs=n),
        ]
    cmd = f"`kgit release --from {source.name}`"
    rows += [
        Row(
            f"{cmd}: size of the released folder",
            f"{source.name}: {source.stat().st_size / MB:.0f} MB",
            released_from_file / MB,
            "MB",
            runs=1,
        ).compared_to(base),
        Row(f"{cmd}: peak RSS, largest process", fixture, from_file.max_rss / MB, "MB", runs=1).compared_to(base),
        Row(f"{cmd}: peak RSS, whole process tree", fixture, from_file.tree_peak / MB, "MB", runs=1).compared_to(base),
        Row(f"{cmd}: wall time (TensorFlow start-up included)", fixture, from_file.seconds, "s", runs=1),
    ]
    return rows
