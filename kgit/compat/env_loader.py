"""Run by an isolated environment's own Python, by path: ``python -I env_loader.py check SPEC RESULT``.

This file imports nothing of kgit (the environment has no kgit, and may have any Keras, tf_keras or
TensorFlow version), only the standard library, NumPy and what the environment provides. It never
raises: every outcome is written to RESULT as JSON.

``check SPEC RESULT``: SPEC (JSON) lists the artifacts (format, path, reference inputs and outputs,
tolerance, input and output names and structures), the Keras flavour to load with (``keras`` or
``tf_keras``) and the release's custom objects (``MODULE:ATTR``, imported from ``paths``). For each
artifact: load it (``savedmodel``: ``tf.saved_model.load`` and its ``serving_default`` signature, as
TensorFlow Serving runs it; ``keras``/``h5``: the flavour's ``load_model`` with ``compile=False`` and
Keras' safe mode on), run the reference inputs, compare with the reference outputs. Result per
artifact: ``loads``, ``loads-but-differs`` (with the largest difference) or ``fails`` (with the first
line of the error).

``ops RESULT``: the names of every op registered in this environment's TensorFlow.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _first_line(exc: BaseException) -> str:
    """The error's first line; for Keras' nested deserialization errors, the innermost cause's."""
    text = str(exc)
    marker = "Exception encountered:"
    if marker in text:  # "... could not be deserialized ... Exception encountered: <the cause>"
        text = text.rsplit(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")[:300]


def _keras(flavour: str) -> Any:
    if flavour == "tf_keras":
        return importlib.import_module("tf_keras")
    return importlib.import_module("keras")


def _custom_objects(specs: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for spec in specs:
        module, _, attr = spec.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        found[attr.rsplit(".", 1)[-1] if attr else module] = obj
    return found


def _numpy(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def _max_abs_diff(expected: Any, actual: Any) -> float:
    import numpy as np

    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.shape != actual.shape:
        return float("inf")
    if expected.dtype.kind in "USO" or actual.dtype.kind in "USO":
        e = np.char.decode(expected, "utf-8") if expected.dtype.kind == "S" else expected.astype(str)
        a = np.char.decode(actual, "utf-8") if actual.dtype.kind == "S" else actual.astype(str)
        return 0.0 if np.array_equal(e, a) else float("inf")
    if expected.size == 0:
        return 0.0
    diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    return float("inf") if np.any(np.isnan(diff)) else float(np.max(diff))


def _natural(key: str) -> tuple[str, int]:
    head = key.rstrip("0123456789")
    tail = key[len(head) :]
    return head, int(tail) if tail else -1


def _run_savedmodel(art: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    loaded = tf.saved_model.load(art["path"])
    if "serving_default" not in loaded.signatures:
        raise ValueError("the SavedModel has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    expected = fn.structured_input_signature[1]
    names = art["input_names"]
    if set(expected) == set(names):
        kwargs = {n: tf.constant(inputs[n]) for n in expected}
    elif len(expected) == len(names):
        kwargs = {n: tf.constant(inputs[s]) for n, s in zip(sorted(expected), names)}
    else:
        raise ValueError(f"serving_default takes {sorted(expected)}, the release's inputs are {names}")
    out = fn(**kwargs)
    outputs = art["output_names"]
    if set(out) == set(outputs):
        return {k: _numpy(v) for k, v in out.items()}
    return {n: _numpy(out[k]) for n, k in zip(outputs, sorted(out, key=_natural))}


def _run_keras(art: dict[str, Any], inputs: dict[str, Any], keras: Any, custom: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    options: dict[str, Any] = {"compile": False, "custom_objects": custom or None}
    if art.get("safe_mode") is False:  # the person checking allowed the release's code (kgit compat --unsafe)
        options["safe_mode"] = False
    model = keras.models.load_model(art["path"], **options)
    names = art["input_names"]
    args: Any
    if art.get("input_structure") == "dict":
        args = {n: tf.constant(inputs[n]) for n in names}
    elif art.get("input_structure") == "list":
        args = [tf.constant(inputs[n]) for n in names]
    else:
        args = tf.constant(inputs[names[0]])
    out = model(args, training=False)
    outputs = art["output_names"]
    if isinstance(out, dict):
        return {k: _numpy(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return {n: _numpy(v) for n, v in zip(outputs, out)}
    return {outputs[0]: _numpy(out)}


def _check(art: dict[str, Any], spec: dict[str, Any], custom: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    result: dict[str, Any] = {"format": art["format"], "result": "fails", "max_diff": None, "error": None}
    try:
        with np.load(art["inputs"], allow_pickle=False) as data:
            inputs = {k: data[k] for k in data.files}
        with np.load(art["outputs"], allow_pickle=False) as data:
            expected = {k: data[k] for k in data.files}
        if art["format"] == "savedmodel":
            got = _run_savedmodel(art, inputs)
        else:
            got = _run_keras(art, inputs, _keras(spec["flavour"]), custom)
        diffs = [_max_abs_diff(want, got[name]) if name in got else float("inf") for name, want in expected.items()]
        worst = max(diffs, default=0.0)
        result["max_diff"] = worst if worst != float("inf") else None
        result["result"] = "loads" if worst <= art["atol"] else "loads-but-differs"
        if worst == float("inf"):
            missing = [n for n in expected if n not in got]
            result["error"] = f"outputs {missing} are missing" if missing else "an output's shape or value differs"
    except BaseException as exc:  # what the artifact does in this environment is the answer, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        result["error"] = _first_line(exc)
        if os.environ.get("KGIT_DEBUG"):
            traceback.print_exc()
    return result


def _versions() -> dict[str, str]:
    found = {}
    for module in ("keras", "tf_keras", "tensorflow", "numpy"):
        mod = sys.modules.get(module)
        version = getattr(mod, "__version__", None) if mod is not None else None
        if isinstance(version, str):
            found[module] = version
    return found


def check(spec_path: str, result_path: str) -> int:
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    if spec.get("flavour") == "tf_keras":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    sys.path[:0] = [p for p in spec.get("paths", []) if p not in sys.path]
    custom: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    try:
        custom = _custom_objects(spec.get("custom_objects") or [])
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = f"importing the release's custom objects: {_first_line(exc)}"
        results = [
            {"format": a["format"], "result": "fails", "max_diff": None, "error": error} for a in spec["artifacts"]
        ]
    if not results:
        results = [_check(art, spec, custom) for art in spec["artifacts"]]
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump({"formats": results, "libraries": _versions()}, fh)
    return 0


def ops(result_path: str) -> int:
    import tensorflow as tf

    names: list[str] = []
    try:
        from tensorflow.core.framework import op_def_pb2
        from tensorflow.python.client import pywrap_tf_session

        buf = pywrap_tf_session.TF_GetAllOpList()
        raw = buf if isinstance(buf, bytes) else pywrap_tf_session.TF_GetBuffer(buf)
        op_list = op_def_pb2.OpList()
        op_list.ParseFromString(raw)
        names = [op.name for op in op_list.op]
    except Exception:  # another TensorFlow layout: the ops Python can call
        names = [n for n in dir(tf.raw_ops) if not n.startswith("_")]
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump({"ops": sorted(set(names)), "tensorflow": tf.__version__}, fh)
    return 0


if __name__ == "__main__":
    command, *args = sys.argv[1:] or [""]
    if command == "check" and len(args) == 2:
        sys.exit(check(*args))
    if command == "ops" and len(args) == 1:
        sys.exit(ops(*args))
    sys.stderr.write("usage: env_loader.py check SPEC RESULT | ops RESULT\n")
    sys.exit(2)
