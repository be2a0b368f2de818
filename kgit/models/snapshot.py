"""A training model's state, taken cheaply while it trains and turned back into a model elsewhere.

Saving a ``.keras`` file in the training loop costs about 80 ms for a 57,000-parameter CNN (its
configuration serialised, one HDF5 dataset per variable, a zip); copying the values of the model's
and the optimizer's variables costs about 7 ms (benchmarks/bench_callback.py). So a training run
saves the model once, its *base* (architecture, compile configuration, assets such as vocabularies,
the optimizer's layout), and every snapshot after that is only the values of those variables, in
order. Another process loads the base and puts a snapshot's values back.

That is only right if the base, reloaded, has exactly the variables the training model had: the
same names, shapes and dtypes in the same order, holding the values they held when the base was
saved. ``restore`` checks all of it before it assigns anything: a model whose saved form is not the
sum of its variables is refused, never released wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kgit.core import bounded_yaml
from kgit.core.errors import ModelSourceError

BASE_MODEL = "model.keras"  # in the base folder, as kgit.models.formats saves the keras format
BASE_STATE = "base-state.npz"  # the variables' values at the moment the base was saved
_SPECS = "__kgit_specs__"  # the member of a state file that lists each variable's path, shape, dtype


@dataclass
class State:
    """The values of a model's variables (its weights, then its optimizer's) at one moment."""

    specs: list[tuple[str, tuple[int, ...], str]]  # path, shape, dtype of each, in order
    arrays: list[np.ndarray]

    def write(self, path: Path) -> None:
        """Save to ``path`` (an uncompressed .npz), atomically."""
        tmp = path.with_name(path.name + ".tmp.npz")
        header = np.frombuffer(json.dumps([list(s) for s in self.specs]).encode(), dtype=np.uint8)
        members: dict[str, Any] = {_SPECS: header, **{f"v{i}": a for i, a in enumerate(self.arrays)}}
        np.savez(tmp, **members)
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> State:
        with np.load(path, allow_pickle=False) as data:
            specs = [
                (str(p), tuple(int(d) for d in shape), str(dtype))
                for p, shape, dtype in bounded_yaml.load_json(
                    bytes(data[_SPECS]), "a snapshot's variable list", max_bytes=1 << 30
                )
            ]
            return cls(specs, [data[f"v{i}"] for i in range(len(specs))])


def variables(model: Any) -> list[Any]:
    """The variables a snapshot holds: the model's weights (trainable or not), then, for a compiled
    model, its optimizer's (step, learning rate, slots)."""
    from kgit.models.training_state import is_compiled, optimizer_variables

    found = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and is_compiled(model):
        found += optimizer_variables(optimizer)
    return found


def _spec(var: Any, value: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    return str(getattr(var, "path", None) or var.name), tuple(value.shape), value.dtype.str


def _same_name(a: str, b: str) -> bool:
    """Whether two variable paths name the same variable: a reloaded model's paths lose the prefix
    its scope gave them (``sequential/dense/kernel`` reloads as ``dense/kernel``; the optimizer's
    ``adam/sequential_dense_kernel_momentum`` as ``adam/dense_kernel_momentum``)."""
    a, b = a.rsplit("/", 1)[-1], b.rsplit("/", 1)[-1]
    return a.endswith(b) or b.endswith(a)


def take(model: Any) -> State:
    """Copy the values of ``model``'s variables (call between training steps)."""
    found = variables(model)
    arrays = [np.asarray(v.numpy()) for v in found]
    return State([_spec(v, a) for v, a in zip(found, arrays)], arrays)


def write_base(model: Any, folder: Path) -> State:
    """Save ``model`` as the base of a training run's snapshots into ``folder`` (created), with the
    values its variables hold now; returns those values."""
    from kgit.models import formats

    folder.mkdir(parents=True)
    state = take(model)
    formats.save(model, "keras", folder)
    state.write(folder / BASE_STATE)
    return state


def restore(base: Path, state: State, custom_objects: dict[str, Any], unsafe: bool) -> Any:
    """The model of the base folder ``base`` holding ``state``'s values, compiled with its training
    state; ModelSourceError if the base does not reload into exactly the variables it was saved from."""
    from kgit.models import model_source

    model = model_source.obtain_model(base / BASE_MODEL, custom_objects, unsafe)
    saved = State.read(base / BASE_STATE)
    found = variables(model)
    fix = (
        "kgit cannot release this model from snapshots of its variables: release it with "
        "kgit.release(model, ...) after training instead"
    )
    if len(found) != len(saved.specs) or len(state.specs) != len(saved.specs):
        raise ModelSourceError(
            f"the model saved at the start of training reloads with {len(found)} variables, "
            f"the training model had {len(saved.specs)}: {fix}"
        )
    for var, want, value, snap in zip(found, saved.specs, saved.arrays, state.specs):
        current = np.asarray(var.numpy())
        got = _spec(var, current)
        if got[1:] != want[1:] or snap[1:] != want[1:] or not _same_name(got[0], want[0]):
            raise ModelSourceError(
                f"variable {want[0]} {list(want[1])} of the training model reloads as {got[0]} {list(got[1])}: {fix}"
            )
        if not np.array_equal(current, value, equal_nan=current.dtype.kind in "fc"):
            raise ModelSourceError(f"variable {want[0]} does not reload with the value it was saved with: {fix}")
    for var, value in zip(found, state.arrays):
        var.assign(value)
    return model
