"""The ``savedmodel`` format's folder: each weight written once, and read back as a Keras model.

A release folder is a SavedModel (what TensorFlow Serving, ``tf.saved_model.load`` and
``saved_model_cli`` read) plus, in ``assets.extra/`` (which TensorFlow ignores), what kgit needs for
training to resume:

- ``variables/`` holds each layer weight once (Keras' own export writes every weight twice: see
  export()).
- ``assets.extra/model.keras`` is the Keras model (architecture, compile config, assets such as
  vocabularies, optimizer state) without the layer weights that ``variables/`` already holds:
  ``assets.extra/weights_in_variables.json`` names, for each weight left out, the checkpoint variable
  holding exactly its bytes (dtype, shape, sha256). Loading puts them back into a complete ``.keras``
  in a temporary folder and lets Keras (and kgit.models.training_state) load that as any ``.keras``.
- A folder without that file was written before: its ``model.keras`` is complete and loads as it is.

TensorFlow/Keras are imported inside functions, through kgit.models.runtime.import_keras.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError, ModelSourceError, describe, one_line
from kgit.core.metadata import Signature

KERAS_FILE = "assets.extra/model.keras"
WEIGHTS_MAP = "assets.extra/weights_in_variables.json"  # present: model.keras lacks the weights it lists
MAX_MAP_BYTES = 64 << 20  # about 200 bytes per weight listed
CHECKPOINT = "variables/variables"
_WEIGHTS_MEMBER = "model.weights.h5"  # inside a .keras zip
_OPTIMIZER_GROUP = "optimizer"  # the optimizer's variables are not in variables/: they stay in the zip
_MAP_SCHEMA = 1


def has_keras_model(folder: Path) -> bool:
    """True if the folder carries a Keras model (not an inference-only SavedModel)."""
    return (folder / KERAS_FILE).is_file()


# -- writing ------------------------------------------------------------------------------------------
def export(model: Any, folder: Path) -> None:
    """``model.export(folder)`` without writing each weight twice: Keras' export tracks the model's
    Keras variables and, separately, the TensorFlow variables its ``serve`` function captures, and
    the checkpoint in ``variables/`` holds both. Tracking the TensorFlow variables behind the Keras
    ones instead leaves one copy (same SavedModel, same ``serving_default``)."""
    import tensorflow as tf

    from kgit.models.runtime import import_keras

    keras = import_keras()
    try:
        from keras.src.export.export_utils import get_input_signature
    except ImportError:  # another Keras layout: export as Keras does
        model.export(str(folder), format="tf_saved_model", verbose=False)
        return
    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, get_input_signature(model))
    trackable = getattr(archive, "_tf_trackable", None)
    for attr in ("variables", "trainable_variables", "non_trainable_variables"):
        tracked = getattr(trackable, attr, None)
        if tracked is not None:
            setattr(trackable, attr, [_tf_variable(v, tf) for v in tracked])
    archive.write_out(str(folder), verbose=False)


def _tf_variable(variable: Any, tf: Any) -> Any:
    """The tf.Variable holding a Keras variable's value (the one exported functions capture), else
    the variable itself."""
    if isinstance(variable, tf.Variable):
        return variable
    inner = getattr(variable, "_value", None)
    return inner if isinstance(inner, tf.Variable) else variable


def write_keras_model(model: Any, folder: Path) -> None:
    """Write ``assets.extra/model.keras`` into an exported SavedModel ``folder``, leaving out every
    layer weight ``variables/`` already holds byte for byte (listed in ``weights_in_variables.json``)."""
    from kgit.models.training_state import full_optimizer_in_compile_config

    target = folder / KERAS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kgit-keras-") as scratch:
        full = Path(scratch) / "model.keras"
        with full_optimizer_in_compile_config(model):
            model.save(full)
        held = _checkpoint_fingerprints(folder)
        left_out = _copy_keras_file(full, target, Path(scratch), held=held)
    if left_out:
        (folder / WEIGHTS_MAP).write_text(
            json.dumps({"schema": _MAP_SCHEMA, "checkpoint": CHECKPOINT, "weights": left_out}, indent=1) + "\n",
            encoding="utf-8",
        )


def _fingerprint(value: np.ndarray) -> dict[str, Any]:
    value = np.ascontiguousarray(value)
    return {"dtype": value.dtype.str, "shape": list(value.shape), "sha256": hashlib.sha256(value.tobytes()).hexdigest()}


def _key(fp: dict[str, Any]) -> tuple[str, tuple[int, ...], str]:
    return fp["dtype"], tuple(fp["shape"]), fp["sha256"]


def _checkpoint_fingerprints(folder: Path) -> dict[tuple[str, tuple[int, ...], str], str]:
    """Each numeric variable in the SavedModel's checkpoint, by what its bytes are -> its name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(folder / CHECKPOINT))
    held: dict[tuple[str, tuple[int, ...], str], str] = {}
    for name, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        if dtype == tf.string or not dtype.is_numpy_compatible:
            continue
        value = np.asarray(reader.get_tensor(name))
        if value.dtype.kind in "biuf":
            held.setdefault(_key(_fingerprint(value)), name)
    return held


def _copy_keras_file(src_path: Path, dst_path: Path, scratch: Path, *, held: dict[Any, str]) -> list[dict[str, Any]]:
    """Copy a .keras zip, leaving out of its weights file each dataset ``held`` has (outside the
    optimizer's group); return what was left out and where it is."""
    import h5py

    left_out: list[dict[str, Any]] = []
    full, lean = scratch / "full.weights.h5", scratch / "lean.weights.h5"
    with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(dst_path, "w") as dst:
        for info in src.infolist():
            if info.filename != _WEIGHTS_MEMBER:
                dst.writestr(info, src.read(info.filename))
                continue
            _extract(src, info, full)  # h5py seeking inside a zip member is slow: read it once
            with h5py.File(full, "r") as fin, h5py.File(lean, "w") as fout:
                _copy_group(fin, fout, "", held, left_out)
            os.unlink(full)
            dst.write(lean, info.filename, compress_type=info.compress_type)
    return left_out


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    with archive.open(info) as raw, open(path, "wb") as out:
        shutil.copyfileobj(raw, out, 1 << 20)


def _copy_group(src: Any, dst: Any, path: str, held: dict[Any, str], left_out: list[dict[str, Any]]) -> None:
    import h5py

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, obj in src.items():
        inner = f"{path}/{name}" if path else name
        if isinstance(obj, h5py.Group):
            _copy_group(obj, dst.create_group(name), inner, held, left_out)
            continue
        if inner.split("/", 1)[0] != _OPTIMIZER_GROUP and not len(obj.attrs) and obj.dtype.kind in "biuf":
            fp = _fingerprint(np.asarray(obj))
            variable = held.get(_key(fp))
            if variable is not None:
                left_out.append({"path": inner, "variable": variable, **fp})
                continue
        src.copy(obj, dst, name=name)


# -- reading ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def keras_file(folder: Path) -> Iterator[Path]:
    """A complete ``.keras`` file of the release folder's Keras model: the one in the folder (written
    before kgit left weights out of it), or one rebuilt with the weights from ``variables/``, in a
    temporary folder for as long as the ``with`` block runs. Errors name the file in the folder."""
    inner = folder / KERAS_FILE
    if not (folder / WEIGHTS_MAP).is_file():
        yield inner
        return
    with tempfile.TemporaryDirectory(prefix="kgit-keras-") as scratch:
        complete = Path(scratch) / "model.keras"
        _rebuild(folder, complete, Path(scratch))
        try:
            yield complete
        except ModelSourceError as exc:  # name the file the user has, not the temporary one
            raise type(exc)(str(exc).replace(str(complete), str(inner))) from None


def _read_map(folder: Path) -> tuple[str, list[dict[str, Any]]]:
    path = folder / WEIGHTS_MAP
    try:
        data = bounded_yaml.load_json(
            bounded_yaml.read_bytes(path, WEIGHTS_MAP, max_bytes=MAX_MAP_BYTES), WEIGHTS_MAP, max_bytes=MAX_MAP_BYTES
        )
        if data.get("schema") != _MAP_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, this kgit reads {_MAP_SCHEMA}")
        entries = data["weights"]
        for e in entries:
            if not (
                isinstance(e["path"], str)
                and isinstance(e["variable"], str)
                and isinstance(e["sha256"], str)
                and isinstance(e["dtype"], str)
                and all(isinstance(n, int) for n in e["shape"])
            ):
                raise ValueError(f"bad entry {e!r}")
        checkpoint = data["checkpoint"]
        if checkpoint != CHECKPOINT:
            raise ValueError(f"checkpoint {checkpoint!r}")
    except (KgitError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelSourceError(
            f"{path} is damaged ({one_line(exc, 160)}): fetch the release again with kgit get"
        ) from None
    return checkpoint, entries


def _rebuild(folder: Path, complete: Path, scratch: Path) -> None:
    """Write ``complete``: the folder's model.keras with every left-out weight back in its place, each
    checked against the dtype, shape and sha256 recorded when it was left out."""
    import h5py
    import tensorflow as tf

    checkpoint, entries = _read_map(folder)
    try:
        reader = tf.train.load_checkpoint(str(folder / checkpoint))
    except Exception as exc:
        raise ModelSourceError(f"{folder}: cannot read the SavedModel's variables/ ({one_line(exc, 160)})") from None
    weights = scratch / "complete.weights.h5"
    try:
        with zipfile.ZipFile(folder / KERAS_FILE) as src, zipfile.ZipFile(complete, "w") as dst:
            for info in src.infolist():
                if info.filename != _WEIGHTS_MEMBER:
                    dst.writestr(info, src.read(info.filename))
                    continue
                _extract(src, info, weights)
                with h5py.File(weights, "r+") as fh:
                    for entry in entries:
                        fh.create_dataset(entry["path"], data=_checked_value(folder, reader, entry))
                dst.write(weights, info.filename, compress_type=info.compress_type)
                os.unlink(weights)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelSourceError(
            f"{folder / KERAS_FILE} cannot be completed from variables/ ({describe(exc, 160)}): "
            "the release is damaged, fetch it again with kgit get"
        ) from None


def _checked_value(folder: Path, reader: Any, entry: dict[str, Any]) -> np.ndarray:
    try:
        value = np.asarray(reader.get_tensor(entry["variable"]))
    except Exception:
        value = None
    if value is None or _key(_fingerprint(value)) != _key(entry):
        raise ModelSourceError(
            f"{folder}: variables/ does not hold the weight {entry['path']} of the Keras model "
            f"({entry['variable']} is missing or differs): the release is damaged, fetch it again with kgit get"
        )
    return value


def run(folder: Path, arrays: dict[str, np.ndarray], sig: Signature) -> dict[str, np.ndarray]:
    """Outputs of the SavedModel's ``serving_default`` signature, the endpoint TF Serving uses."""
    import tensorflow as tf

    from kgit.models.runtime import to_numpy

    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise ModelSourceError(f"tf.saved_model.load({folder}) failed: {one_line(exc)}") from None
    if "serving_default" not in loaded.signatures:
        raise ModelSourceError(f"{folder} has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    expected = fn.structured_input_signature[1]
    if set(expected) == {s.name for s in sig.inputs}:
        kwargs = {name: tf.constant(arrays[name]) for name in expected}
    elif len(expected) == len(sig.inputs):  # names differ (e.g. positional inputs): match by order
        kwargs = {name: tf.constant(arrays[s.name]) for name, s in zip(sorted(expected), sig.inputs)}
    else:
        raise ModelSourceError(
            f"{folder}: serving_default takes {sorted(expected)}, the model's inputs are {[s.name for s in sig.inputs]}"
        )
    out = fn(**kwargs)
    names = [s.name for s in sig.outputs]
    if set(out) == set(names):
        return {k: to_numpy(v) for k, v in out.items()}
    # Keras export names list/single outputs output_0, output_1, ...
    return {n: to_numpy(out[k]) for n, k in zip(names, sorted(out, key=_natural_key))}


def _natural_key(key: str) -> tuple[str, int]:
    head = key.rstrip("0123456789")
    tail = key[len(head) :]
    return head, int(tail) if tail else -1
