"""tf_keras (Keras 2) models: recognise them, save and load them with their training state.

tf_keras is a separate, optional package (``pip install 'kgit[tf-keras]'``); its models are not
Keras 3 models. They release as ``savedmodel`` (tf_keras' own ``model.save(dir)``: a SavedModel with
``serving_default`` whose checkpoint also holds the optimizer), ``h5`` or ``weights``, are recorded as
``keras_flavour: tf_keras`` and are validated in a fresh process with ``TF_USE_LEGACY_KERAS=1``.
Imported lazily, like kgit.models.formats; nothing here runs for Keras 3 models.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from kgit.core.errors import ModelSourceError, describe

FLAVOUR = "tf_keras"
ENV = "TF_USE_LEGACY_KERAS"  # makes tf.keras mean tf_keras in the validation process
KERAS2_FORMATS = (
    "savedmodel",
    "h5",
    "weights",
)  # what Keras 2 saves and reloads with training state (a subset of metadata.FORMATS)
SAVEDMODEL_MARKER = "keras_metadata.pb"  # written by tf_keras' model.save(dir), not by Keras 3's export
H5_FILE = "model.h5"
WEIGHTS_FILE = "model.weights.h5"


def module() -> Any:
    """The tf_keras package, or a one-line error saying how to install it."""
    try:
        import tf_keras
    except ImportError:
        raise ModelSourceError(
            "this is a tf_keras (Keras 2) model, and tf_keras is not installed here: pip install 'kgit[tf-keras]'"
        ) from None
    return tf_keras


def is_model(obj: Any) -> bool:
    mod = sys.modules.get("tf_keras")
    return mod is not None and isinstance(obj, mod.Model)


def is_savedmodel(folder: Path) -> bool:
    """A SavedModel folder written by tf_keras' ``model.save(dir)``."""
    return (folder / SAVEDMODEL_MARKER).is_file() and (folder / "saved_model.pb").is_file()


def is_h5(path: Path) -> bool:
    """An H5 model file written by Keras 2 (tf_keras records its own version, 2.x)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            version = fh.attrs.get("keras_version")
    except OSError:
        return False
    if isinstance(version, bytes):
        version = version.decode()
    return isinstance(version, str) and version.startswith("2.")


def load(path: Path, custom_objects: dict[str, Any], *, training_state: bool = True) -> Any:
    """A tf_keras model from a SavedModel folder or an H5 file, with its optimizer state."""
    tf_keras = module()
    try:
        model = tf_keras.models.load_model(str(path), custom_objects=custom_objects or None, compile=training_state)
    except Exception as exc:
        raise ModelSourceError(f"cannot load {path} with tf_keras: {describe(exc)}") from None
    if training_state and path.is_dir():
        _restore_savedmodel_optimizer(model, path)
    return model


def _restore_savedmodel_optimizer(model: Any, folder: Path) -> None:
    """tf_keras reloads a SavedModel with a fresh optimizer; its variables are in the checkpoint:
    restore them, then check every one of them arrived (a silent partial restore is refused)."""
    import numpy as np
    import tensorflow as tf

    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    checkpoint = str(folder / "variables" / "variables")
    saved = {
        name: tf.train.load_variable(checkpoint, name)
        for name, _ in tf.train.list_variables(checkpoint)
        if name.startswith("optimizer/_variables/") or name.startswith("optimizer/_iterations/")
    }
    if not saved:
        return  # saved without its optimizer
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(root=model).restore(checkpoint).expect_partial()
    variables = optimizer.variables()
    for name, value in saved.items():
        index = name.split("/")[2]
        got = (
            optimizer.iterations
            if index == ".ATTRIBUTES"
            else (variables[int(index)] if index.isdigit() and int(index) < len(variables) else None)
        )
        if got is None or not np.array_equal(np.asarray(got), value):
            raise ModelSourceError(
                f"{folder}: tf_keras could not restore the saved optimizer state ({name}): "
                "pass --inference-only to release the model without it"
            )


def check_formats(fmts: list[str]) -> None:
    bad = [f for f in fmts if f not in KERAS2_FORMATS]
    if bad:
        raise ModelSourceError(
            f"a tf_keras (Keras 2) model releases as {', '.join(KERAS2_FORMATS)}, not {', '.join(bad)}"
        )


def save(model: Any, fmt: str, folder: Path, *, inference_only: bool) -> None:
    check_formats([fmt])
    if fmt == "savedmodel":
        model.save(str(folder), include_optimizer=not inference_only, save_format="tf")
    elif fmt == "h5":
        model.save(str(folder / H5_FILE), include_optimizer=not inference_only, save_format="h5")
        if inference_only:  # without its training config too, so it loads uncompiled
            from kgit.models.training_state import copy_h5_without

            copy_h5_without(folder / H5_FILE, groups=(), attrs=("training_config",))
    else:
        model.save_weights(str(folder / WEIGHTS_FILE))


def version() -> str | None:
    mod = sys.modules.get("tf_keras")
    return getattr(mod, "__version__", None) if mod is not None else None


def use_in_this_process() -> None:
    """Before TensorFlow is imported: make tf.keras mean tf_keras (the validation worker)."""
    os.environ[ENV] = "1"
