"""Reference inputs and outputs: generate them from a signature, store them, compare them.

NumPy only; no TensorFlow here, so this can run in any process.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kgit.core.errors import ModelSignatureError
from kgit.core.metadata import Signature, TensorSpec

BATCH = 3  # reference batch size used where a dimension is unknown in the signature's first axis
FREE_DIM = 4  # size used for other unknown dimensions


def _seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


OOV_STRING = "kgit out-of-vocabulary value"


def _strings(count: int, rng: np.random.Generator, vocabulary: list[str] | None) -> list[str]:
    """``count`` strings: drawn from ``vocabulary`` (the model's own tokens, so its lookups are
    exercised) with the last one out of it; without a vocabulary, distinct placeholder strings."""
    if not vocabulary:
        return [f"kgit reference {i}" for i in range(count)]
    oov = OOV_STRING
    while oov in vocabulary:
        oov += "!"
    if count == 1:
        return [vocabulary[0]]
    # every token once (in a seeded order) before any repeats, so rows differ where they can
    order = np.concatenate([rng.permutation(len(vocabulary)) for _ in range((count - 1) // len(vocabulary) + 1)])
    return [vocabulary[int(i)] for i in order[: count - 1]] + [oov]


def generate_inputs(sig: Signature, model_name: str, vocabulary: list[str] | None = None) -> dict[str, np.ndarray]:
    """Deterministic inputs for every input of ``sig``: same signature, name and vocabulary, same arrays.
    String inputs are drawn from ``vocabulary`` (the model's lookup tokens) plus one unknown value."""
    result = {}
    for spec in sig.inputs:
        shape = [BATCH if (d is None and i == 0) else (FREE_DIM if d is None else d) for i, d in enumerate(spec.shape)]
        rng = np.random.default_rng(_seed(model_name, spec.name))
        dtype = np.dtype(spec.dtype) if spec.dtype != "string" else None
        if spec.dtype == "string":
            flat = _strings(int(np.prod(shape)) if shape else 1, rng, vocabulary)
            arr: np.ndarray = np.array(flat, dtype=object).reshape(shape)
        elif dtype is not None and dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype is not None and dtype.kind in "iu":
            # 0 and 1 are valid indices for every embedding and lookup table.
            arr = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype is not None and dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ModelSignatureError(
                f"cannot generate reference inputs for input {spec.name!r} of dtype {spec.dtype}: "
                "pass --reference-input FILE.npz"
            )
        result[spec.name] = arr
    return result


def dtype_name(dtype: Any) -> str:
    if isinstance(dtype, np.dtype) and dtype.kind in "USO":  # numpy calls '<U6' "str192"
        return "string"
    text = str(getattr(dtype, "name", dtype))
    if text in ("object", "str", "bytes") or text.startswith("<U") or text.startswith("|S"):
        return "string"
    return text


def check_inputs(arrays: Mapping[str, np.ndarray], sig: Signature) -> dict[str, np.ndarray]:
    """Match user-supplied reference arrays to the signature; return them keyed by input name."""
    names = [s.name for s in sig.inputs]
    keys = list(arrays)
    if len(names) == 1 and keys == ["arr_0"]:
        arrays = {names[0]: arrays["arr_0"]}
        keys = names
    missing = [n for n in names if n not in arrays]
    extra = [k for k in keys if k not in names]
    if missing or extra:
        raise ModelSignatureError(
            f"reference inputs do not match the model's inputs {names}: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )
    out = {}
    for spec in sig.inputs:
        arr = np.asarray(arrays[spec.name])
        if len(arr.shape) != len(spec.shape) or any(d is not None and d != a for d, a in zip(spec.shape, arr.shape)):
            raise ModelSignatureError(
                f"reference input {spec.name!r} has shape {list(arr.shape)}, the model expects {spec.shape}"
            )
        want, got = spec.dtype, dtype_name(arr.dtype)
        if (want == "string") != (got == "string"):
            raise ModelSignatureError(f"reference input {spec.name!r} has dtype {got}, the model expects {want}")
        if want != "string" and got != want:
            arr = arr.astype(want)
        out[spec.name] = arr
    return out


def check_finite(outputs: Mapping[str, np.ndarray]) -> None:
    for name, arr in outputs.items():
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ModelSignatureError(
                f"reference output {name!r} contains NaN or inf: the model is not usable as released "
                "(check the training run or the reference inputs)"
            )


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    named: dict[str, Any] = {k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
    np.savez(buf, **named)
    path.write_bytes(buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ModelSignatureError(f"cannot read {path} as a .npz file of arrays ({exc})") from None


def max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """Max absolute difference; inf when shapes differ; 0/1 equality for strings."""
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
    if np.any(np.isnan(diff)):
        return float("inf")
    return float(np.max(diff))


def spec_of(name: str, arr: np.ndarray, batch_free: bool = True) -> TensorSpec:
    shape: list[int | None] = list(arr.shape)
    if batch_free and shape:
        shape[0] = None
    return TensorSpec(name, shape, dtype_name(arr.dtype))
