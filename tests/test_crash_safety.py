"""All or nothing: crashes (SIGKILL or a signal at each step), Ctrl-C, remote faults during the push, concurrent releases, tags on origin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import bare_origin, git, kgit, snapshot
from support.consistency import (
    RELEASE,
    assert_consistent,
    release_again,
    run_with_failpoint,
    without_cache,
)
from support.forked_cli import run_kgit

import kgit as api

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


@pytest.mark.parametrize(
    "point,survives",
    [
        ("staged", False),
        ("validated", False),
        ("placed", False),
        ("tracked", False),
        ("meta-written", False),
        ("committed", True),
        ("tagged", True),
    ],
)
def test_sigkill_at_each_step_leaves_a_consistent_repo(kgit_repo: Path, point: str, survives: bool) -> None:
    head_before = git(kgit_repo, "rev-parse", "HEAD")
    proc = run_with_failpoint(kgit_repo, point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # Never a tag without its commit; before the commit, no commit and no tag at all.
    assert_consistent(kgit_repo)
    if not survives:
        assert git(kgit_repo, "rev-parse", "HEAD") == head_before
        assert git(kgit_repo, "tag", "-l") == ""
    # The next kgit command that writes cleans up: finishes a committed release, or removes it all.
    said = release_again(kgit_repo)
    assert_consistent(kgit_repo)
    tags = git(kgit_repo, "tag", "-l").split()
    if survives:
        assert "finished the interrupted release safe@v1.0.0" in said
        assert tags == ["safe@v1.0.0", "safe@v2.0.0"]
    else:
        assert tags == ["safe@v1.0.0"]
        assert git(kgit_repo, "rev-parse", "HEAD~1") == head_before
    assert git(kgit_repo, "status", "--porcelain") == ""
    # no orphan folder: every version folder on disk is a tracked release
    for fmt in ("keras", "h5"):
        folder = kgit_repo / "artifacts" / "safe" / fmt
        dirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        dvcs = sorted(p.name[:-4] for p in folder.glob("*.dvc"))
        assert dirs == dvcs
    assert not (kgit_repo / ".git" / "kgit" / "journal.json").exists()
    assert not any((kgit_repo / ".git" / "kgit" / "staging").glob("*"))


def test_temporary_files_of_a_write_killed_midway_are_removed(kgit_repo: Path) -> None:
    """SIGKILL inside ``write_atomic`` (between creating its temporary file and renaming it) leaves
    ``.NAME.PID.kgit-tmp`` beside the file: a release killed there, as each of its work-tree writes
    could be, is undone without a stray file, and so is one killed after its commit."""
    for point, survives in (("meta-written", False), ("committed", True)):
        proc = run_with_failpoint(kgit_repo, point)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        journal = json.loads((kgit_repo / ".git" / "kgit" / "journal.json").read_text())
        written = sorted(
            {*journal["written"], *journal["backups"], *(p for p in journal["created"] if p.endswith(".dvc"))}
        )
        assert any(p.endswith(".dvc") for p in written) and "dvc.yaml" in written, written
        gone = subprocess.Popen([sys.executable, "-c", ""])  # a process number no process has now
        gone.wait()
        planted = []
        for rel in written:
            tmp = (kgit_repo / rel).with_name(f".{Path(rel).name}.{gone.pid}.kgit-tmp")
            tmp.write_text("half of what was being written")
            planted.append(tmp)
        said = release_again(kgit_repo)
        assert ("finished the interrupted release" in said) == survives, said
        assert not [p for p in planted if p.exists()]
        assert git(kgit_repo, "status", "--porcelain", "--untracked-files=all") == ""
        assert not [p for p in kgit_repo.rglob("*.kgit-tmp") if ".git" not in p.parts]
        assert_consistent(kgit_repo)
    assert git(kgit_repo, "tag", "-l").split() == ["safe@v1.0.0", "safe@v2.0.0", "safe@v3.0.0"]


def wait_for_process_in_session(session: int, marker: str, timeout: float = 300) -> None:
    """Until a process of session ``session`` runs a command line containing ``marker``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue  # the process ended meanwhile
            if int(fields[3]) == session and marker in cmdline:
                return
        time.sleep(0.05)
    raise AssertionError(f"no process running {marker} appeared in session {session}")


def test_ctrl_c_during_validation_leaves_no_trace(kgit_repo: Path) -> None:
    before = snapshot(kgit_repo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgit", *RELEASE],
        cwd=kgit_repo,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    wait_for_process_in_session(proc.pid, "kgit.models.roundtrip_worker")  # the fresh-process validation is running
    os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C does
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    after = snapshot(kgit_repo)
    assert after == before
    release_again(kgit_repo)


# -- kills inside DVC's own work (in kgit's process) ----------------------------------------------
RWLOCK = Path(".dvc") / "tmp" / "rwlock"


def assert_next_commands_work(repo: Path, origin: Path) -> str:
    """After an interruption, the next release, a real `git push` through kgit's hooks (which
    validates again through `dvc repro`) and `kgit validate --all` succeed. Returns what the release
    said."""
    said = release_again(repo)
    assert_consistent(repo)
    assert git(repo, "status", "--porcelain") == ""
    (repo / ".git" / "kgit" / "validated.json").unlink()  # so the push's `dvc repro` validates everything
    push = subprocess.run(["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True)
    assert push.returncode == 0 and "dvc repro" in push.stderr, push.stderr
    assert sorted(git(origin, "tag", "-l").split()) == sorted(git(repo, "tag", "-l").split())
    checked = kgit(repo, "validate", "--all")
    assert checked.returncode == 0, checked.stderr
    json.loads((repo / RWLOCK).read_text())  # DVC's lock file is whole again
    return said


@pytest.mark.parametrize(
    "point,sig",
    [
        ("dvc-add", "KILL"),
        ("dvc-rwlock", "KILL"),
        ("dvc-added", "KILL"),
        ("dvc-rwlock", "INT"),
        ("dvc-added", "TERM"),
    ],
)
def test_kill_inside_dvc_add_blocks_nothing_after(kgit_repo: Path, tmp_path: Path, point: str, sig: str) -> None:
    """Right before `dvc add`, inside it (DVC has just truncated its rwlock file to rewrite it) and
    right after it, in the release's own process."""
    origin = bare_origin(tmp_path, kgit_repo)
    head_before = git(kgit_repo, "rev-parse", "HEAD")
    env = {**os.environ, "KGIT_FAILPOINT": point if sig == "KILL" else f"{point}:{sig}"}
    proc = run_kgit(kgit_repo, RELEASE, env)
    if sig == "KILL":
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        if point == "dvc-rwlock":
            assert (kgit_repo / RWLOCK).read_text() == ""  # the hole: every DVC command would now stop
    else:
        assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
        assert (kgit_repo / RWLOCK).read_text().strip() != ""  # the release repaired it on its way out
    assert_consistent(kgit_repo)
    assert git(kgit_repo, "rev-parse", "HEAD") == head_before and git(kgit_repo, "tag", "-l") == ""
    said = assert_next_commands_work(kgit_repo, origin)
    if (point, sig) == ("dvc-rwlock", "KILL"):
        assert "reset .dvc/tmp/rwlock, which an interrupted DVC command left empty" in said
    assert git(kgit_repo, "tag", "-l") == "safe@v1.0.0"


def release_streaming(repo: Path, kill_after: float | None = None) -> tuple[str, float]:
    """Run `kgit release` reading its progress as it comes; ``kill_after``: SIGKILL it that many
    seconds after it says it is tracking with DVC. Returns its stderr and the seconds from that line
    to the next one (the time `dvc add` took), if it got there."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgit", *RELEASE],
        cwd=repo,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    seen, tracking, took = "", None, 0.0
    for line in proc.stderr:
        seen += line
        if tracking is not None and not took:
            took = time.monotonic() - tracking
        if "with DVC" in line:
            tracking = time.monotonic()
            if kill_after is not None:
                time.sleep(kill_after)
                proc.kill()
    proc.wait()
    return seen, took


def test_kill_at_random_moments_during_dvc_add(kgit_repo: Path, tmp_path: Path) -> None:
    """SIGKILL from a timer started when the release says it is tracking with DVC, at a random moment
    of each third of the time `dvc add` takes: wherever it lands (DVC's import, its locks, hashing,
    the cache, the .dvc files), nothing blocks what comes next."""
    import random

    seed = int(os.environ.get("KGIT_TEST_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    origin = bare_origin(tmp_path, kgit_repo)
    seen, window = release_streaming(kgit_repo)  # how long `dvc add` takes here, now
    assert "released safe v1" in seen, seen
    for attempt in range(3):
        delay = rng.uniform(attempt / 3, (attempt + 1) / 3) * window
        release_streaming(kgit_repo, kill_after=delay)
        journal = kgit_repo / ".git" / "kgit" / "journal.json"
        inside = journal.exists() and bool(json.loads(journal.read_text()).get("dvc_writing"))
        rwlock = (kgit_repo / RWLOCK).read_text() if (kgit_repo / RWLOCK).exists() else None
        left = sorted(
            p.name
            for p in (kgit_repo / "artifacts").rglob("*.dvc")
            if git(kgit_repo, "ls-files", str(p.relative_to(kgit_repo))) == ""
        )
        print(
            f"seed {seed} attempt {attempt}: killed {delay:.3f} s after 'tracking' (dvc add took {window:.3f} s); "
            f"inside dvc add: {inside}; rwlock {rwlock!r}; .dvc files written: {left}"
        )
        assert_consistent(kgit_repo)
        assert_next_commands_work(kgit_repo, origin)


def test_kill_inside_the_push_upload(kgit_repo: Path, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    """The pre-push hook killed right before DVC uploads and right after (sent, not yet confirmed):
    the push does not happen; the next one uploads and a fresh clone gets the release."""
    rec = api.release(plain_model, "up", formats="keras", repo=kgit_repo)
    origin = bare_origin(tmp_path, kgit_repo)
    for point in ("dvc-push", "dvc-pushed"):
        env = {**os.environ, "KGIT_FAILPOINT": point}
        push = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, env=env, capture_output=True, text=True)
        assert push.returncode != 0, push.stderr
        assert git(origin, "tag", "-l") == ""  # git sent nothing
        assert rec.formats["keras"]["md5"] not in sum(_published(kgit_repo).values(), [])
    push = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, capture_output=True, text=True)
    assert push.returncode == 0, push.stderr
    assert git(origin, "tag", "-l") == "up@v1.0.0"
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(origin), str(fresh))
    assert kgit(fresh, "get", "up@v1").returncode == 0
    assert kgit(fresh, "validate", "--all").returncode == 0


def test_concurrent_releases_get_distinct_versions(kgit_repo: Path) -> None:
    (kgit_repo / RWLOCK).write_text("")  # as a release killed inside DVC left it: the first to get the lock repairs it
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kgit", *RELEASE, "--json"],
            cwd=kgit_repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=900), *p.communicate()) for p in procs]
    # each waits for the repository's lock (KGIT_LOCK_TIMEOUT, 600 s by default) instead of failing
    assert [code for code, _, _ in results] == [0, 0, 0], results
    versions = sorted(json.loads(out)["version"] for _, out, _ in results)
    assert versions == ["v1", "v2", "v3"]
    assert sorted(git(kgit_repo, "tag", "-l").split()) == sorted(f"safe@{v}.0.0" for v in versions)
    assert_consistent(kgit_repo)
    assert git(kgit_repo, "status", "--porcelain") == ""
    said = "".join(err for _, _, err in results)
    assert said.count("reset .dvc/tmp/rwlock") == 1
    assert said.count("waiting for another kgit command in this repository") >= 1  # serialised by the lock


def test_a_release_started_while_another_is_about_to_commit_waits(kgit_repo: Path) -> None:
    """The first release is held (SIGSTOP) with dvc.yaml written and not yet committed; a second one
    started then does not take those files for uncommitted work: it waits for the lock, and both
    succeed with distinct versions."""

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "kgit", *RELEASE, "--json"],
            cwd=kgit_repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    first = start({**os.environ, "KGIT_FAILPOINT": "described:STOP"})
    try:
        deadline = time.monotonic() + 600
        while Path(f"/proc/{first.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        assert "dvc.yaml" in git(kgit_repo, "status", "--porcelain")  # the first one's write, uncommitted
        second = start(dict(os.environ))
        assert second.stderr is not None
        said = ""
        for line in second.stderr:
            said += line
            if "waiting for another kgit command" in line:
                break
        assert "waiting for another kgit command" in said, said
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (err1, said + err2)
    assert [json.loads(out1)["version"], json.loads(out2)["version"]] == ["v1", "v2"]
    assert_consistent(kgit_repo)
    assert git(kgit_repo, "status", "--porcelain") == ""


def test_version_tagged_on_origin_is_refused(kgit_repo: Path, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    import kgit as api

    origin = bare_origin(tmp_path, kgit_repo)
    git(kgit_repo, "push", "-q", "origin", "main")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    git(other, "tag", "-a", "safe@v1.0.0", "-m", "released elsewhere")
    git(other, "push", "-q", "origin", "safe@v1.0.0")
    before = snapshot(kgit_repo)
    proc = kgit(kgit_repo, *RELEASE)
    assert proc.returncode == 1 and "already exists on origin" in proc.stderr, proc.stderr
    assert snapshot(kgit_repo) == before
    assert api.release(plain_model, "safe", repo=kgit_repo, version="v2", formats="keras").version == "v2"


def test_folder_left_by_hand_blocks_that_version(kgit_repo: Path) -> None:
    stray = kgit_repo / "artifacts" / "safe" / "keras" / "v1"
    stray.mkdir(parents=True)
    (stray / "x").write_text("someone else's file")
    release_again(kgit_repo)
    assert "safe@v2.0.0" in git(kgit_repo, "tag", "-l")  # v1 looked taken, so v2 was chosen
    assert (stray / "x").read_text() == "someone else's file"


POINTS = ["staged", "validated", "placed", "tracked", "committed", "tagged"]


FINISHED = {"committed", "tagged"}  # past the commit, an interrupted release is completed


@pytest.mark.parametrize("point,sig", [(p, "INT") for p in POINTS] + [("validated", "TERM"), ("committed", "TERM")])
def test_interrupt_at_each_step(kgit_repo: Path, point: str, sig: str) -> None:
    before = snapshot(kgit_repo)
    env = {**os.environ, "KGIT_FAILPOINT": f"{point}:{sig}"}
    proc = run_kgit(kgit_repo, RELEASE, env)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted" in proc.stderr
    assert_consistent(kgit_repo)
    if point in FINISHED:
        assert git(kgit_repo, "tag", "-l") == "safe@v1.0.0"
        assert git(kgit_repo, "status", "--porcelain") == ""
    else:
        assert without_cache(snapshot(kgit_repo)) == without_cache(before)
    release_again(kgit_repo)
    assert git(kgit_repo, "tag", "-l").split()[-1] == ("safe@v2.0.0" if point in FINISHED else "safe@v1.0.0")


# -- remote faults during the pre-push upload ---------------------------------------------------
def _published(repo: Path) -> dict[str, list[str]]:
    path = repo / ".git" / "kgit" / "published.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _set_remote(repo: Path, url: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "kgit", "url", str(url)], cwd=repo, check=True)
    git(repo, "commit", "-q", "--no-verify", "-am", f"remote {url.name}")


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A tiny real filesystem (tmpfs), to fill up. Needs root, as CI has."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _read_only(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)  # root ignores permission bits
    else:
        folder.chmod(0o555)


def _writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    folder.chmod(0o755)


@pytest.mark.parametrize("fault", ["missing", "read-only", "full"])
def test_remote_fault_refuses_push_and_retry_succeeds(
    kgit_repo: Path, tmp_path: Path, plain_model: Any, fault: str, request: pytest.FixtureRequest
) -> None:
    origin = bare_origin(tmp_path, kgit_repo)
    if fault == "missing":
        blocker = tmp_path / "gone"
        blocker.write_text("the remote's disk is not mounted here")
        bad = blocker / "store"
    elif fault == "read-only":
        bad = tmp_path / "ro-store"
        _read_only(bad)
    else:
        bad = request.getfixturevalue("tmpfs") / "store"
    _set_remote(kgit_repo, bad)
    big = __import__("support.zoo", fromlist=["guide_model"]).guide_model(units=64)  # larger than the tmpfs
    rec = api.release(big, "fault", formats=["keras", "h5"], repo=kgit_repo)
    push = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, capture_output=True, text=True)
    try:
        assert push.returncode != 0 and "uploading to DVC remote" in push.stderr and "failed" in push.stderr, (
            push.stderr
        )
        assert git(origin, "tag", "-l") == ""  # the git refs did not go either
        assert all(info["md5"] not in sum(_published(kgit_repo).values(), []) for info in rec.formats.values())
    finally:
        if fault == "read-only":
            _writable(bad)
    good = tmp_path / "good-store"
    _set_remote(kgit_repo, good)
    retry = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, capture_output=True, text=True)
    assert retry.returncode == 0, retry.stderr
    assert git(origin, "tag", "-l") == "fault@v1.0.0"
    assert all(info["md5"] in _published(kgit_repo)[str(good)] for info in rec.formats.values())
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(origin), str(fresh))
    assert kgit(fresh, "get", "fault@v1").returncode == 0  # what the push published is fetchable
