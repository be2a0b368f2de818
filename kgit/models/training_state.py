"""A model's training state: what identifies it, bringing it back where Keras 3 does not, and
leaving it out of an inference-only release.

Keras 3 reloads a saved optimizer only when the optimizer it rebuilds has exactly as many variables
as were saved. Where it rebuilds another one (mixed precision, models that override compile(), H5
slots), kgit restores the saved variables itself. TensorFlow/Keras are reached through
kgit.models.runtime.import_keras, inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from kgit.core.errors import ModelSourceError, describe


def _keras() -> Any:
    from kgit.models.runtime import import_keras

    return import_keras()


# -- restoring what Keras skipped ---------------------------------------------------------------------
# A .keras file holds the optimizer's variables (model.weights.h5: optimizer/vars/0..N) and the
# compile config. Keras reloads them only when the rebuilt optimizer has exactly as many variables:
# with mixed precision the compile config names the inner optimizer (compile() wrapped it in a
# LossScaleOptimizer), and a model that overrides compile() (KerasHub tasks) is not recompiled
# from its config at all. kgit puts the saved state back itself, as it does for H5.
OPTIMIZER_GROUP = "optimizer"
WRAPPED_GROUP = "inner_optimizer"  # a LossScaleOptimizer saves its inner optimizer as this child


def _numeric_keys(group: Any) -> list[str]:
    return sorted(group.keys(), key=lambda k: int(k) if str(k).isdigit() else -1)


class _Window(io.RawIOBase):
    """A read-only, seekable view of bytes [start, start + size) of a file: a stored (uncompressed)
    zip member. h5py seeks back and forth; zipfile's own member file re-reads from the member's
    start on every backward seek (seconds for a large model)."""

    def __init__(self, fh: BinaryIO, start: int, size: int) -> None:
        self._fh, self._start, self._size, self._pos = fh, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if not n:
            return 0
        self._fh.seek(self._start + self._pos)
        got = self._fh.readinto(view[:n]) or 0  # type: ignore[attr-defined]
        self._pos += got
        return got


@contextlib.contextmanager
def _zip_member(path: Path, zf: zipfile.ZipFile, name: str) -> Iterator[Any]:
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(info) as member:
            yield member
        return
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header for {name} in {path}")
        start = (
            info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
        )
        yield _Window(fh, start, info.file_size)


def _read_keras_training_state(path: Path, values: bool) -> tuple[int, list[np.ndarray], bool, dict[str, Any] | None]:
    """(how many optimizer variables were saved, their values in saved order if ``values``, whether a
    LossScaleOptimizer saved them, the compile config)."""
    import h5py

    with zipfile.ZipFile(path) as zf:
        compile_config = json.loads(zf.read("config.json")).get("compile_config")
        if "model.weights.h5" not in zf.namelist():
            return 0, [], False, compile_config
        with _zip_member(path, zf, "model.weights.h5") as raw, h5py.File(raw, "r") as fh:
            group = fh.get(OPTIMIZER_GROUP)
            if group is None or "vars" not in group:
                return 0, [], False, compile_config
            keys = _numeric_keys(group["vars"])
            arrays = [np.asarray(group["vars"][k]) for k in keys] if values else []
            return len(keys), arrays, WRAPPED_GROUP in group, compile_config


def restore_keras_optimizer(model: Any, path: Path, custom_objects: dict[str, Any]) -> None:
    """Give ``model`` (just loaded from the .keras file ``path``) the optimizer state the file holds,
    where Keras did not; ModelSourceError, naming --inference-only, if that cannot be done."""
    keras = _keras()
    count, _, wrapped, compile_config = _read_keras_training_state(path, values=False)
    if not count:
        return
    # Keras does not recompile a model whose class overrides compile() but not compile_from_config()
    cls = type(model)
    custom_compile = (
        cls.compile is not keras.Model.compile and cls.compile_from_config is keras.Model.compile_from_config
    )
    optimizer = getattr(model, "optimizer", None)
    if (
        not custom_compile
        and optimizer is not None
        and len(optimizer.variables) == count
        and _is_loss_scaled(optimizer) == wrapped
    ):
        return  # Keras restored it all
    if custom_compile and compile_config:
        # Keras skipped compile_from_config: compile the way the model was compiled when saved.
        try:
            with keras.saving.custom_object_scope(custom_objects or {}):
                model.compile(**keras.saving.deserialize_keras_object(compile_config))
        except Exception as exc:
            raise ModelSourceError(
                f"{path}: {type(model).__name__} overrides compile() and cannot be recompiled from its saved "
                f"compile config ({describe(exc, 200)}), so its optimizer state cannot be "
                "restored: pass --inference-only to release it without training state"
            ) from None
        optimizer = model.optimizer
    if optimizer is None:
        raise ModelSourceError(
            f"{path} holds optimizer state ({count} variables) but no compile config to rebuild its optimizer "
            "from: pass --inference-only to release it without training state"
        )
    _, values, _, _ = _read_keras_training_state(path, values=True)
    unbuilt = len(type(optimizer).from_config(optimizer.get_config()).variables)
    if not wrapped and count == unbuilt and values and not np.any(values[0]):
        return  # saved before its first step (iterations 0, never built): a fresh optimizer is that state
    if wrapped and not _is_loss_scaled(optimizer):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.optimizer = _optimizer_with_state(model, optimizer, values, path)


def _is_loss_scaled(optimizer: Any) -> bool:
    return optimizer is not None and type(optimizer).__name__ == "LossScaleOptimizer"


def _optimizer_with_state(model: Any, optimizer: Any, values: list[np.ndarray], path: Path) -> Any:
    """A fresh optimizer like ``optimizer``, built for ``model``, holding ``values`` in order."""
    fresh = type(optimizer).from_config(optimizer.get_config())
    fresh.build(model.trainable_variables)
    variables = list(fresh.variables)
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise ModelSourceError(
            f"{path}: the saved optimizer state ({len(values)} variables) does not fit the model's "
            f"{type(fresh).__name__} ({len(variables)} variables): pass --inference-only to release it without "
            "training state"
        )
    for var, value in zip(variables, values):
        var.assign(value)
    return fresh


def is_compiled(model: Any) -> bool:
    compiled = getattr(model, "compiled", None)  # Keras 3; tf_keras keeps _is_compiled
    return bool(compiled if compiled is not None else getattr(model, "_is_compiled", False))


def optimizer_variables(optimizer: Any) -> list[Any]:
    variables = optimizer.variables  # a method in tf_keras, a property in Keras 3
    return list(variables() if callable(variables) else variables)


def optimizer_state(model: Any) -> dict[str, Any] | None:
    """What identifies a compiled model's training state: optimizer class, step, and (once the
    optimizer is built) the number of its variables and a sha256 of their values in order."""
    opt = getattr(model, "optimizer", None)
    if opt is None or not is_compiled(model):
        return None
    state: dict[str, Any] = {"class_name": type(opt).__name__, "iterations": int(np.asarray(opt.iterations))}
    variables = optimizer_variables(opt)
    if getattr(opt, "built", False) or getattr(opt, "_built", False):  # tf_keras: _built
        digest = hashlib.sha256()
        _update(digest, variables)
        state["variables"] = len(variables)
        state["variables_sha256"] = digest.hexdigest()
    return state


def _update(digest: Any, variables: list[Any]) -> None:
    for var in variables:
        arr = np.ascontiguousarray(_host_values(var))
        digest.update(f"{arr.dtype.str}{arr.shape};".encode())
        digest.update(arr.reshape(-1).view(np.uint8).data)  # the bytes of tobytes(), without a copy


def weights_digest(model: Any) -> str | None:
    """sha256 of the model's weights in order and, when it is compiled with a built optimizer, of the
    optimizer's variables after them (dtype, shape and bytes of each): two models with the same
    digest hold the same trained state. None when the model's variables cannot be read (a plain
    SavedModel wrapped for inference)."""
    try:
        digest = hashlib.sha256()
        _update(digest, list(model.weights))
        opt = getattr(model, "optimizer", None)
        if opt is not None and is_compiled(model) and (getattr(opt, "built", False) or getattr(opt, "_built", False)):
            digest.update(b"optimizer;")
            _update(digest, optimizer_variables(opt))
        return digest.hexdigest()
    except Exception:
        return None


def _host_values(var: Any) -> np.ndarray:
    """A variable's values as a NumPy array, read in place where TensorFlow allows it: ``np.asarray``
    copies every slot (``EagerTensor.numpy()`` returns a copy), a second copy of the optimizer state
    at a time when the model and its slots are all in memory. The array is only read."""
    tf_var = getattr(var, "value", var)  # a Keras 3 Variable holds a tf.Variable; tf_keras' is one
    if callable(tf_var):  # tf.Variable.value is a method
        tf_var = var
    try:
        values = tf_var.read_value()._numpy()
    except Exception:  # another backend or TensorFlow version: the public, copying way
        values = None
    if isinstance(values, np.ndarray) and values.shape == tuple(var.shape):
        return values
    return np.asarray(var)


def restore_h5_optimizer(model: Any, path: Path) -> None:
    """Keras 3 reads an H5 file's optimizer slots only partly; put all of them back, in order."""
    import h5py

    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    with h5py.File(path, "r") as fh:
        if "optimizer_weights" not in fh:
            return
        group = fh["optimizer_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        values = [np.asarray(group[n]) for n in names]
    if len(optimizer.variables) == len(values):
        return  # Keras restored it all
    # The loaded optimizer is marked built with no slots; a fresh one from its config takes them.
    model.optimizer = _optimizer_with_state(model, optimizer, values, path)


def strip_keras_file(path: Path) -> None:
    """Rewrite a .keras file without its compile config and optimizer variables."""
    tmp = path.with_name(path.name + ".tmp")
    with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "config.json":
                config = json.loads(data)
                config.pop("compile_config", None)
                data = json.dumps(config).encode()
            elif info.filename == "model.weights.h5":
                weights = Path(scratch) / "model.weights.h5"
                weights.write_bytes(data)
                copy_h5_without(weights, groups=(OPTIMIZER_GROUP,), attrs=())
                data = weights.read_bytes()
            dst.writestr(info, data)
    os.replace(tmp, path)


def copy_h5_without(path: Path, *, groups: tuple[str, ...], attrs: tuple[str, ...]) -> None:
    """Rewrite an HDF5 file without some top-level groups and attributes (deleting in place would
    leave their bytes in the file)."""
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for key, value in src.attrs.items():
            if key not in attrs:
                dst.attrs[key] = value
        for key in src:
            if key not in groups:
                src.copy(src[key], dst, name=key)
    shutil.move(tmp, path)


@contextlib.contextmanager
def full_optimizer_in_compile_config(model: Any) -> Iterator[None]:
    """compile() under mixed precision wraps the optimizer in a LossScaleOptimizer but records the
    inner one in the compile config, so a plain ``load_model`` would rebuild an optimizer with fewer
    variables and skip the saved state. Save the optimizer actually in use."""
    holder = getattr(model, "_compile_config", None)
    config = getattr(holder, "config", None)
    optimizer = getattr(model, "optimizer", None)
    if not (isinstance(config, dict) and _is_loss_scaled(optimizer) and config.get("optimizer") is not optimizer):
        yield
        return
    before = config.get("optimizer")
    config["optimizer"] = optimizer
    try:
        yield
    finally:
        config["optimizer"] = before


def repair_compile_config(model: Any) -> None:
    """A model the user saved as .h5 before releasing lost "optimizer" from its compile config (see
    below); without it a .keras reloads with a default optimizer. Restore it from the live optimizer."""
    holder = getattr(model, "_compile_config", None)
    config = getattr(holder, "config", None)
    if isinstance(config, dict) and "optimizer" not in config and getattr(model, "optimizer", None) is not None:
        config["optimizer"] = model.optimizer


@contextlib.contextmanager
def compile_config_kept(model: Any) -> Iterator[None]:
    """Keras 3's legacy H5 writer pops "optimizer" out of the model's own compile config, so any
    later ``.keras`` save of the same model would reload with a default optimizer. Put it back."""
    holder = getattr(model, "_compile_config", None)
    saved = dict(holder.config) if holder is not None and isinstance(getattr(holder, "config", None), dict) else None
    try:
        yield
    finally:
        if holder is not None and saved is not None:
            holder.config = saved


def check_training_state(model: Any, training: dict[str, Any]) -> str | None:
    """None if a reloaded full model kept the training state it was released with (optimizer class,
    step, number and values of its variables), else what differs."""
    if not training.get("compiled"):
        return None
    want = training.get("optimizer") or {}
    got = optimizer_state(model)
    if got is None:
        return "the reloaded model is not compiled, but the released one was"
    if want.get("class_name") and got["class_name"] != want["class_name"]:
        return f"the reloaded model's optimizer is {got['class_name']}, the released one was {want['class_name']}"
    if "iterations" in want and got["iterations"] != int(want["iterations"]):
        return (
            f"the reloaded optimizer is at step {got['iterations']}, the released one was at step {want['iterations']}"
        )
    if "variables" in want and got.get("variables") != want["variables"]:
        return (
            f"the reloaded optimizer has {got.get('variables', 0)} variables, the released one had {want['variables']}"
        )
    if "variables_sha256" in want and got.get("variables_sha256") != want["variables_sha256"]:
        return "the reloaded optimizer's variables differ from the released ones"
    return None
