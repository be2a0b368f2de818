"""Round-trip validation: reload a release folder in a fresh process, rerun the reference inputs,
compare with the recorded outputs.

A fresh process is the point: a custom class that only the training script defined, or a module
that is not importable, fails here instead of on a teammate's machine.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kgit.core import forkserver
from kgit.core.errors import KgitError, ValidationError
from kgit.core.fsutil import KnownSha256, identity_of
from kgit.core.metadata import Metadata, hash_folder


@dataclass
class OutputCheck:
    name: str
    max_abs_diff: float
    ok: bool


@dataclass
class FolderResult:
    folder: str
    format: str
    ok: bool
    atol: float = 0.0
    outputs: list[OutputCheck] = field(default_factory=list)
    error: str | None = None
    check: str = (
        "roundtrip"  # the check that decided the result: data, release, files, metadata, roundtrip, training, evaluate
    )
    # passed, failed, missing (data not here), cached (validated before at this content), collected
    # (data not here, and kgit gc collected it from the DVC remote: not a failure)
    status: str = ""
    metrics: dict[str, float] | None = None  # what the --evaluate function measured on this reloaded folder

    def __post_init__(self) -> None:
        if not self.status:
            self.status = "passed" if self.ok else "failed"

    @property
    def max_abs_diff(self) -> float | None:
        return max((o.max_abs_diff for o in self.outputs), default=None)

    def reason(self) -> str:
        if self.error:
            return self.error
        bad = [o for o in self.outputs if not o.ok]
        return "; ".join(f"output {o.name!r} differs by {o.max_abs_diff:.3g} (atol {self.atol:g})" for o in bad)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["version"] = d.pop("folder")
        d["max_abs_diff"] = self.max_abs_diff
        return d


def check_files(
    folder: Path, meta: Metadata, known: Mapping[str, KnownSha256] | None = None, fetch: str | None = None
) -> str | None:
    """None if every file matches its recorded sha256, else what differs. ``known``: sha256s computed
    as the files were just made (kgit.core.packing.assemble), taken for files that have not changed
    since. ``fetch``: the command that brings missing files back, said with them."""
    try:
        given = {}
        for rel, k in (known or {}).items():
            with contextlib.suppress(OSError):
                if identity_of(os.stat(folder / rel, follow_symlinks=False)) == k.identity:
                    given[rel] = k.sha256
        actual = hash_folder(folder, known=given)
    except KgitError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {folder}: {exc}"
    missing = sorted(set(meta.files) - set(actual))
    extra = sorted(set(actual) - set(meta.files))
    changed = sorted(p for p in meta.files if p in actual and actual[p] != meta.files[p])
    problems = []
    if changed:
        problems.append(f"changed file(s) {', '.join(changed[:3])}")
    if missing:
        problems.append(
            f"missing file(s) {', '.join(missing[:3])}" + (f" (`{fetch}` brings them back)" if fetch else "")
        )
    if extra:
        problems.append(f"unexpected file(s) {', '.join(extra[:3])}")
    return "; ".join(problems) or None


# Environment variables that TensorFlow, Keras and Python read as they start: a preloaded process
# that started with other values is not what a fresh process would be now, so it is started again.
# Everything else reaches each validation as it is at the time (the child takes the caller's environment).
_READ_AT_START = ("TF_", "KERAS_", "CUDA_", "XLA_", "OMP_", "MKL_", "OPENBLAS_", "LD_", "HDF5_", "TPU_", "GRPC_")
_READ_AT_START_EXACT = ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")


# What importing TensorFlow writes into the environment itself, whatever was there before: a process
# that imported it (a kgit command that loaded the model) and one that did not yet (when kgit
# started its validation process) start validations that are the same.
_SET_BY_IMPORT = {"TPU_ML_PLATFORM": None, "TPU_ML_PLATFORM_VERSION": None, "HDF5_PLUGIN_PATH": "disable"}


def read_at_start(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables of ``env`` that TensorFlow, Keras or Python read as they start (PYTHONPATH
    aside: a forked process takes its import paths as it starts its work; and what importing
    TensorFlow sets itself): two processes started with the same ones are the same once they have
    imported TensorFlow."""
    return tuple(
        sorted(
            (k, v)
            for k, v in env.items()
            if k != "PYTHONPATH"
            and (k.startswith(_READ_AT_START) or k.startswith("PYTHON") or k in _READ_AT_START_EXACT)
            and (k not in _SET_BY_IMPORT or _SET_BY_IMPORT[k] not in (None, v))
        )
    )


# This process's preloaded validation process: it imports TensorFlow once, and each validation is
# a process forked from it (kgit.core.forkserver), so a second release or ``kgit.validate`` in the
# same Python process (a training run's callback, a notebook, a script releasing several models)
# does not import TensorFlow again. It never outlives this process: it dies with it (Linux
# PR_SET_PDEATHSIG), exits when its stdin closes (at exit, or ``stop_preloaded()``), and is killed
# if a validation is interrupted or runs out of time (the validation with it). One validation at a
# time: a second, concurrent one gets a fresh process of its own.
_PRELOADED = forkserver.Server(
    lambda: [sys.executable, "-m", "kgit.models.roundtrip_worker", "--preload", str(os.getpid())]
)
atexit.register(_PRELOADED.stop, wait=False)


def preload() -> None:
    """Start this process's validation process now, so that it imports TensorFlow while the caller
    loads and writes a model (``kgit release`` does this first)."""
    env = worker_env()
    _PRELOADED.start(env, read_at_start(env))


def preloaded_pid() -> int | None:
    """The preloaded validation process's pid, if it is running."""
    return _PRELOADED.pid()


def stop_preloaded() -> None:
    """Stop the preloaded validation process (the next validation starts another)."""
    _PRELOADED.stop()


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " ".join(text.strip().splitlines()[-2:])


def _import_paths(project: Path | None = None) -> list[str]:
    # The worker sees the same importable modules as this process and the project's own folders
    # (kgit.models.usercode.project_paths), nothing more.
    from kgit.models.usercode import project_paths

    paths = [p if p else os.getcwd() for p in sys.path if p == "" or os.path.isdir(p)]
    return list(dict.fromkeys([*project_paths(project), *paths]))


def worker_env(project: Path | None = None) -> dict[str, str]:
    """The environment of a kgit process that imports the user's code: this process's import paths
    (and ``project``'s folders first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(_import_paths(project))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def roundtrip(
    folders: list[Path],
    *,
    timeout: float | None = None,
    evaluate: tuple[Path, str] | None = None,
    unsafe: Sequence[Path] = (),
    project: Path | None = None,
) -> list[FolderResult]:
    """Validate release folders (each with its metadata.json) in one fresh Python process: forked
    from this process's preloaded one (``preload``), or started afresh. With ``evaluate`` (folder,
    "module:function"), the function is also called with the model reloaded from that folder, and
    what it returns is that folder's result's ``metrics``. ``unsafe``: the folders whose code (a
    Lambda layer...) the caller allows to run; the others are loaded with Keras' safe mode, after
    the worker checked their configuration (kgit.models.config_scan). ``project``: the
    repository's root, whose modules (custom layers...) the worker can import."""
    from kgit.models.roundtrip_worker import RESTART, flavour

    if not folders:
        return []
    with tempfile.TemporaryDirectory(prefix="kgit-validate-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        stderr_path = Path(tmp) / "stderr.log"
        spec: dict[str, object] = {
            "folders": [str(f.resolve()) for f in folders],
            "unsafe": [str(f.resolve()) for f in unsafe],
        }
        if evaluate is not None:
            spec["evaluate"] = {"folder": str(evaluate[0].resolve()), "function": evaluate[1]}
        spec_path.write_text(json.dumps(spec))
        env = worker_env(project)
        code = None
        if not any(flavour(f) == "tf_keras" for f in folders):  # those need a process that imports tf_keras
            request = {
                "spec": str(spec_path),
                "result": str(result_path),
                "stderr": str(stderr_path),
                "cwd": os.getcwd(),
                "env": env,
                "paths": _import_paths(project),
            }
            try:
                code = _PRELOADED.run(request, read_at_start(env), timeout)
            except TimeoutError:
                raise ValidationError(f"validation did not finish within {timeout}s") from None
        tail = _tail(stderr_path)
        if code is None or (code == RESTART and not result_path.exists()):
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "kgit.models.roundtrip_worker", str(spec_path), str(result_path)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                raise ValidationError(f"validation did not finish within {timeout}s") from None
            code, tail = proc.returncode, " ".join((proc.stderr or "").strip().splitlines()[-2:])
        if not result_path.exists():
            raise ValidationError(f"the validation process died (exit {code}): {tail or 'no output'}")
        raw = json.loads(result_path.read_text())
    results = []
    for item in raw:
        outputs = [OutputCheck(**o) for o in item.pop("outputs")]
        results.append(FolderResult(outputs=outputs, **item))
    return results
