"""The preloaded validation process: it imports TensorFlow while the release writes, each validation
is a fresh process forked from it (the bytes as written, nothing of an earlier validation), and it
never outlives kgit."""

from __future__ import annotations

import json
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
from kgit.workflow.roundtrip import preload, preloaded_pid, roundtrip, stop_preloaded

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


def test_the_preloaded_process_validates_the_folder_as_written(released, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["keras"]["path"], folder)
    preload()
    assert preloaded_pid() is not None
    [good] = roundtrip([folder])
    assert good.ok and good.status == "passed" and good.format == "keras"
    assert good.max_abs_diff is not None and good.max_abs_diff <= good.atol
    # a changed reference output is caught by the forked validation just as by a cold one
    import numpy as np

    from kgit.models.reference import load_npz, save_npz

    outputs = load_npz(folder / "reference_outputs.npz")
    save_npz(folder / "reference_outputs.npz", {k: np.asarray(v) + 1.0 for k, v in outputs.items()})
    [bad] = roundtrip([folder])
    assert not bad.ok and bad.check == "roundtrip" and "differs by" in bad.reason()


def test_each_validation_is_a_fresh_process(  # type: ignore[no-untyped-def]
    released, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked from the preloaded process, each validation starts from nothing of the user's code:
    what one validation's code did is not there in the next; it sees the caller's environment as it
    is now; a variable TensorFlow or Keras reads as they start gets a preloaded process of its own."""
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["keras"]["path"], folder)
    code = tmp_path / "code"
    code.mkdir()
    (code / "counting_eval.py").write_text(
        "import os\n"
        "CALLS = []\n"
        "def count(model):\n"
        "    CALLS.append(1)\n"
        "    return {'calls': len(CALLS), 'pid': os.getpid(), 'seen': float(os.environ.get('KGIT_TEST_SEEN', '0'))}\n"
    )
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delenv("KGIT_TEST_SEEN", raising=False)

    def validate() -> dict[str, float]:
        [result] = roundtrip([folder], evaluate=(folder, "counting_eval:count"))
        assert result.ok, result.reason()
        assert result.metrics is not None
        return result.metrics

    first = validate()
    preloaded = preloaded_pid()
    assert preloaded is not None
    monkeypatch.setenv("KGIT_TEST_SEEN", "7")
    second = validate()
    assert first["calls"] == second["calls"] == 1  # the module was imported afresh each time
    assert first["seen"] == 0 and second["seen"] == 7
    assert len({first["pid"], second["pid"], preloaded, os.getpid()}) == 4
    assert preloaded_pid() == preloaded  # one preloaded process served both
    assert not _alive(int(first["pid"])) and not _alive(int(second["pid"]))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))  # read as Keras starts
    third = validate()
    assert third["calls"] == 1
    assert preloaded_pid() not in (None, preloaded) and not _alive(preloaded)


def test_an_unused_preloaded_process_is_stopped() -> None:
    preload()
    pid = preloaded_pid()
    assert pid is not None and _alive(pid)
    stop_preloaded()
    assert preloaded_pid() is None and not _alive(pid)


def test_the_preloaded_process_dies_with_a_killed_parent(tmp_path: Path) -> None:
    # a parent that starts the preloaded process and is then killed with SIGKILL (no cleanup can run)
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from kgit.workflow.roundtrip import preload, preloaded_pid\n"
        "preload()\n"
        "print(preloaded_pid(), flush=True)\n"
        "time.sleep(0.3)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path]))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    pid = int(proc.stdout.split()[0])
    # well before its TensorFlow import (seconds) could have finished and found stdin closed
    assert _gone_within(pid, 1.0), f"preloaded validation process {pid} outlived its parent"


def test_a_process_exiting_while_a_thread_validates_does_not_wait_for_it(  # type: ignore[no-untyped-def]
    released, tmp_path: Path
) -> None:
    """A daemon thread (a training run's releases) is validating when the program ends: the program
    ends at once, and the preloaded process and that validation end with it."""
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["keras"]["path"], folder)
    started = tmp_path / "evaluating"
    (tmp_path / "slow_eval.py").write_text(
        "import time\n"
        "from pathlib import Path\n"
        "def slow(model):\n"
        f"    Path({str(started)!r}).touch()\n"
        "    time.sleep(120)\n"
        "    return {}\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, threading, time\n"
        "from pathlib import Path\n"
        "from kgit.workflow.roundtrip import preloaded_pid, roundtrip\n"
        f"folder = Path({str(folder)!r})\n"
        "threading.Thread(target=roundtrip, args=([folder],), kwargs={'evaluate': (folder, 'slow_eval:slow')}, daemon=True).start()\n"
        f"while not Path({str(started)!r}).exists():  # the validation is under way: the model loaded, evaluating\n"
        "    time.sleep(0.05)\n"
        "print(preloaded_pid(), flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ["PYTHONPATH"]]))
    begun = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=100)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - begun < 60  # not the 120 s the evaluation would have taken
    assert _gone_within(int(proc.stdout.split()[0]), 5.0)


def test_a_preloaded_process_that_died_is_replaced(released, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["h5"]["path"], folder)
    preload()
    pid = preloaded_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert _gone_within(pid, 5.0)
    [result] = roundtrip([folder])
    assert result.ok and result.format == "h5"
    assert preloaded_pid() not in (None, pid)


def test_a_validation_out_of_time_takes_its_processes_with_it(released, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["keras"]["path"], folder)
    stop_preloaded()  # a cold start: importing TensorFlow alone takes longer than the time allowed
    before = _children()
    with pytest.raises(ValidationError, match=r"did not finish within 0\.5s"):
        roundtrip([folder], timeout=0.5)
    assert _children() == before  # the preloaded process and the validation forked from it are gone
    [result] = roundtrip([folder])  # and the next validation starts another
    assert result.ok


def test_failed_validation_in_the_preloaded_process_releases_nothing(
    kgit_repo: Path,
    plain_model: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the evaluate function's module becomes importable only after the preloaded process started: the
    # validation is handed this process's import paths with the work
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


def test_releases_leave_one_preloaded_process_which_the_next_reuses(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    stop_preloaded()
    before = _children()
    rec = api.release(plain_model, "quick", formats=["keras", "savedmodel"], repo=kgit_repo)
    assert [v["status"] for v in rec.validation] == ["passed", "passed"]
    preloaded = preloaded_pid()
    assert _children() - before == {preloaded}
    again = api.release(plain_model, "quick", formats="keras", repo=kgit_repo)
    assert [v["status"] for v in again.validation] == ["passed"]
    assert _children() - before == {preloaded}
    stop_preloaded()
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


def test_processes_forked_from_kgit_share_its_preloaded_process_and_leave_it_running(  # type: ignore[no-untyped-def]
    released, tmp_path: Path
) -> None:
    """A program that forks (multiprocessing's default on Linux) after kgit started its preloaded
    validation process: a forked process validates through it, one process at a time, never stops
    it; one killed while it waits takes its validation with it and leaves nothing that confuses the
    next one; a forked process whose environment would start TensorFlow differently gets a process
    of its own."""
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["keras"]["path"], folder)
    (tmp_path / "slow_eval.py").write_text(
        "import os, time\n"
        "from pathlib import Path\n"
        "def slow(model):\n"
        "    Path(os.environ['KGIT_TEST_STARTED']).write_text(str(os.getpid()))\n"
        "    time.sleep(float(os.environ.get('KGIT_TEST_SLEEP', '0')))\n"
        "    return {'pid': os.getpid()}\n"
    )
    script = tmp_path / "forking.py"
    script.write_text(
        "import json, os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from kgit.workflow.roundtrip import preload, preloaded_pid, roundtrip, stop_preloaded\n"
        f"folder, tmp = Path({str(folder)!r}), Path({str(tmp_path)!r})\n"
        "def check(sleep=0.0, marker='started'):\n"
        "    os.environ['KGIT_TEST_SLEEP'], os.environ['KGIT_TEST_STARTED'] = str(sleep), str(tmp / marker)\n"
        "    [r] = roundtrip([folder], evaluate=(folder, 'slow_eval:slow'))\n"
        "    assert r.ok, r.reason()\n"
        "    return int(r.metrics['pid'])\n"
        "def in_child(work):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            work()\n"
        "            os._exit(0)\n"
        "        except BaseException as exc:\n"
        "            print('child:', repr(exc), file=sys.stderr, flush=True)\n"
        "            os._exit(1)\n"
        "    return pid\n"
        "def wait(pid):\n"
        "    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
        "report = {}\n"
        "check()\n"
        "report['preloaded'] = preloaded_pid()\n"
        "def shared():\n"
        "    check()\n"
        "    (tmp / 'child-preloaded').write_text(str(preloaded_pid()))\n"
        "    stop_preloaded()  # lets go of it; the parent's process runs on\n"
        "report['shared'] = wait(in_child(shared))\n"
        "report['child_preloaded'] = int((tmp / 'child-preloaded').read_text())\n"
        "report['after_shared'] = preloaded_pid()\n"
        "# a child killed while its validation runs in the shared process\n"
        "victim = in_child(lambda: check(sleep=30, marker='victim'))\n"
        "while not (tmp / 'victim').exists():\n"
        "    time.sleep(0.05)\n"
        "os.kill(victim, signal.SIGKILL)\n"
        "report['victim'] = wait(victim)\n"
        "report['victim_validation'] = int((tmp / 'victim').read_text())\n"
        "deadline = time.monotonic() + 5  # its validation sleeps 30 s\n"
        "while os.path.exists(f\"/proc/{report['victim_validation']}\") and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "report['victim_validation_alive'] = os.path.exists(f\"/proc/{report['victim_validation']}\")\n"
        "# meanwhile, and after: the parent's validations get their own answers\n"
        "report['after_victim'] = [check(), check()]\n"
        "report['preloaded_after_victim'] = preloaded_pid()\n"
        "# a child that starts TensorFlow differently: a preloaded process of its own\n"
        "def other():\n"
        "    os.environ['KERAS_HOME'] = str(tmp / 'keras-home')\n"
        "    check()\n"
        "    (tmp / 'other-preloaded').write_text(str(preloaded_pid()))\n"
        "report['other'] = wait(in_child(other))\n"
        "report['other_preloaded'] = int((tmp / 'other-preloaded').read_text())\n"
        "report['end'] = preloaded_pid()\n"
        "print(json.dumps(report), flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ["PYTHONPATH"]]))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    preloaded = report["preloaded"]
    assert preloaded is not None
    assert report["shared"] == 0 and report["child_preloaded"] == preloaded  # the child used the parent's
    assert report["after_shared"] == preloaded  # and its stop left it running
    assert report["victim"] == -signal.SIGKILL
    # its validation was killed with it (not left to run its 30 s while the next validation waits)
    assert report["victim_validation_alive"] is False
    first, second = report["after_victim"]
    assert first != second  # two validations, each its own process, each its own answer
    assert report["preloaded_after_victim"] == preloaded
    assert report["other"] == 0 and report["other_preloaded"] not in (None, preloaded)
    assert report["end"] == preloaded
    assert not _alive(preloaded) and not _alive(report["other_preloaded"])  # gone with their parents


def test_a_command_that_imports_tensorflow_meanwhile_validates_in_the_process_it_started(  # type: ignore[no-untyped-def]
    released, tmp_path: Path
) -> None:
    """`kgit release` starts its validation process first, then imports TensorFlow to load the model:
    what that import writes into the environment (TPU_ML_PLATFORM, HDF5_PLUGIN_PATH...) is what the
    validation process's own import wrote, so the validation is forked from the process started
    first, not from one started again."""
    repo, record = released
    folder = tmp_path / "copy"
    shutil.copytree(repo / record.formats["keras"]["path"], folder)
    script = tmp_path / "command.py"
    script.write_text(
        "import os\n"
        "from pathlib import Path\n"
        "from kgit.workflow.roundtrip import preload, preloaded_pid, roundtrip\n"
        "preload()\n"
        "first = preloaded_pid()\n"
        "before = dict(os.environ)\n"
        "import tensorflow\n"
        "assert dict(os.environ) != before, 'importing TensorFlow no longer changes the environment'\n"
        f"[result] = roundtrip([Path({str(folder)!r})])\n"
        "assert result.ok, result.reason()\n"
        "print(first, preloaded_pid())\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TPU_ML_PLATFORM", "TPU_ML_PLATFORM_VERSION", "HDF5_PLUGIN_PATH")
    }
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, then = proc.stdout.split()
    assert first != "None" and then == first
