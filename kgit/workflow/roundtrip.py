"""Round-trip validation: reload a release folder in a fresh process, rerun the reference inputs,
compare with the recorded outputs.

A fresh process is the point: a custom class that only the training script defined, or a module
that is not importable, fails here instead of on a teammate's machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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


class Worker:
    """A validation process started ahead of time: it imports TensorFlow while the release is still
    writing its artifacts, then validates whatever it is handed (``roundtrip(..., worker=w)``).

    It is still a fresh interpreter that sees only the bytes as written: it is handed the folders
    once they are complete. It never outlives kgit: it dies with its parent (Linux
    PR_SET_PDEATHSIG), exits when its stdin closes, and ``close()`` kills it if it was never used.
    """

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kgit-validate-")
        self.dir = Path(self._tmp.name)
        self._stderr = open(self.dir / "stderr.log", "wb")  # a file: a pipe nobody reads could fill up
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "kgit.models.roundtrip_worker", "--wait", str(os.getpid())],
                env=worker_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except OSError:
            self.proc = None  # roundtrip() falls back to a process of its own

    def hand_over(self, spec: Path, result: Path, timeout: float | None, paths: list[str]) -> int | None:
        """Give the worker its spec and the folders to import the project's modules from (``paths``),
        and wait; its exit code, or None if it cannot take the work."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None or proc.stdin is None:
            _kill(proc)
            return None
        try:
            proc.stdin.write(f"{spec}\t{result}\t{json.dumps(paths)}\n".encode())
            proc.stdin.close()
        except OSError:
            _kill(proc)
            return None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise ValidationError(f"validation did not finish within {timeout}s") from None
        except BaseException:
            _kill(proc)
            raise

    def stderr_tail(self) -> str:
        self._stderr.flush()
        try:
            text = (self.dir / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""
        return " ".join(text.strip().splitlines()[-2:])

    def close(self) -> None:
        _kill(self.proc)
        self.proc = None
        self._stderr.close()
        self._tmp.cleanup()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


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


# the worker's exit code when it imported the wrong Keras for the artifact (tf_keras): start afresh
RESTART = 3


def roundtrip(
    folders: list[Path],
    *,
    timeout: float | None = None,
    evaluate: tuple[Path, str] | None = None,
    worker: Worker | None = None,
    unsafe: Sequence[Path] = (),
    project: Path | None = None,
) -> list[FolderResult]:
    """Validate release folders (each with its metadata.json) in one fresh Python process. With
    ``evaluate`` (folder, "module:function"), the function is also called with the model reloaded
    from that folder, and what it returns is that folder's result's ``metrics``. With ``worker``
    (started earlier), that process does it, having imported TensorFlow meanwhile. ``unsafe``: the
    folders whose code (a Lambda layer...) the caller allows to run; the others are loaded with
    Keras' safe mode, after the worker checked their configuration (kgit.models.config_scan).
    ``project``: the repository's root, whose modules (custom layers...) the worker can import."""
    if not folders:
        return []
    with tempfile.TemporaryDirectory(prefix="kgit-validate-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec: dict[str, object] = {
            "folders": [str(f.resolve()) for f in folders],
            "unsafe": [str(f.resolve()) for f in unsafe],
        }
        if evaluate is not None:
            spec["evaluate"] = {"folder": str(evaluate[0].resolve()), "function": evaluate[1]}
        spec_path.write_text(json.dumps(spec))
        code = worker.hand_over(spec_path, result_path, timeout, _import_paths(project)) if worker is not None else None
        tail = worker.stderr_tail() if worker is not None else ""
        if code is None or (code == RESTART and not result_path.exists()):
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "kgit.models.roundtrip_worker", str(spec_path), str(result_path)],
                    env=worker_env(project),
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
