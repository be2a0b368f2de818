"""Worker for kgit.workflow.roundtrip: ``python -m kgit.models.roundtrip_worker SPEC.json RESULT.json``,
or ``--preload PARENT_PID`` to serve many validations, each in a process forked from one that has
imported TensorFlow and nothing else (``preload``).

Runs in a fresh interpreter. For each folder: import what the metadata says the model needs,
load the artifact, run the recorded reference inputs (training off), compare with the recorded
outputs. Writes one JSON result per folder; never raises.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any


def _validate(folder: Path, evaluate: str | None = None, unsafe: bool = False) -> dict[str, Any]:
    from kgit.core.errors import KgitError, UnsafeModelError, describe
    from kgit.core.metadata import Metadata
    from kgit.models import formats, savedmodel, training_state, usercode
    from kgit.models.reference import load_npz, max_abs_diff

    result: dict[str, Any] = {"folder": str(folder), "format": "?", "ok": False, "outputs": [], "error": None}
    try:
        meta = Metadata.read(folder)
        result["format"], result["atol"] = meta.format, meta.reference.atol
        label = f"{meta.name}@{meta.version} ({meta.format})"
        try:  # before anything of the artifact loads; ``unsafe`` is the caller's decision, not the metadata's
            formats.check_config(
                folder,
                meta.format,
                unsafe=unsafe,
                label=label,
                declared=formats.declared_modules(meta.custom_modules, specs=meta.custom_objects),
            )
        except UnsafeModelError as exc:
            result["error"], result["check"] = str(exc), "code"
            return result
        inputs = load_npz(folder / meta.reference.inputs_file)
        expected = load_npz(folder / meta.reference.outputs_file)
        formats.import_keras()
        custom = usercode.load_custom_objects(meta.custom_objects)
        runs: list[dict[str, Any]] = []
        model = None
        if meta.format == "savedmodel":
            runs.append(savedmodel.run(folder, inputs, meta.signature))
        if meta.format != "savedmodel" or savedmodel.has_keras_model(folder):
            model = formats.load_keras_model(
                folder,
                meta.format,
                custom_objects=custom,
                modules=meta.custom_modules,
                builder=meta.builder,
                unsafe=unsafe,
                sig=meta.signature,
                label=label,
            )
            runs.append(formats.run_model(model, inputs, meta.signature))
        if model is not None and meta.format != "weights" and meta.resumable:
            # a resumable release of a full-model format: the optimizer must come back as released
            lost = training_state.check_training_state(model, meta.training)
            if lost:
                result["error"], result["check"] = lost, "training"
                return result
        checks: dict[str, float] = {}
        for got in runs:
            for name, want in expected.items():
                diff = max_abs_diff(want, got[name]) if name in got else float("inf")
                checks[name] = max(checks.get(name, 0.0), diff)
        result["outputs"] = [{"name": n, "max_abs_diff": d, "ok": d <= meta.reference.atol} for n, d in checks.items()]
        result["ok"] = all(o["ok"] for o in result["outputs"])
        if evaluate and result["ok"]:
            _evaluate(model, evaluate, result)
    except KgitError as exc:
        result["error"] = str(exc)
    except Exception as exc:  # the artifact itself is broken: report, don't crash
        result["error"] = f"{describe(exc, 400)}"
        if "KGIT_DEBUG" in __import__("os").environ:
            traceback.print_exc()
    return result


def _evaluate(model: Any, spec: str, result: dict[str, Any]) -> None:
    """--evaluate: call the user's function with the model as reloaded from the artifact."""
    from kgit.core import metrics
    from kgit.core.errors import KgitError, describe
    from kgit.models import usercode

    result["ok"], result["check"] = False, "evaluate"
    if model is None:
        result["error"] = (
            "this artifact reloads as no Keras model to evaluate: release a keras or savedmodel format first"
        )
        return
    func = usercode.resolve_attr(spec, "evaluate function")
    try:
        returned = func(model)
    except KgitError:
        raise
    except Exception as exc:
        result["error"] = f"it raised {describe(exc, 300)}"
        return
    result["metrics"] = metrics.flatten(returned, "what it returned", scalars=True)
    result["ok"], result["check"] = True, "roundtrip"


def flavour(folder: Path) -> str | None:
    """The Keras a release folder's metadata says it was saved with (``tf_keras`` or None), read
    without TensorFlow."""
    from kgit.core import bounded_yaml
    from kgit.core.errors import KgitError
    from kgit.core.layout import METADATA_FILE
    from kgit.core.metadata import MAX_FILE_BYTES

    path = folder / METADATA_FILE
    try:
        raw = bounded_yaml.read_bytes(path, str(path), max_bytes=MAX_FILE_BYTES)
        return bounded_yaml.load_json(raw, str(path), max_bytes=MAX_FILE_BYTES).get("keras_flavour")
    except (KgitError, AttributeError):
        return None  # _validate reports the unreadable metadata


def preload(parent: int) -> int:
    """``--preload PARENT_PID``: import TensorFlow and Keras without starting them (no device, no
    thread pool: a process that is safe to fork), then serve validations (kgit.core.forkserver):
    each request (spec, result, paths, cwd, env, stderr) is done by a child forked for it.

    Nothing of a request ever runs here, only in its child: each validation starts from the state a
    fresh ``python -m kgit.models.roundtrip_worker`` is in once it has imported TensorFlow (the same
    modules, nothing of the user's code, no model), without paying that import again."""
    from kgit.core import forkserver
    from kgit.models.runtime import keras_module

    forkserver.die_with_parent(parent)
    keras_module()
    forkserver.serve(_validate_request)
    return 0


def _validate_request(request: dict[str, Any]) -> int:
    """In a child of ``preload``: the validation ``request`` asks for; the worker's exit code."""
    folders, _evaluate, _unsafe = _read_spec(Path(request["spec"]))
    if any(flavour(f) == "tf_keras" for f in folders):
        return RESTART  # Keras 3 is imported here: kgit.workflow.roundtrip starts a fresh process
    return main([request["spec"], request["result"]])


# the exit code of a validation that found a tf_keras artifact where Keras 3 is imported: it needs a
# process of its own, which imports tf_keras instead (kgit.workflow.roundtrip starts one)
RESTART = 3


def _read_spec(spec_path: Path) -> tuple[list[Path], dict[str, str] | None, set[str]]:
    """The folders to validate, the --evaluate request ({"folder", "function"}) and the folders whose
    code may run (Keras' safe mode off), as the calling kgit decided."""
    spec = json.loads(spec_path.read_text())
    if not isinstance(spec, dict):
        spec = {"folders": spec}
    return [Path(p) for p in spec["folders"]], spec.get("evaluate"), set(spec.get("unsafe") or [])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--preload":
        return preload(int(argv[1]))
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    folders, evaluate, unsafe = _read_spec(spec_path)
    if any(flavour(f) == "tf_keras" for f in folders):  # before TensorFlow is imported
        from kgit.models import tf_keras_flavour

        tf_keras_flavour.use_in_this_process()
    results = [
        _validate(
            f, evaluate["function"] if evaluate and evaluate["folder"] == str(f) else None, unsafe=str(f) in unsafe
        )
        for f in folders
    ]
    text = json.dumps(results, default=lambda o: None)
    # json writes inf as Infinity, which Python reads back: fine for this private channel.
    result_path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
