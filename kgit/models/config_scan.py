"""What loading a saved model would run, read from its configuration without loading it.

Keras (and tf_keras) rebuild a model from the JSON configuration saved with it, and that JSON can
make the loader run code: a ``Lambda`` layer carries Python bytecode, a ``module`` entry makes
tf_keras (and kgit's own loader) import that module, a function entry names a function to call. So
before anything loads a release artifact, kgit reads the JSON itself — the ``.keras`` zip's
``config.json``, an H5 file's ``model_config`` and ``training_config`` attributes, a tf_keras
SavedModel's ``keras_metadata.pb`` — builds nothing, imports nothing, and reports what it finds:

- **code**, which Keras' safe mode also refuses and which runs only when the person loading opts in:
  a ``Lambda`` layer, a serialized Python function (``__lambda__``, tf_keras' ``function_type:
  lambda``), a ``TFSMLayer`` (loads a SavedModel from a path outside the artifact), a lookup layer
  whose vocabulary is a file path (read at load);
- **never** allowed, opt-in or not: a serialized object whose ``module`` is neither Keras' own
  (``ALLOWED_ROOTS``) nor declared by the release (its custom objects), a configuration naming Keras'
  safe-mode switch (``enable_unsafe_deserialization``, a ``safe_mode`` key) or a non-modeling
  function (downloading, loading or saving files), a NumPy object array, malformed identity fields.

Pure Python: json and zipfile (h5py inside a function); never TensorFlow or Keras.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgit.core.errors import ModelSourceError, UnsafeModelError, one_line
from kgit.core.protowire import fields as _fields

# The packages whose classes and functions a configuration may name without a declaration: Keras'
# own (the ones Keras 3 itself imports from a configuration), tf_keras and TensorFlow.
ALLOWED_ROOTS = frozenset({"keras", "keras_hub", "keras_cv", "keras_nlp", "tf_keras", "tensorflow"})
# Functions a model never needs and an attacker would (Keras 3 refuses these too: NON_MODELING_APIS).
NON_MODELING = frozenset(
    {
        "get_file",
        "load_model",
        "model_from_json",
        "model_from_yaml",
        "save_model",
        "load_weights",
        "save_weights",
        "deserialize_keras_object",
        "serialize_keras_object",
        "register_keras_serializable",
        "clear_session",
        "load_img",
        "save_img",
        "enable_unsafe_deserialization",
        "image_dataset_from_directory",
        "text_dataset_from_directory",
        "audio_dataset_from_directory",
        "write_file",
        "read_file",
    }
)
# Module parts that hold no modeling function (file I/O, saving, configuration).
NON_MODELING_PARTS = frozenset(
    {
        "config",
        "saving",
        "utils",
        "io",
        "gfile",
        "saved_model",
        "preprocessing",
        "backend",
        "models",
        "export",
        "debugging",
    }
)
SAFE_MODE_SWITCH = "enable_unsafe_deserialization"
LOOKUP_LAYERS = frozenset({"StringLookup", "IntegerLookup", "IndexLookup", "TextVectorization"})
MAX_CONFIG_BYTES = 256 * 1024 * 1024  # a model's configuration is kilobytes to a few megabytes
_OBJECT_DTYPE = re.compile(r"^[<>|=]?(o|object|object_)$", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    """Something loading would run: ``where`` (``layer 'dense'``), ``what`` it does, and whether
    it is ``code`` (allowed with the loader's opt-in) or never allowed."""

    where: str
    what: str
    code: bool

    def describe(self, label: str) -> str:
        return f"{label}: {self.where} {self.what}"


# -- reading configurations ---------------------------------------------------------------------
def read_configs(path: Path) -> list[Any]:
    """The JSON configurations a model file holds (none for a file without a model configuration);
    ModelSourceError when it cannot be read."""
    try:
        if path.name == "keras_metadata.pb":
            return [_json(text, path) for text in _saved_metadata(path.read_bytes())]
        if path.suffix in (".h5", ".hdf5"):
            return _h5_configs(path)
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise ModelSourceError(
                    f"{path}: config.json is {info.file_size} bytes, far more than a model's configuration"
                )
            return [_json(zf.read(info), path)]
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        if isinstance(exc, ModelSourceError):
            raise
        raise ModelSourceError(f"{path}: cannot read the model's configuration ({one_line(exc, 120)})") from None


def _json(raw: bytes | str, path: Path) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise ModelSourceError(f"{path}: the model's configuration is nested too deeply to be a model") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{path}: the model's configuration is not JSON ({one_line(exc, 120)})") from None


def _h5_configs(path: Path) -> list[Any]:
    import h5py

    found = []
    with h5py.File(path, "r") as fh:
        for attr in ("model_config", "training_config"):
            raw = fh.attrs.get(attr)
            if raw is not None:
                found.append(_json(raw if isinstance(raw, (str, bytes)) else str(raw), path))
    return found


def _saved_metadata(data: bytes) -> list[bytes]:
    """The JSON of each node of tf_keras' SavedMetadata (``nodes = 1``; a node's ``metadata = 5``)."""
    texts = []
    for number, node in _fields(data):
        if number == 1 and isinstance(node, bytes):
            texts += [v for n, v in _fields(node) if n == 5 and isinstance(v, bytes)]
    return texts


# -- scanning -------------------------------------------------------------------------------------
def module_allowed(module: str, declared: Iterable[str]) -> bool:
    """Keras' own packages, or a module the release declares (or a submodule of one)."""
    return module.split(".", 1)[0] in ALLOWED_ROOTS or any(module == d or module.startswith(d + ".") for d in declared)


def scan(config: Any, declared: Iterable[str] | None) -> list[Finding]:
    """Every finding in one configuration, in document order. ``declared``: the modules the release
    declares (its custom objects); None skips the module check (a file the releaser made)."""
    allowed = None if declared is None else [d for d in declared if d]
    findings: list[Finding] = []
    stack: list[tuple[Any, str, bool]] = [(config, "the model", False)]  # (value, where, in compile config)
    while stack:
        value, where, compiling = stack.pop()
        if isinstance(value, str):
            if SAFE_MODE_SWITCH in value:
                findings.append(
                    Finding(where, f"names {one_line(repr(value), 80)}, Keras' switch that turns safe mode off", False)
                )
            continue
        if isinstance(value, (list, tuple)):
            stack += [(v, where, compiling) for v in reversed(value)]
            continue
        if not isinstance(value, dict):
            continue
        where = _where(value, where, compiling)
        findings += _check_object(value, where, allowed)
        children = []
        for key, child in value.items():
            if isinstance(key, str) and (SAFE_MODE_SWITCH in key or key == "safe_mode"):
                findings.append(
                    Finding(where, f"sets {one_line(repr(key), 80)}, Keras' switch for running code", False)
                )
            children.append(
                (child, where, compiling or key in ("compile_config", "training_config", "optimizer_config"))
            )
        stack += reversed(children)
    return findings


def _where(obj: dict[str, Any], outer: str, compiling: bool) -> str:
    config = obj.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    if "class_name" not in obj or not isinstance(name, str):
        return outer
    return f"'{name}' in the compile config" if compiling else f"layer '{name}'"


def _check_object(obj: dict[str, Any], where: str, allowed: list[str] | None) -> list[Finding]:
    found = []
    for key in ("class_name", "module", "registered_name"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            found.append(Finding(where, f"has a malformed {key!r} ({type(obj[key]).__name__}, not a name)", False))
    cls = obj.get("class_name") if isinstance(obj.get("class_name"), str) else None
    inner = obj.get("config")
    config: dict[str, Any] = inner if isinstance(inner, dict) else {}
    if cls == "Lambda":
        found.append(Finding(where, "is a Python Lambda (arbitrary code)", True))
    elif cls == "__lambda__" or any(
        obj.get(k) == "lambda" for k in ("function_type", "output_shape_type", "mask_type")
    ):
        found.append(Finding(where, "holds a serialized Python function (bytecode)", True))
    elif cls == "TFSMLayer":
        found.append(Finding(where, f"loads the SavedModel {config.get('filepath')!r} from outside the release", True))
    elif cls in LOOKUP_LAYERS and isinstance(config.get("vocabulary"), str):
        found.append(
            Finding(where, f"reads its vocabulary from the file {config['vocabulary']!r}, outside the release", True)
        )
    elif cls == "__numpy__" and not (isinstance(config.get("dtype"), str) and not _OBJECT_DTYPE.match(config["dtype"])):
        found.append(
            Finding(where, f"holds a NumPy array of dtype {config.get('dtype')!r} (Python objects, not numbers)", False)
        )
    module = obj.get("module") if isinstance(obj.get("module"), str) and cls is not None else None
    if cls == "function":
        name = obj.get("config") if isinstance(obj.get("config"), str) else ""
        parts = set((module or "").split("."))
        if name in NON_MODELING or parts & NON_MODELING_PARTS:
            found.append(
                Finding(where, f"names the non-modeling function {'.'.join(x for x in (module, name) if x)}", False)
            )
    if module is not None and allowed is not None and not module_allowed(module, allowed):
        found.append(
            Finding(
                where,
                f"names module {module!r}, which is neither Keras' nor declared by the release "
                "(importing it would run its code)",
                False,
            )
        )
    return found


def scan_files(paths: Iterable[Path], declared: Iterable[str] | None) -> list[Finding]:
    declared = None if declared is None else list(declared)
    return [f for path in paths for config in read_configs(path) for f in scan(config, declared)]


def refusal(label: str, findings: list[Finding], *, allow_code: bool, fix: str) -> str | None:
    """The one line refusing to load, or None when loading may go on: a finding that is never
    allowed comes first; code is refused unless ``allow_code`` (``fix`` says how to opt in)."""
    never = next((f for f in findings if not f.code), None)
    if never is not None:
        return f"{never.describe(label)}: refused, with or without --unsafe"
    code = next((f for f in findings if f.code), None)
    if code is not None and not allow_code:
        return f"{code.describe(label)}: refused; {fix}"
    return None


def check_files(
    paths: Iterable[Path], *, label: str, declared: Iterable[str] | None, allow_code: bool, fix: str
) -> None:
    """Raise UnsafeModelError (one line, naming the layer) if loading these files would run what
    the loader did not allow."""
    problem = refusal(label, scan_files(paths, declared), allow_code=allow_code, fix=fix)
    if problem is not None:
        raise UnsafeModelError(problem)
