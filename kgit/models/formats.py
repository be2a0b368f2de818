"""Saving, loading and running models per format; importing TensorFlow quietly.

TensorFlow/Keras are imported only here, in kgit.models.model_source, kgit.models.savedmodel (the savedmodel
folder), kgit.models.training_state (the optimizer state: identify, restore, strip) and
kgit.models.tf_keras_flavour (Keras 2 models), always inside functions.

Formats (one folder per format and version; metadata and reference files sit beside the model):
- ``savedmodel``: the folder is a SavedModel (``serving_default`` for TensorFlow Serving; each weight
  once in ``variables/``); the Keras model (architecture, compile config, optimizer state; its layer
  weights come from ``variables/``) rides along in ``assets.extra/`` so training resumes: see
  kgit.models.savedmodel.
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
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kgit.core.errors import (
    CustomObjectError,
    ModelSourceError,
    UnsafeModelError,
    describe,
    one_line,
)
from kgit.core.metadata import FORMATS, Metadata, Signature
from kgit.models import config_scan, savedmodel
from kgit.models.runtime import import_keras, to_numpy
from kgit.models.tf_keras_flavour import SAVEDMODEL_MARKER as TF_KERAS_METADATA
from kgit.models.training_state import (
    OPTIMIZER_GROUP,
    compile_config_kept,
    copy_h5_without,
    full_optimizer_in_compile_config,
    is_compiled,
    repair_compile_config,
    restore_h5_optimizer,
    restore_keras_optimizer,
    strip_keras_file,
)
from kgit.models.usercode import import_modules, resolve_attr

MODEL_FILES = {"keras": "model.keras", "h5": "model.h5", "weights": "model.weights.h5"}
SAVEDMODEL_KERAS = savedmodel.KERAS_FILE
# How the person loading a release opts in to the code it carries (the end of a refusal's line).
LOAD_OPT_IN = "pass --unsafe (kgit.load(..., unsafe=True)) only if you trust who released it"


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    log = logging.getLogger(name)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


def load_keras_file(path: Path, custom_objects: dict[str, Any], unsafe: bool, *, training_state: bool = True) -> Any:
    """The model in a .keras/.h5 file; with ``training_state``, compiled with the optimizer state the
    file holds (restored by kgit where Keras skips it), or ModelSourceError saying it cannot be."""
    keras = import_keras()
    is_h5 = path.suffix in (".h5", ".hdf5")
    try:
        with warnings.catch_warnings():
            # kgit restores what these say Keras skipped (or refuses): they would only mislead
            for text in (
                "Skipping variable loading for optimizer",
                "`compile\\(\\)` was not called as part of model loading",
            ):
                warnings.filterwarnings("ignore", message=text)
            model = keras.saving.load_model(path, custom_objects=custom_objects or None, safe_mode=not unsafe)
    except Exception as exc:
        msg = str(exc)
        if not (is_h5 and "deserialize" in msg and "keras.metrics" in msg):
            raise _explain_load_error(path, exc) from None
        # Keras 3 cannot recompile some legacy H5 training configs (e.g. loss="mse"): load
        # uncompiled and compile from the file's training config ourselves.
        model = _h5_load_recompiled(path, custom_objects, unsafe)
    if not training_state:
        return model
    if is_h5:
        restore_h5_optimizer(model, path)
    else:
        restore_keras_optimizer(model, path, custom_objects)
    return model


def _explain_load_error(path: Path, exc: Exception) -> ModelSourceError:
    msg = " ".join(str(exc).split())
    if "Lambda" in msg and "safe" in msg.lower():
        return UnsafeModelError(
            f"{path}: the model contains a Python lambda, refused in safe mode: pass --unsafe if you trust it"
        )
    for marker in (
        "Unknown layer: '",
        "Unknown loss function: '",
        "Unknown metric function: '",
        "Could not locate class '",
    ):
        if marker in msg:
            cls = msg.split(marker, 1)[1].split("'", 1)[0]
            if path.suffix in (".h5", ".hdf5") and _is_registered(cls):
                # The class is registered, but legacy H5 looks classes up by bare name.
                return ModelSourceError(
                    f"{path.name}: the legacy H5 format cannot hold this model (its class {cls} is registered with Keras, "
                    "but H5 cannot rebuild it): release it as keras, savedmodel or weights instead"
                )
            return CustomObjectError(
                f"{path}: custom class {cls} is not known in this process: register it with "
                f"@keras.saving.register_keras_serializable() in an importable module, or pass --custom-object MODULE:{cls.split('>')[-1]}"
            )
    return ModelSourceError(f"cannot load {path}: {type(exc).__name__}: {one_line(msg)}")


def _is_registered(cls: str) -> bool:
    """True if some registered Keras class is called ``cls`` (with or without its package)."""
    keras = import_keras()
    if keras.saving.get_registered_object(cls) is not None:
        return True
    try:
        from keras.src.saving import object_registration
    except ImportError:
        return False
    return any(name.split(">")[-1] == cls.split(">")[-1] for name in object_registration.GLOBAL_CUSTOM_OBJECTS)


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


def check_plain_savedmodel(model: Any, fmts: list[str], inference_only: bool) -> None:
    """An exported SavedModel holds no Keras model and no training state: it can only be released as
    a savedmodel again, and only when the user asks for an inference-only release."""
    if not is_plain_savedmodel(model):
        return
    if any(f != "savedmodel" for f in fmts):
        raise ModelSourceError(
            "a SavedModel without its Keras model can only be released as --format savedmodel: "
            "release from the .keras file or the training code for other formats"
        )
    if not inference_only:
        raise ModelSourceError(
            "this SavedModel was exported for inference (model.export()): it holds no Keras model and no optimizer "
            "state, so training could not resume from the release: release from the .keras file or the training "
            "code, or pass --inference-only"
        )


def save(model: Any, fmt: str, folder: Path, *, inference_only: bool = False) -> None:
    """Write ``model`` in ``fmt`` into the (existing, empty) ``folder``; with ``inference_only``,
    without the optimizer and compile config (the release then loads uncompiled)."""
    from kgit.models import tf_keras_flavour

    if tf_keras_flavour.is_model(model):
        try:
            return tf_keras_flavour.save(model, fmt, folder, inference_only=inference_only)
        except ModelSourceError:
            raise
        except Exception as exc:
            raise ModelSourceError(f"saving the tf_keras model as {fmt} failed: {describe(exc)}") from None
    check_plain_savedmodel(model, [fmt], inference_only)
    repair_compile_config(model)
    try:
        if fmt == "savedmodel":
            with contextlib.redirect_stdout(sys.stderr if os.environ.get("KGIT_VERBOSE") else open(os.devnull, "w")):
                savedmodel.export(model, folder)
            if not is_plain_savedmodel(model):
                savedmodel.write_keras_model(model, folder)
        elif fmt == "keras":
            with full_optimizer_in_compile_config(model):
                model.save(folder / MODEL_FILES[fmt])
        elif fmt == "h5":
            with (
                _logger_level("absl", logging.ERROR),
                compile_config_kept(model),
            ):  # the "HDF5 is legacy" warning: the user chose it
                model.save(folder / MODEL_FILES[fmt])
        elif fmt == "weights":
            model.save_weights(folder / MODEL_FILES[fmt])
        else:
            raise ModelSourceError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    except ModelSourceError:
        raise
    except Exception as exc:
        raise ModelSourceError(f"saving the model as {fmt} failed: {describe(exc)}") from None
    if inference_only:
        _strip_training_state(fmt, folder)


def _strip_training_state(fmt: str, folder: Path) -> None:
    """Remove the optimizer state and compile config from a saved model (an inference-only release)."""
    if fmt == "savedmodel":
        if (folder / SAVEDMODEL_KERAS).is_file():
            strip_keras_file(folder / SAVEDMODEL_KERAS)
    elif fmt == "keras":
        strip_keras_file(folder / MODEL_FILES[fmt])
    elif fmt == "h5":
        copy_h5_without(folder / MODEL_FILES[fmt], groups=("optimizer_weights",), attrs=("training_config",))
    elif fmt == "weights":
        copy_h5_without(folder / MODEL_FILES[fmt], groups=(OPTIMIZER_GROUP,), attrs=())


# -- what loading a release folder would run (kgit.models.config_scan), checked before it loads -----------
def config_files(folder: Path, fmt: str) -> list[Path]:
    """The files of a release folder whose model configuration a load deserializes."""
    if fmt == "savedmodel":
        return [p for p in (folder / SAVEDMODEL_KERAS, folder / TF_KERAS_METADATA) if p.is_file()]
    if fmt in ("keras", "h5"):
        return [folder / MODEL_FILES[fmt]]
    return []  # weights: no configuration, the recorded builder makes the model


def declared_modules(
    modules: list[str], custom_objects: dict[str, Any] | None = None, specs: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """The modules a release declares (its ``custom_modules`` and ``MODULE:ATTR`` custom objects) and
    those of the objects the loader passes: what a configuration may name besides Keras."""
    found = [*modules, *(spec.partition(":")[0] if ":" in spec else spec.rpartition(".")[0] for spec in specs)]
    found += [m for o in (custom_objects or {}).values() if isinstance(m := getattr(o, "__module__", None), str)]
    return [m for m in dict.fromkeys(found) if m and m != "__main__"]


def release_findings(folder: Path, meta: Metadata) -> list[config_scan.Finding]:
    """What loading a (verified) release folder would run, judged by what its metadata declares."""
    declared = declared_modules(meta.custom_modules, specs=meta.custom_objects)
    return config_scan.scan_files(config_files(folder, meta.format), declared)


def check_config(
    folder: Path, fmt: str, *, declared: list[str], unsafe: bool, label: str, opt_in: str = LOAD_OPT_IN
) -> None:
    """Refuse (UnsafeModelError, one line naming the layer) to load a release folder whose model
    configuration holds code the loader did not allow (``unsafe``) or anything never allowed; reads
    the configuration only, before TensorFlow is imported."""
    config_scan.check_files(config_files(folder, fmt), label=label, declared=declared, allow_code=unsafe, fix=opt_in)


def load_keras_model(
    folder: Path,
    fmt: str,
    *,
    custom_objects: dict[str, Any],
    modules: list[str],
    builder: str | None,
    unsafe: bool,
    sig: Signature | None = None,
    label: str | None = None,
) -> Any:
    """The Keras model in a release folder (compiled with optimizer state for full-model formats).
    ``unsafe``: the person loading allows the code the model carries (Keras' safe mode off); the
    configuration is checked first either way (kgit.models.config_scan)."""
    from kgit.models import tf_keras_flavour

    check_config(
        folder, fmt, declared=declared_modules(modules, custom_objects), unsafe=unsafe, label=label or str(folder)
    )
    import_keras()
    import_modules(modules)
    if fmt == "savedmodel":
        inner = folder / SAVEDMODEL_KERAS
        if tf_keras_flavour.is_savedmodel(folder):
            return tf_keras_flavour.load(folder, custom_objects)
        if not inner.is_file():
            raise ModelSourceError(f"{folder} holds an inference-only SavedModel: load it with tf.saved_model.load")
        with savedmodel.keras_file(folder) as complete:
            return load_keras_file(complete, custom_objects, unsafe)
    if fmt == "h5" and tf_keras_flavour.is_h5(folder / MODEL_FILES[fmt]):
        return tf_keras_flavour.load(folder / MODEL_FILES[fmt], custom_objects)
    if fmt in ("keras", "h5"):
        return load_keras_file(folder / MODEL_FILES[fmt], custom_objects, unsafe)
    if fmt == "weights":
        if not builder:
            raise ModelSourceError(f"{folder}: weights-only release without a recorded builder")
        build = resolve_attr(builder, "builder")
        try:
            model = build()
        except Exception as exc:
            raise ModelSourceError(f"builder {builder}() raised {describe(exc)}") from None
        if not getattr(model, "built", True) and sig is not None:
            from kgit.models.reference import generate_inputs

            run_model(model, generate_inputs(sig, "build"), sig)
        if getattr(model, "optimizer", None) is not None and is_compiled(model):
            # .weights.h5 also holds the optimizer's slots: a built optimizer takes them back.
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(folder / MODEL_FILES[fmt])
        except Exception as exc:
            raise ModelSourceError(
                f"weights in {folder} do not fit the model built by {builder}: {one_line(exc)}"
            ) from None
        return model
    raise ModelSourceError(f"unknown format {fmt!r}")
