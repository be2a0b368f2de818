"""Saving and loading models per format. The only module that imports TensorFlow or Keras.

Formats (one folder per format and version; metadata and reference files sit beside the model):
- ``savedmodel``: the folder is a SavedModel (``serving_default`` for TensorFlow Serving); the Keras
  model, optimizer state included, rides along in ``assets.extra/model.keras`` so training resumes.
- ``keras``: ``model.keras``, Keras' native zip (config, weights, optimizer state).
- ``h5``: ``model.h5``, legacy single HDF5 file.
- ``weights``: ``model.weights.h5``; the architecture is rebuilt by the recorded builder function.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kgit.errors import CustomObjectError, ModelSourceError, UnsafeModelError
from kgit.metadata import Signature, TensorSpec
from kgit.reference import dtype_name

FORMATS = ("savedmodel", "keras", "h5", "weights")
MODEL_FILES = {"keras": "model.keras", "h5": "model.h5", "weights": "model.weights.h5"}
SAVEDMODEL_KERAS = "assets.extra/model.keras"
_KERAS_MODULE_ROOTS = {"keras", "tensorflow", "tf_keras", "builtins", "numpy"}


# -- importing TensorFlow quietly -------------------------------------------------------------
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


# -- user code: modules, builders, custom objects ---------------------------------------------
def resolve_attr(spec: str, what: str) -> Any:
    """Import ``module:attr`` (``module.attr`` accepted for convenience) from the current sys.path."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ModelSourceError(f"{what} {spec!r} is not of the form MODULE:NAME")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSourceError(f"{what} {spec!r}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # user code failed while importing
        raise ModelSourceError(f"{what} {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSourceError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def qualified_name(obj: Any, what: str) -> str:
    """``module:qualname`` of a function or class that another process can import."""
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if not module or not qual or "<" in qual:
        raise ModelSourceError(f"{what} {obj!r} must be a module-level function or class")
    if module == "__main__":
        raise ModelSourceError(
            f"{what} {qual} is defined in the running script (__main__), which no other process can import: "
            "move it into an importable module"
        )
    return f"{module}:{qual}"


def load_custom_objects(specs: list[str]) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    for spec in specs:
        obj = resolve_attr(spec, "custom object")
        objects[spec.replace(":", ".").rsplit(".", 1)[-1]] = obj
        objects[getattr(obj, "__name__", spec)] = obj
    return objects


def import_modules(modules: list[str]) -> None:
    for module in modules:
        if module == "__main__":
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CustomObjectError(
                f"the model uses custom classes from module {module!r}, which cannot be imported here ({exc}): "
                "install it or add it to PYTHONPATH"
            ) from None


def _walk_classes(config: Any) -> Iterator[dict[str, Any]]:
    if isinstance(config, dict):
        if "class_name" in config and "module" in config:
            yield config
        for value in config.values():
            yield from _walk_classes(value)
    elif isinstance(config, list):
        for value in config:
            yield from _walk_classes(value)


def _custom_entries(config: Any) -> list[dict[str, Any]]:
    """Serialized objects that are not Keras' own: a non-Keras module, or (Keras writes
    ``module: null`` for registered classes) a registered name."""
    found = []
    for e in _walk_classes(config):
        module = e.get("module")
        if isinstance(module, str):
            if module.split(".")[0] not in _KERAS_MODULE_ROOTS:
                found.append(e)
        elif e.get("registered_name"):
            found.append(e)
    return found


def _is_unsafe(config: Any) -> bool:
    return any(e.get("class_name") == "Lambda" for e in _walk_classes(config))


def _model_config(model: Any) -> Any:
    keras = import_keras()
    config = keras.saving.serialize_keras_object(model)
    if getattr(model, "compiled", False):
        try:
            config = {"model": config, "compile": model.get_compile_config()}
        except Exception:  # a model compiled with objects Keras cannot serialise: checked on reload
            pass
    return config


def inspect_custom_objects(model: Any, custom_objects: dict[str, Any], unsafe: bool) -> list[str]:
    """Check that another process can rebuild ``model``; return the modules it must import.

    A class registered with ``register_keras_serializable`` in an importable module is fine (kgit
    records the module and imports it when loading). A class defined in the training script, or
    one neither registered nor passed as a custom object, cannot be loaded elsewhere: refuse now.
    """
    keras = import_keras()
    config = _model_config(model)
    if _is_unsafe(config) and not unsafe:
        raise UnsafeModelError(
            "the model contains a Lambda layer (arbitrary Python code), which Keras' safe mode refuses to load: "
            "replace it with a registered custom layer, or pass --unsafe if you trust this model's code"
        )
    modules: list[str] = []
    for entry in _custom_entries(config):
        cls_name = entry["class_name"]
        registered = entry.get("registered_name") or cls_name
        if cls_name in custom_objects or registered in custom_objects:
            continue
        fixes = (
            f"move it into an importable module and decorate it with "
            f"@keras.saving.register_keras_serializable(), or pass --custom-objects MODULE:{cls_name}"
        )
        obj = keras.saving.get_registered_object(registered)
        module = getattr(obj, "__module__", None) or entry.get("module")
        if module == "__main__":
            raise CustomObjectError(
                f"custom class {cls_name} is defined in the training script (__main__), so no other process can load the model: {fixes}"
            )
        if obj is None:
            raise CustomObjectError(f"custom class {cls_name} (module {module}) is not registered with Keras: {fixes}")
        if module and module not in modules:
            modules.append(module)
    return modules


def training_config(model: Any) -> dict[str, Any]:
    """Optimizer config, loss and metrics of a compiled model, as JSON-safe values."""
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        return {"compiled": False}
    result: dict[str, Any] = {"compiled": True}
    opt = model.optimizer
    try:
        cfg = opt.get_config()
        result["optimizer"] = {"class_name": type(opt).__name__, "config": _json_safe(cfg),
                               "iterations": int(np.asarray(opt.iterations))}
    except Exception as exc:
        result["optimizer"] = {"class_name": type(opt).__name__, "error": str(exc)}
    try:
        compile_cfg = model.get_compile_config() or {}
        result["loss"] = _json_safe(compile_cfg.get("loss"))
        result["metrics"] = _json_safe(compile_cfg.get("metrics"))
        result["loss_weights"] = _json_safe(compile_cfg.get("loss_weights"))
    except Exception as exc:
        result["loss"] = f"unserialisable ({exc})"
    return result


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# -- getting a model ---------------------------------------------------------------------------
def _read_file_config(path: Path) -> Any:
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("config.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError):
            raise ModelSourceError(f"{path} is not a valid .keras file (truncated or not a Keras model)") from None
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
            if raw is None:
                raise ModelSourceError(f"{path} is an HDF5 file without a model (weights only?): give a full model")
            return json.loads(raw)
    except OSError:
        raise ModelSourceError(f"{path} is not a valid HDF5 model file (truncated or not a model)") from None


def obtain_model(source: Any, custom_objects: dict[str, Any], unsafe: bool) -> Any:
    """A Keras model from an in-memory model, a file/folder path, or ``module:function``."""
    keras = import_keras()
    if isinstance(source, keras.Model):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ModelSourceError(f"cannot release a {type(source).__name__}: give a keras.Model, a model file or MODULE:FUNCTION")
    text = os.fspath(source)
    path = Path(text)
    if path.exists():
        return _load_source_path(path, custom_objects, unsafe)
    if ":" in text and not text.endswith((".keras", ".h5")):
        factory = resolve_attr(text, "model source")
        if not callable(factory):
            raise ModelSourceError(f"model source {text!r} is not callable")
        try:
            model = factory()
        except Exception as exc:
            raise ModelSourceError(f"model source {text}() raised {type(exc).__name__}: {exc}") from None
        if not isinstance(model, keras.Model):
            raise ModelSourceError(f"model source {text}() returned a {type(model).__name__}, not a keras.Model")
        return model
    raise ModelSourceError(f"model source {text!r} does not exist (expected a .keras/.h5 file, a SavedModel folder or MODULE:FUNCTION)")


def _load_source_path(path: Path, custom_objects: dict[str, Any], unsafe: bool) -> Any:
    if path.is_dir():
        if (path / SAVEDMODEL_KERAS).is_file():
            return _load_source_path(path / SAVEDMODEL_KERAS, custom_objects, unsafe)
        if not (path / "saved_model.pb").is_file():
            raise ModelSourceError(f"{path} is a folder but not a SavedModel (no saved_model.pb)")
        if not (path / "variables").is_dir():
            raise ModelSourceError(f"{path} is an incomplete SavedModel: its variables/ folder is missing")
        return _wrap_savedmodel(path)
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelSourceError(f"{path}: unsupported model file (expected .keras, .h5 or a SavedModel folder)")
    config = _read_file_config(path)
    if _is_unsafe(config) and not unsafe:
        raise UnsafeModelError(
            f"{path} contains a Lambda layer (arbitrary Python code) that Keras' safe mode refuses: pass --unsafe if you trust it"
        )
    import_modules(sorted({e["module"] for e in _custom_entries(config) if e.get("module") not in (None, "__main__")}))
    return _keras_load(path, custom_objects, unsafe)


def _keras_load(path: Path, custom_objects: dict[str, Any], unsafe: bool) -> Any:
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


def _wrap_savedmodel(path: Path) -> Any:
    """A plain SavedModel (no Keras model inside) as an inference-only Keras model."""
    keras = import_keras()
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ModelSourceError(f"{path} has no serving_default signature")
    sig = loaded.signatures["serving_default"]
    inputs = {
        name: keras.Input(shape=spec.shape[1:], dtype=spec.dtype.name, name=name)
        for name, spec in sig.structured_input_signature[1].items()
    }
    class _SignatureLayer(keras.layers.TFSMLayer):  # type: ignore[name-defined]
        """serving_default takes keyword arguments; TFSMLayer passes one positional."""

        def call(self, inputs: Any, training: bool = False, **kwargs: Any) -> Any:
            return self.call_endpoint_fn(**inputs)

    layer = _SignatureLayer(str(path), call_endpoint="serving_default")
    model = keras.Model(inputs, layer(inputs))
    model._kgit_plain_savedmodel = True
    return model


def is_plain_savedmodel(model: Any) -> bool:
    return bool(getattr(model, "_kgit_plain_savedmodel", False))


# -- signatures and calls ----------------------------------------------------------------------
def _structure(value: Any) -> str:
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, (list, tuple)) and len(value) != 1:
        return "list"
    return "single"


def _flatten(value: Any, names: list[str] | None = None) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        names = names or [f"output_{i}" for i in range(len(value))]
        return dict(zip(names, value))
    return {(names[0] if names else "output_0"): value}


def model_signature(model: Any) -> Signature | None:
    """Input/output names, shapes and dtypes of a built functional/sequential model, else None."""
    try:
        in_list, out_list = list(model.inputs or []), list(model.outputs or [])
    except (AttributeError, ValueError, TypeError):
        return None
    if not in_list or not out_list:
        return None
    # Functional models keep the structure they were built with (dict, list); Sequential has lists.
    try:
        inputs = model.input
    except (AttributeError, ValueError):
        inputs = in_list if len(in_list) > 1 else in_list[0]
    try:
        outputs = model.output
    except (AttributeError, ValueError):
        outputs = out_list if len(out_list) > 1 else out_list[0]
    in_struct = _structure(inputs)
    in_names = None if in_struct == "dict" else [t.name for t in in_list]
    in_flat = _flatten(inputs, in_names)
    out_flat = _flatten(outputs)
    return Signature(
        inputs=[TensorSpec(n, list(t.shape), dtype_name(t.dtype)) for n, t in in_flat.items()],
        outputs=[TensorSpec(n, list(t.shape), dtype_name(t.dtype)) for n, t in out_flat.items()],
        input_structure=in_struct,
        output_structure=_structure(outputs),
    )


def call_args(arrays: dict[str, np.ndarray], sig: Signature) -> Any:
    ordered = [arrays[s.name] for s in sig.inputs]
    if sig.input_structure == "dict":
        return {s.name: arrays[s.name] for s in sig.inputs}
    if sig.input_structure == "list":
        return ordered
    return ordered[0]


def _to_numpy(value: Any) -> np.ndarray:
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
    return {k: _to_numpy(v) for k, v in _flatten(out, names).items()}


def infer_signature(model: Any, arrays: dict[str, np.ndarray]) -> Signature:
    """Signature of a model that has none declared (subclassed), from user reference inputs."""
    from kgit.reference import spec_of

    names = list(arrays)
    structure = "single" if len(names) == 1 else "dict"
    sig = Signature([spec_of(n, np.asarray(a)) for n, a in arrays.items()], [], structure, "single")
    import tensorflow as tf

    args = call_args(arrays, sig)
    out = model(tf.nest.map_structure(tf.constant, args), training=False)
    flat = _flatten(out)
    sig.outputs = [spec_of(n, _to_numpy(v)) for n, v in flat.items()]
    sig.output_structure = _structure(out)
    return sig


# -- save --------------------------------------------------------------------------------------
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


# -- load --------------------------------------------------------------------------------------
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
        return _keras_load(inner, custom_objects, unsafe)
    if fmt in ("keras", "h5"):
        return _keras_load(folder / MODEL_FILES[fmt], custom_objects, unsafe)
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
        return {k: _to_numpy(v) for k, v in out.items()}
    # Keras export names list/single outputs output_0, output_1, ...
    return {n: _to_numpy(out[k]) for n, k in zip(names, sorted(out, key=_natural_key))}


def _natural_key(key: str) -> tuple[str, int]:
    head = key.rstrip("0123456789")
    tail = key[len(head):]
    return head, int(tail) if tail else -1
