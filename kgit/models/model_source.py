"""Getting a model to release, and what kgit must know about it before saving it.

From an in-memory model, a ``.keras``/``.h5`` file, a SavedModel folder or ``module:function``;
then: can another process rebuild it (custom classes, Python lambdas)? what are its inputs and
outputs? how was it compiled? TensorFlow/Keras are imported lazily, through kgit.models.formats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kgit.core.errors import (
    CustomObjectError,
    ModelSignatureError,
    ModelSourceError,
    UnsafeModelError,
    describe,
)
from kgit.core.metadata import Signature, TensorSpec
from kgit.models import config_scan, savedmodel
from kgit.models.formats import (
    SAVEDMODEL_KERAS,
    call_args,
    flatten_structure,
    import_keras,
    load_keras_file,
    structure_of,
    to_numpy,
)
from kgit.models.reference import dtype_name
from kgit.models.source_kind import source_kind
from kgit.models.training_state import is_compiled, optimizer_state
from kgit.models.usercode import import_modules, resolve_attr

_KERAS_MODULE_ROOTS = {"keras", "tensorflow", "tf_keras", "builtins", "numpy"}


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


def _check_code(config: Any, where: str, unsafe: bool) -> None:
    """Refuse the releaser's model if its configuration holds code (a Lambda layer...) and they did not
    pass --unsafe, or anything kgit never loads (kgit.models.config_scan; the module check is left to the
    custom-object rules below: this is the releaser's own model)."""
    fix = "replace it with a registered custom layer, or pass --unsafe if you trust this model's code"
    problem = config_scan.refusal(where, config_scan.scan(config, None), allow_code=unsafe, fix=fix)
    if problem is not None:
        raise UnsafeModelError(problem)


def _saving(model: Any) -> Any:
    """The saving API of the model's own Keras (Keras 3, or tf_keras for a Keras 2 model)."""
    from kgit.models import tf_keras_flavour

    return tf_keras_flavour.module().saving if tf_keras_flavour.is_model(model) else import_keras().saving


def _model_config(model: Any) -> Any:
    config = _saving(model).serialize_keras_object(model)
    if is_compiled(model):
        try:
            config = {"model": config, "compile": model.get_compile_config()}
        except (TypeError, ValueError, NotImplementedError):
            # a loss or metric Keras cannot serialise: nothing to scan here; the fresh-process reload
            # in validation refuses the release if the compiled model does not come back
            pass
    return config


def inspect_custom_objects(model: Any, custom_objects: dict[str, Any], unsafe: bool) -> list[str]:
    """Check that another process can rebuild ``model``; return the modules it must import.

    A class registered with ``register_keras_serializable`` in an importable module is fine (kgit
    records the module and imports it when loading). A class defined in the training script, or
    one neither registered nor passed as a custom object, cannot be loaded elsewhere: refuse now.
    """
    config = _model_config(model)
    _check_code(config, "the model", unsafe)
    modules: list[str] = []
    for entry in _custom_entries(config):
        cls_name = entry["class_name"]
        registered = entry.get("registered_name") or cls_name
        if cls_name in custom_objects or registered in custom_objects:
            continue
        fixes = (
            f"move it into an importable module and decorate it with "
            f"@keras.saving.register_keras_serializable(), or pass --custom-object MODULE:{cls_name}"
        )
        obj = _saving(model).get_registered_object(registered)
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
    if not is_compiled(model) or getattr(model, "optimizer", None) is None:
        return {"compiled": False}
    result: dict[str, Any] = {"compiled": True}
    opt = model.optimizer
    state = optimizer_state(model) or {"class_name": type(opt).__name__}
    try:
        result["optimizer"] = {"class_name": state["class_name"], "config": _json_safe(opt.get_config()), **state}
    except Exception as exc:
        result["optimizer"] = {**state, "error": str(exc)}
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


def _read_file_config(path: Path) -> list[Any]:
    """The model configuration(s) in a .keras or .h5 file, read without loading it."""
    try:
        configs = config_scan.read_configs(path)
    except ModelSourceError:
        what = (
            ".keras file (truncated or not a Keras model)"
            if path.suffix == ".keras"
            else "HDF5 model file (truncated or not a model)"
        )
        raise ModelSourceError(f"{path} is not a valid {what}") from None
    if not configs:
        raise ModelSourceError(f"{path} is an HDF5 file without a model (weights only?): give a full model")
    return configs


def obtain_model(source: Any, custom_objects: dict[str, Any], unsafe: bool, *, training_state: bool = True) -> Any:
    """A Keras model from an in-memory model, a file/folder path, or ``module:function``; from a file,
    with its training state unless ``training_state`` is false (an inference-only release)."""
    from kgit.models import tf_keras_flavour

    keras = import_keras()
    if isinstance(source, keras.Model) or tf_keras_flavour.is_model(source):
        return source
    kind = source_kind(source)
    if kind == "model":
        raise ModelSourceError(
            f"cannot release a {type(source).__name__}: give a keras.Model, a model file or MODULE:FUNCTION"
        )
    text = os.fspath(source)
    if kind == "path":
        return _load_source_path(Path(text), custom_objects, unsafe, training_state)
    factory = resolve_attr(text, "model source")
    if not callable(factory):
        raise ModelSourceError(f"model source {text!r} is not callable")
    try:
        model = factory()
    except Exception as exc:
        raise ModelSourceError(f"model source {text}() raised {describe(exc)}") from None
    if not isinstance(model, keras.Model):
        raise ModelSourceError(f"model source {text}() returned a {type(model).__name__}, not a keras.Model")
    return model


def _load_source_path(path: Path, custom_objects: dict[str, Any], unsafe: bool, training_state: bool) -> Any:
    from kgit.models import tf_keras_flavour

    if path.is_dir():
        if (path / SAVEDMODEL_KERAS).is_file():  # a kgit release folder: its Keras model, weights back in
            with savedmodel.keras_file(path) as inner:
                return _load_source_path(inner, custom_objects, unsafe, training_state)
        if tf_keras_flavour.is_savedmodel(path):  # tf_keras' model.save(dir): the model and its training state
            for config in config_scan.read_configs(path / tf_keras_flavour.SAVEDMODEL_MARKER):
                _check_code(config, str(path), unsafe)  # tf_keras has no safe mode here: before it loads
            return tf_keras_flavour.load(path, custom_objects, training_state=training_state)
        if not (path / "saved_model.pb").is_file():
            raise ModelSourceError(f"{path} is a folder but not a SavedModel (no saved_model.pb)")
        if not (path / "variables").is_dir():
            raise ModelSourceError(f"{path} is an incomplete SavedModel: its variables/ folder is missing")
        return _wrap_savedmodel(path)
    config = _read_file_config(path)  # (source_kind refused any other suffix)
    _check_code(config, str(path), unsafe)  # before anything is imported or loaded
    import_modules(sorted({e["module"] for e in _custom_entries(config) if e.get("module") not in (None, "__main__")}))
    if path.suffix != ".keras" and tf_keras_flavour.is_h5(path):
        return tf_keras_flavour.load(path, custom_objects, training_state=training_state)
    return load_keras_file(path, custom_objects, unsafe, training_state=training_state)


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
    in_struct = structure_of(inputs)
    in_names = None if in_struct == "dict" else [t.name for t in in_list]
    in_flat = flatten_structure(inputs, in_names)
    out_flat = flatten_structure(outputs)
    return Signature(
        inputs=[TensorSpec(n, list(t.shape), dtype_name(t.dtype)) for n, t in in_flat.items()],
        outputs=[TensorSpec(n, list(t.shape), dtype_name(t.dtype)) for n, t in out_flat.items()],
        input_structure=in_struct,
        output_structure=structure_of(outputs),
    )


def infer_signature(model: Any, arrays: dict[str, np.ndarray]) -> Signature:
    """Signature of a model that has none declared (subclassed), from user reference inputs."""
    from kgit.models.reference import spec_of

    names = list(arrays)
    structure = "single" if len(names) == 1 else "dict"
    sig = Signature([spec_of(n, np.asarray(a)) for n, a in arrays.items()], [], structure, "single")
    return _with_outputs(model, sig, arrays)


def _with_outputs(model: Any, sig: Signature, arrays: dict[str, np.ndarray]) -> Signature:
    """``sig`` (inputs only) completed with the outputs the model returns on ``arrays``."""
    import tensorflow as tf

    from kgit.models.reference import spec_of

    args = call_args(arrays, sig)
    out = model(tf.nest.map_structure(tf.constant, args), training=False)
    flat = flatten_structure(out)
    sig.outputs = [spec_of(n, to_numpy(v)) for n, v in flat.items()]
    sig.output_structure = structure_of(out)
    return sig


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


def built_signature(model: Any, model_name: str, vocabulary: list[str] | None = None) -> Signature:
    """Signature of a subclassed model (no declared inputs) from the input shapes Keras recorded when
    it was built (``get_build_config``); the output signature comes from running it once."""
    from kgit.models.reference import generate_inputs

    fix = "pass --reference-input FILE.npz (arrays named like its inputs) so kgit can record its signature"
    try:
        config = model.get_build_config() or {}
    except Exception:
        config = {}
    if "input_shape" in config:
        arg, shapes = "input", config["input_shape"]
    elif len(config.get("shapes_dict") or {}) == 1:
        key, shapes = next(iter(config["shapes_dict"].items()))
        arg = key.removesuffix("_shape") or "input"
    elif config.get("shapes_dict"):
        raise ModelSignatureError(
            f"the model takes several call arguments ({', '.join(config['shapes_dict'])}) and declares no inputs: {fix}"
        )
    else:
        raise ModelSignatureError(
            f"the model has no declared inputs and has not been built (a subclassed model never called): "
            f"build it (call it once on data, or model.build(shape)), or {fix}"
        )

    def spec(name: str, shape: Any) -> TensorSpec:
        dims = [None if d is None else int(d) for d in shape]
        return TensorSpec(name, [None, *dims[1:]] if dims else [], "float32")

    if isinstance(shapes, dict) and all(_is_shape(v) for v in shapes.values()):
        sig = Signature([spec(str(k), v) for k, v in shapes.items()], [], "dict", "single")
    elif _is_shape(shapes):
        sig = Signature([spec(arg, shapes)], [], "single", "single")
    elif isinstance(shapes, (list, tuple)) and shapes and all(_is_shape(v) for v in shapes):
        sig = Signature([spec(f"{arg}_{i}", v) for i, v in enumerate(shapes)], [], "list", "single")
    else:
        raise ModelSignatureError(
            f"the model has no declared inputs and kgit cannot read the shapes it was built with: {fix}"
        )
    try:
        return _with_outputs(model, sig, generate_inputs(sig, model_name, vocabulary))
    except Exception as exc:
        shown = ", ".join(f"{s.name} {s.shape}" for s in sig.inputs)
        raise ModelSignatureError(
            f"the model was built with inputs {shown} but fails on float32 inputs of those shapes "
            f"({describe(exc, 150)}): {fix}"
        ) from None


def string_vocabulary(model: Any) -> list[str]:
    """Every token of the model's StringLookup and TextVectorization layers (special tokens left
    out), in the layers' order: generated string inputs are drawn from it."""
    keras = import_keras()
    kinds = (keras.layers.StringLookup, keras.layers.TextVectorization)
    tokens: dict[str, None] = {}
    try:
        layers = list(model._flatten_layers(include_self=False))
    except Exception:
        layers = list(getattr(model, "layers", []))
    for layer in layers:
        if not isinstance(layer, kinds):
            continue
        try:
            vocab = layer.get_vocabulary()
        except Exception:
            continue
        lookup = getattr(layer, "_lookup_layer", layer)
        special = {"", getattr(lookup, "oov_token", None), getattr(lookup, "mask_token", None)}
        for token in vocab:
            text = token.decode("utf-8", "replace") if isinstance(token, bytes) else str(token)
            if text not in special:
                tokens[text] = None
    return list(tokens)
