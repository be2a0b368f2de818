"""Saving, loading and running models per format; importing TensorFlow quietly.

TensorFlow/Keras are imported only here and in kgit.model_source, always inside functions.

Formats (one folder per format and version; metadata and reference files sit beside the model):
- ``savedmodel``: the folder is a SavedModel (``serving_default`` for TensorFlow Serving); the Keras
  model, optimizer state included, rides along in ``assets.extra/model.keras`` so training resumes.
- ``keras``: ``model.keras``, Keras' native zip (config, weights, optimizer state).
- ``h5``: ``model.h5``, legacy single HDF5 file.
- ``weights``: ``model.weights.h5``; the architecture is rebuilt by the recorded builder function.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kgit.errors import CustomObjectError, ModelSourceError, UnsafeModelError
from kgit.metadata import FORMATS, Signature
from kgit.usercode import import_modules, resolve_attr

MODEL_FILES = {"keras": "model.keras", "h5": "model.h5", "weights": "model.weights.h5"}
SAVEDMODEL_KERAS = "assets.extra/model.keras"


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    log = logging.getLogger(name)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """TensorFlow's C++ logging writes to fd 2 regardless of TF_CPP_MIN_LOG_LEVEL: park it."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras(quiet: bool = True) -> Any:
    """Import TensorFlow and Keras (once), keeping their start-up noise off the terminal."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced() if quiet else contextlib.nullcontext():
        import keras
        import tensorflow as tf

        tf.constant(0)  # device initialisation logs once; do it while stderr is parked
    return keras


def load_keras_file(path: Path, custom_objects: dict[str, Any], unsafe: bool) -> Any:
    keras = import_keras()
    is_h5 = path.suffix in (".h5", ".hdf5")
    try:
        model = keras.saving.load_model(path, custom_objects=custom_objects or None, safe_mode=not unsafe)
    except Exception as exc:
        msg = str(exc)
        if not (is_h5 and "deserialize" in msg and "keras.metrics" in msg):
            raise _explain_load_error(path, exc) from None
        # Keras 3 cannot recompile some legacy H5 training configs (e.g. loss="mse"): load
        # uncompiled and compile from the file's training config ourselves.
        model = _h5_load_recompiled(path, custom_objects, unsafe)
    if is_h5:
        _restore_h5_optimizer(model, path)
    return model


def _restore_h5_optimizer(model: Any, path: Path) -> None:
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
    fresh = type(optimizer).from_config(optimizer.get_config())
    fresh.build(model.trainable_variables)
    variables = list(fresh.variables)
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise ModelSourceError(f"{path}: the saved optimizer state does not fit the model's optimizer")
    for var, value in zip(variables, values):
        var.assign(value)
    model.optimizer = fresh


def _explain_load_error(path: Path, exc: Exception) -> ModelSourceError:
    msg = " ".join(str(exc).split())
    if "Lambda" in msg and "safe" in msg.lower():
        return UnsafeModelError(f"{path}: the model contains a Python lambda, refused in safe mode: pass --unsafe if you trust it")
    for marker in ("Unknown layer: '", "Unknown loss function: '", "Unknown metric function: '", "Could not locate class '"):
        if marker in msg:
            cls = msg.split(marker, 1)[1].split("'", 1)[0]
            return CustomObjectError(
                f"{path}: custom class {cls} is not known in this process: register it with "
                f"@keras.saving.register_keras_serializable() in an importable module, or pass --custom-objects MODULE:{cls.split('>')[-1]}"
            )
    return ModelSourceError(f"cannot load {path}: {type(exc).__name__}: {msg[:300]}")


def _h5_load_recompiled(path: Path, custom_objects: dict[str, Any], unsafe: bool) -> Any:
    import h5py

    keras = import_keras()
    model = keras.saving.load_model(path, custom_objects=custom_objects or None, safe_mode=not unsafe, compile=False)
    with h5py.File(path, "r") as fh:
        training = json.loads(fh.attrs["training_config"]) if "training_config" in fh.attrs else None
    if training is None:
        return model
    optimizer = keras.optimizers.deserialize(training["optimizer_config"])

    def _fix(obj: Any) -> Any:  # legacy string names -> the Keras 3 objects they meant
        if isinstance(obj, str):
            return keras.losses.get(obj) if obj in ("mse", "mae", "mape", "msle") else obj
        return obj

    loss = training.get("loss")
    if isinstance(loss, dict) and "class_name" not in loss:
        loss = {k: _fix(v) if isinstance(v, str) else keras.losses.deserialize(v) for k, v in loss.items()}
    elif isinstance(loss, dict):
        loss = keras.losses.deserialize(loss)
    metrics = training.get("metrics")
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=training.get("loss_weights"))
    return model


def structure_of(value: Any) -> str:
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, (list, tuple)) and len(value) != 1:
        return "list"
    return "single"


def flatten_structure(value: Any, names: list[str] | None = None) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        names = names or [f"output_{i}" for i in range(len(value))]
        return dict(zip(names, value))
    return {(names[0] if names else "output_0"): value}


def call_args(arrays: dict[str, np.ndarray], sig: Signature) -> Any:
    ordered = [arrays[s.name] for s in sig.inputs]
    if sig.input_structure == "dict":
        return {s.name: arrays[s.name] for s in sig.inputs}
    if sig.input_structure == "list":
        return ordered
    return ordered[0]


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def run_model(model: Any, arrays: dict[str, np.ndarray], sig: Signature) -> dict[str, np.ndarray]:
    """Outputs of a Keras model (training off) keyed by output name."""
    import tensorflow as tf

    args = call_args(arrays, sig)
    args = tf.nest.map_structure(lambda a: tf.constant(a), args)
    out = model(args, training=False)
    names = [s.name for s in sig.outputs] if sig.output_structure != "dict" else None
    return {k: to_numpy(v) for k, v in flatten_structure(out, names).items()}


def is_plain_savedmodel(model: Any) -> bool:
    return bool(getattr(model, "_kgit_plain_savedmodel", False))


def save(model: Any, fmt: str, folder: Path) -> None:
    """Write ``model`` in ``fmt`` into the (existing, empty) ``folder``."""
    if is_plain_savedmodel(model) and fmt != "savedmodel":
        raise ModelSourceError(
            "a SavedModel without its Keras model can only be released as --format savedmodel: "
            "release from the .keras file or the training code for other formats"
        )
    _repair_compile_config(model)
    try:
        if fmt == "savedmodel":
            with contextlib.redirect_stdout(sys.stderr if os.environ.get("KGIT_VERBOSE") else open(os.devnull, "w")):
                model.export(str(folder), format="tf_saved_model", verbose=False)
            if not is_plain_savedmodel(model):
                (folder / SAVEDMODEL_KERAS).parent.mkdir(parents=True, exist_ok=True)
                model.save(folder / SAVEDMODEL_KERAS)
        elif fmt == "keras":
            model.save(folder / MODEL_FILES[fmt])
        elif fmt == "h5":
            with _logger_level("absl", logging.ERROR), _compile_config_kept(model):  # the "HDF5 is legacy" warning: the user chose it
                model.save(folder / MODEL_FILES[fmt])
        elif fmt == "weights":
            model.save_weights(folder / MODEL_FILES[fmt])
        else:
            raise ModelSourceError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    except ModelSourceError:
        raise
    except Exception as exc:
        raise ModelSourceError(f"saving the model as {fmt} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None


def _repair_compile_config(model: Any) -> None:
    """A model the user saved as .h5 before releasing lost "optimizer" from its compile config (see
    below); without it a .keras reloads with a default optimizer. Restore it from the live optimizer."""
    holder = getattr(model, "_compile_config", None)
    config = getattr(holder, "config", None)
    if isinstance(config, dict) and "optimizer" not in config and getattr(model, "optimizer", None) is not None:
        config["optimizer"] = model.optimizer


@contextlib.contextmanager
def _compile_config_kept(model: Any) -> Iterator[None]:
    """Keras 3's legacy H5 writer pops "optimizer" out of the model's own compile config, so any
    later ``.keras`` save of the same model would reload with a default optimizer. Put it back."""
    holder = getattr(model, "_compile_config", None)
    saved = dict(holder.config) if holder is not None and isinstance(getattr(holder, "config", None), dict) else None
    try:
        yield
    finally:
        if holder is not None and saved is not None:
            holder.config = saved


def load_keras_model(
    folder: Path, fmt: str, *, custom_objects: dict[str, Any], modules: list[str], builder: str | None,
    unsafe: bool, sig: Signature | None = None,
) -> Any:
    """The Keras model in a release folder (compiled with optimizer state for full-model formats)."""
    import_keras()
    import_modules(modules)
    if fmt == "savedmodel":
        inner = folder / SAVEDMODEL_KERAS
        if not inner.is_file():
            raise ModelSourceError(f"{folder} holds an inference-only SavedModel: load it with tf.saved_model.load")
        return load_keras_file(inner, custom_objects, unsafe)
    if fmt in ("keras", "h5"):
        return load_keras_file(folder / MODEL_FILES[fmt], custom_objects, unsafe)
    if fmt == "weights":
        if not builder:
            raise ModelSourceError(f"{folder}: weights-only release without a recorded builder")
        build = resolve_attr(builder, "builder")
        try:
            model = build()
        except Exception as exc:
            raise ModelSourceError(f"builder {builder}() raised {type(exc).__name__}: {exc}") from None
        if not getattr(model, "built", True) and sig is not None:
            from kgit.reference import generate_inputs

            run_model(model, generate_inputs(sig, "build"), sig)
        if getattr(model, "optimizer", None) is not None and getattr(model, "compiled", False):
            # .weights.h5 also holds the optimizer's slots: a built optimizer takes them back.
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(folder / MODEL_FILES[fmt])
        except Exception as exc:
            raise ModelSourceError(
                f"weights in {folder} do not fit the model built by {builder}: {' '.join(str(exc).split())[:300]}"
            ) from None
        return model
    raise ModelSourceError(f"unknown format {fmt!r}")


def check_training_state(model: Any, training: dict[str, Any]) -> str | None:
    """None if a reloaded full model kept the optimizer it was released with, else what differs."""
    if not training.get("compiled"):
        return None
    want = training.get("optimizer") or {}
    opt = getattr(model, "optimizer", None)
    if opt is None or not getattr(model, "compiled", False):
        return "the reloaded model is not compiled, but the released one was"
    if want.get("class_name") and type(opt).__name__ != want["class_name"]:
        return f"the reloaded model's optimizer is {type(opt).__name__}, the released one was {want['class_name']}"
    if "iterations" in want and int(np.asarray(opt.iterations)) != int(want["iterations"]):
        return f"the reloaded optimizer is at step {int(np.asarray(opt.iterations))}, the released one was at step {want['iterations']}"
    return None


def run_savedmodel(folder: Path, arrays: dict[str, np.ndarray], sig: Signature) -> dict[str, np.ndarray]:
    """Outputs of the SavedModel's ``serving_default`` signature, the endpoint TF Serving uses."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise ModelSourceError(f"tf.saved_model.load({folder}) failed: {' '.join(str(exc).split())[:300]}") from None
    if "serving_default" not in loaded.signatures:
        raise ModelSourceError(f"{folder} has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    expected = fn.structured_input_signature[1]
    if set(expected) == {s.name for s in sig.inputs}:
        kwargs = {name: tf.constant(arrays[name]) for name in expected}
    elif len(expected) == len(sig.inputs):  # names differ (e.g. positional inputs): match by order
        kwargs = {name: tf.constant(arrays[s.name]) for name, s in zip(sorted(expected), sig.inputs)}
    else:
        raise ModelSourceError(f"{folder}: serving_default takes {sorted(expected)}, the model's inputs are {[s.name for s in sig.inputs]}")
    out = fn(**kwargs)
    names = [s.name for s in sig.outputs]
    if set(out) == set(names):
        return {k: to_numpy(v) for k, v in out.items()}
    # Keras export names list/single outputs output_0, output_1, ...
    return {n: to_numpy(out[k]) for n, k in zip(names, sorted(out, key=_natural_key))}


def _natural_key(key: str) -> tuple[str, int]:
    head = key.rstrip("0123456789")
    tail = key[len(head):]
    return head, int(tail) if tail else -1
