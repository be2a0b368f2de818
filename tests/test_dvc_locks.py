"""DVC's lock file after a kill (`.dvc/tmp/rwlock`): what kgit finds wrong with it, and when it repairs it.

The finding is read without DVC (fast tier); the repairs run real DVC on real repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import bare_origin, git, kgit

from kgit.store import dvc_locks

HALF = '{"write": {"/repo/artifacts/m/keras/v1": {"pid": 4194303, "cmd": "kgit rel'  # cut mid-write


def write_rwlock(root: Path, text: str | bytes, age: float = 0.0) -> Path:
    path = root / dvc_locks.RWLOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A running process, started before the test writes its lock file."""
    proc = subprocess.Popen(["sleep", "120"])
    time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def entry(path: str, pid: int, cmd: str = "dvc add") -> dict[str, object]:
    return {"write": {path: {"pid": pid, "cmd": cmd}}}


# -- what is wrong (no DVC) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,why",
    [
        ("", "empty"),
        ("  \n", "empty"),
        (HALF, "truncated or not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[]", "not in DVC's format"),
        ('{"write": {"/x": {"pid": "1", "cmd": "c"}}}', "not in DVC's format"),
        ('{"read": {"/x": {"pid": 1, "cmd": "c"}}}', "not in DVC's format"),
        ('{"other": {}}', "not in DVC's format"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_a_file_dvc_would_refuse_is_found_unreadable(tmp_path: Path, text: str | bytes, why: str) -> None:
    write_rwlock(tmp_path, text)
    found = dvc_locks.inspect(tmp_path)
    assert found is not None and found.unreadable == why


def test_a_good_file_or_none_needs_nothing(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    assert dvc_locks.inspect(tmp_path) is None  # no .dvc/tmp at all
    for text in ("{}", '{"read": {}}', json.dumps(entry("/x", sleeper.pid))):
        write_rwlock(tmp_path, text)
        assert dvc_locks.inspect(tmp_path) is None, text


def test_entries_of_ended_zombie_or_newer_processes_are_stale(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    zombie = subprocess.Popen(["true"])  # exits and is not waited for: a zombie until reaped
    time.sleep(0.3)
    data = {
        "write": {"/a": {"pid": ended.pid, "cmd": "dvc add a"}, "/b": {"pid": sleeper.pid, "cmd": "dvc add b"}},
        "read": {"/c": [{"pid": zombie.pid, "cmd": "dvc repro"}, {"pid": sleeper.pid, "cmd": "dvc add b"}]},
    }
    write_rwlock(tmp_path, json.dumps(data))
    found = dvc_locks.inspect(tmp_path)
    assert found is not None and found.unreadable is None
    assert sorted(e.pid for e in found.stale) == sorted([ended.pid, zombie.pid])
    assert {e.pid for e in found.live} == {sleeper.pid}
    zombie.wait()
    # the same running process, but started after the file was last written: its number was reused
    write_rwlock(tmp_path, json.dumps(entry("/b", sleeper.pid)), age=3600)
    found = dvc_locks.inspect(tmp_path)
    assert found is not None and [e.pid for e in found.stale] == [sleeper.pid]


def test_a_damaged_file_names_the_processes_still_in_it(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    write_rwlock(
        tmp_path, '{"read": {"/a": [{"pid": ' + str(sleeper.pid) + ', "cmd": "dvc repro"}, {"pid": 4194303, "cm'
    )
    found = dvc_locks.inspect(tmp_path)
    assert found is not None and found.unreadable and [e.pid for e in found.live] == [sleeper.pid]


# -- repairs, with real DVC ---------------------------------------------------------------------
@pytest.fixture
def dvc_repo(git_repo: Path) -> Path:
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=git_repo, check=True)
    return git_repo


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["", HALF])
def test_an_unreadable_file_is_reset_when_nothing_runs(dvc_repo: Path, text: str) -> None:
    (dvc_repo / "data").mkdir()
    (dvc_repo / "data" / "f").write_text("x")
    path = write_rwlock(dvc_repo, text)
    refused = dvc(dvc_repo, "add", "data")
    assert refused.returncode != 0 and "Unable to read RWLock-file" in refused.stderr  # what DVC does alone
    said = dvc_locks.repair(dvc_repo)
    assert said is not None and said.startswith(f"reset {dvc_locks.RWLOCK}, which an interrupted DVC command left")
    assert json.loads(path.read_text()) == {}
    assert dvc(dvc_repo, "add", "data").returncode == 0
    assert dvc_locks.repair(dvc_repo) is None  # nothing left to do


@pytest.mark.slow
def test_an_unreadable_file_naming_a_running_process_is_left(dvc_repo: Path, sleeper: subprocess.Popen[bytes]) -> None:
    text = '{"write": {"/x": {"pid": ' + str(sleeper.pid) + ', "cmd": "dvc repro"}}, "re'
    path = write_rwlock(dvc_repo, text)
    said = dvc_locks.repair(dvc_repo)
    assert said is not None and f"it names PID {sleeper.pid}, which still runs" in said
    assert path.read_text() == text
    sleeper.kill()
    sleeper.wait()
    said = dvc_locks.repair(dvc_repo)
    assert said is not None and said.startswith("reset") and json.loads(path.read_text()) == {}


@pytest.mark.slow
def test_nothing_is_touched_while_a_dvc_command_holds_its_lock(dvc_repo: Path) -> None:
    from dvc.lock import make_lock

    path = write_rwlock(dvc_repo, "")
    held = make_lock(str(dvc_repo / ".dvc" / "tmp" / "lock"), tmp_dir=str(dvc_repo / ".dvc" / "tmp"))
    held.lock()  # as a running `dvc add` holds it
    try:
        said = dvc_locks.repair(dvc_repo)
    finally:
        held.unlock()
    assert said is not None and "a DVC command is running in this repository" in said
    assert path.read_text() == ""
    assert (dvc_locks.repair(dvc_repo) or "").startswith("reset")


@pytest.mark.slow
def test_an_entry_of_a_reused_process_number_is_dropped(dvc_repo: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (dvc_repo / "data").mkdir()
    (dvc_repo / "data" / "f").write_text("x")
    other = {"read": {"/elsewhere": [{"pid": sleeper.pid, "cmd": "dvc repro"}]}}  # running since before: kept
    path = write_rwlock(dvc_repo, "{}")
    time.sleep(dvc_locks.SLACK_S + 1.5)  # start times are known to about a second
    newer = subprocess.Popen(["sleep", "120"])  # has the number the killed writer had
    try:
        data = {**entry(str(dvc_repo / "data"), newer.pid, "kgit release m"), **other}
        mtime = path.stat().st_mtime
        path.write_text(json.dumps(data))
        os.utime(path, (mtime, mtime))  # as the killed writer left it
        blocked = dvc(dvc_repo, "add", "data")
        assert blocked.returncode != 0 and "is busy" in blocked.stderr  # DVC alone takes the number for its writer
        said = dvc_locks.repair(dvc_repo)
        assert said == (
            f"removed 1 entry of ended processes (PID {newer.pid} `kgit release m`) from {dvc_locks.RWLOCK}"
        )
        assert json.loads(path.read_text()) == other
        assert dvc(dvc_repo, "add", "data").returncode == 0
    finally:
        newer.kill()
        newer.wait()


@pytest.mark.slow
def test_a_broken_rwlock_stops_no_release_push_get_or_validate(kgit_repo: Path, tmp_path: Path) -> None:
    """Written by hand, empty or half-written: each command that needs DVC repairs it and succeeds."""
    release = ["release", "m", "--from", "support.zoo:plain_model", "-f", "keras"]
    origin = bare_origin(tmp_path, kgit_repo)
    for n, text in enumerate(["", HALF], start=1):
        write_rwlock(kgit_repo, text)
        proc = kgit(kgit_repo, *release)
        assert proc.returncode == 0, proc.stderr
        assert f"reset {dvc_locks.RWLOCK}, which an interrupted DVC command left" in proc.stderr
        assert git(kgit_repo, "tag", "-l").split() == [f"m@v{i}.0.0" for i in range(1, n + 1)]
        # the push validates again through `dvc repro` (record removed), which reads the file too
        write_rwlock(kgit_repo, text)
        (kgit_repo / ".git" / "kgit" / "validated.json").unlink()
        push = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, capture_output=True, text=True)
        assert push.returncode == 0, push.stderr
        assert "reset .dvc/tmp/rwlock" in push.stderr and "dvc repro" in push.stderr
        write_rwlock(kgit_repo, text)
        assert kgit(kgit_repo, "validate", "--all").returncode == 0
    assert git(origin, "tag", "-l").split() == ["m@v1.0.0", "m@v2.0.0"]
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    write_rwlock(clone, HALF)
    got = kgit(clone, "get", "m@v2")
    assert got.returncode == 0, got.stderr
    assert "reset .dvc/tmp/rwlock" in got.stderr and (clone / "artifacts/m/keras/v2/model.keras").is_file()
