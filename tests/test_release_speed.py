"""The release's early validation worker: it imports TensorFlow while the release writes, still
validates the bytes as written in a fresh process, and never outlives kgit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import snapshot

import kgit as api
from kgit.core.errors import ValidationError
from kgit.workflow.roundtrip import Worker, roundtrip

pytestmark = pytest.mark.slow  # TensorFlow models: the full suite, not the fast tier


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): it is dead all the same
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_worker_validates_the_folder_as_written(released, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["keras"]["path"], folder)
    with Worker() as worker:
        assert worker.proc is not None
        [good] = roundtrip([folder], worker=worker)
        assert worker.proc is None  # handed over: used once
    assert good.ok and good.status == "passed" and good.format == "keras"
    assert good.max_abs_diff is not None and good.max_abs_diff <= good.atol
    # a changed reference output is caught by the early worker just as by a cold one
    import numpy as np

    from kgit.models.reference import load_npz, save_npz

    outputs = load_npz(folder / "reference_outputs.npz")
    save_npz(folder / "reference_outputs.npz", {k: np.asarray(v) + 1.0 for k, v in outputs.items()})
    with Worker() as worker:
        [bad] = roundtrip([folder], worker=worker)
    assert not bad.ok and bad.check == "roundtrip" and "differs by" in bad.reason()


def test_unused_worker_is_stopped_on_close() -> None:
    worker = Worker()
    assert worker.proc is not None
    pid = worker.proc.pid
    assert _alive(pid)
    worker.close()
    assert not _alive(pid)
    assert not worker.dir.exists()


def test_worker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    # a parent that starts a worker and is then killed with SIGKILL (no cleanup can run)
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from kgit.workflow.roundtrip import Worker\n"
        "w = Worker()\n"
        "print(w.proc.pid, flush=True)\n"
        "time.sleep(0.3)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path]))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    pid = int(proc.stdout.split()[0])
    # well before its TensorFlow import (seconds) could have finished and found stdin closed
    assert _gone_within(pid, 1.0), f"validation worker {pid} outlived its parent"


def test_worker_that_died_early_is_replaced_by_a_fresh_process(released, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["h5"]["path"], folder)
    with Worker() as worker:
        assert worker.proc is not None
        worker.proc.kill()
        worker.proc.wait()
        [result] = roundtrip([folder], worker=worker)
    assert result.ok and result.format == "h5"


def test_failed_validation_with_the_early_worker_releases_nothing(
    kgit_repo: Path,
    plain_model: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the evaluate function's module becomes importable only after the worker was started: the
    # worker is handed this process's import paths with the work
    code = tmp_path / "code"
    code.mkdir()
    (code / "speed_eval.py").write_text(
        "def broken(model):\n    raise RuntimeError('no test data here')\ndef fine(model):\n    return {'score': 0.5}\n"
    )
    monkeypatch.syspath_prepend(str(code))
    before = snapshot(kgit_repo)
    with pytest.raises(ValidationError, match="no test data here.*nothing was released"):
        api.release(plain_model, "evalbad", formats="keras", repo=kgit_repo, evaluate="speed_eval:broken")
    assert snapshot(kgit_repo) == before
    rec = api.release(plain_model, "evalok", formats="keras", repo=kgit_repo, evaluate="speed_eval:fine")
    assert rec.metadata["metrics"] == {"score": 0.5} and rec.metadata["measured"] == ["score"]


def test_release_leaves_no_worker_behind(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    before = _children()
    rec = api.release(plain_model, "quick", formats=["keras", "savedmodel"], repo=kgit_repo)
    assert [v["status"] for v in rec.validation] == ["passed", "passed"]
    assert _children() == before


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found
