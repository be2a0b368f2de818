"""Push and get show progress on a terminal (bytes done of the total, rate, time left) and nothing
more in pipes, in CI or with --quiet.

The end-to-end tests run the real `git push` (kgit's pre-push hook uploads to a real DVC
local-folder remote) and the real `kgit get`, once with a pseudo-terminal as stderr, as a user's
shell gives them (git hands its stderr on to the hook), and once through a pipe, as CI runs them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest
from support.world import World, dvc_md5, git, has_version_data

from kgit.core import progress
from kgit.store import dvc_ops

MODEL = "big"
BAR = "━"  # what rich draws the bar with
HIDE_CURSOR = "\x1b[?25l"  # rich hides the cursor while a live display runs
BYTES = re.compile(r"\d+\.\d MB/\d+\.\d MB")  # bytes done / total
RATE = re.compile(r"\d+(\.\d)? [kMG]?B/s")


def on_terminal(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal (120 columns) as its stderr; (exit code, what it wrote there)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, stdout=out, stderr=slave
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: every writer closed the terminal
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        code = proc.wait(timeout=300)
    return code, b"".join(chunks).decode(errors="replace")


def plain(text: str) -> list[str]:
    """The terminal's lines without escape sequences (colours, cursor hiding)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\]8;[^\x1b]*\x1b\\\\", "", text).splitlines()


def in_a_pipe(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )


def assert_progress(text: str, label: str) -> None:
    """A progress display was drawn: the bar redrawn in place, bytes done of the total, a rate."""
    assert HIDE_CURSOR in text and "\r" in text, text
    drawn = [line for line in re.split(r"[\r\n]", text) if line.startswith(label) or f"{label} " in line]
    assert any(BAR in line and BYTES.search(line) and RATE.search(line) for line in drawn), text
    final = next(line for line in reversed(drawn) if BYTES.search(line))
    done, total = BYTES.search(final).group(0).split("/")  # type: ignore[union-attr]
    assert done == total, final  # the bar ends at what was moved


def assert_no_progress(text: str) -> None:
    assert BAR not in text and HIDE_CURSOR not in text and not RATE.search(text) and not BYTES.search(text), text


# -- deciding to draw, counting bytes: no git, no DVC ------------------------------------------------
def test_drawn_only_on_a_terminal_outside_ci_unless_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    master, slave = os.openpty()
    read, write = os.pipe()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty, os.fdopen(write, "w", closefd=False) as pipe:
            assert progress.wanted(stream=tty) is True
            assert progress.wanted(stream=pipe) is False
            assert progress.wanted(quiet=True, stream=tty) is False
            monkeypatch.setenv("TERM", "dumb")
            assert progress.wanted(stream=tty) is False
            monkeypatch.setenv("TERM", "xterm")
            monkeypatch.setenv("CI", "true")
            assert progress.wanted(stream=tty) is False
    finally:
        for fd in (master, slave, read, write):
            os.close(fd)


def test_meter_counts_bytes_and_ends_at_what_was_moved() -> None:
    meter = progress.Meter("uploading", 4_000_000, show=False)
    with meter:
        assert meter.figures().startswith("0 B/4.0 MB  -- MB/s")
        meter.add(1_000_000)
        meter.add(0)
        assert meter.done == 1_000_000
        shown = meter.figures()
        assert shown.startswith("1.0 MB/4.0 MB  ") and RATE.search(shown) and "ETA " in shown, shown
        meter.add(3_500_000)  # more than expected: the total follows
        assert meter.total == 4_500_000
    with progress.Meter("uploading", 9_000_000, show=False) as meter:
        meter.expect(2_000_000)  # DVC found what the remote lacks: less than the versions' sizes
        assert meter.total == 2_000_000
        meter.add(1_500_000)
        meter.expect(1_000_000)  # never below what has moved
        assert meter.total == 1_500_000
    with progress.Meter("fetching", 4_000_000, show=False) as meter:
        meter.add(3_000_000)  # the rest was already in the cache
    assert meter.total == meter.done == 3_000_000 and " in " in meter.figures()
    shown = meter.figures()
    time.sleep(0.2)
    assert meter.figures() == shown  # the time it took (and the rate) stay what they were
    with pytest.raises(OSError), progress.Meter("fetching", 4_000_000, show=False) as meter:
        meter.add(1_000_000)
        raise OSError("connection reset")
    assert meter.total == 4_000_000 and meter.figures().endswith("  stopped") and "ETA" not in meter.figures()


def test_dvc_callbacks_count_reported_bytes_and_files_copied_in_one_call(tmp_path: Path) -> None:
    """The callback DVC's transfer is given: bytes as a file's copy reports them; a file copied
    without reporting (DVC copies local files under 1 GB in one call) counts its size when done; a
    failed copy counts nothing more."""
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 12_345)
    meter = progress.Meter("uploading", 0, show=False)
    top = dvc_ops._byte_callback(meter)
    with top.branched("/remote/a", str(tmp_path / "absent")) as child:  # an object store: chunks
        child.set_size(3_000_000)
        for _ in range(3):
            child.relative_update(1_000_000)
    assert meter.done == 3_000_000
    with top.branched(str(small), str(tmp_path / "copy")):  # one call, no report: its size
        pass
    assert meter.done == 3_012_345
    with pytest.raises(OSError), top.branched(str(small), str(tmp_path / "copy")) as child:
        child.relative_update(100)
        raise OSError("disk full")
    assert meter.done == 3_012_445  # what it reported before failing, not the whole file


# -- the real thing: git push through kgit's hook, kgit get ----------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A clone with one release of a model of a few MB (4 MB of weights; 12 MB with Adam's slots)."""
    import keras
    import numpy as np

    import kgit as api

    w = World.create(tmp_path_factory.mktemp("progress-world"))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1000,), name="x"), keras.layers.Dense(1000), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 1000)), np.zeros((4, 2)), verbose=0)
    api.release(model, MODEL, formats=["keras"], repo=w.repo)
    return w


@pytest.fixture(scope="module")
def pushed(world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[World, subprocess.CompletedProcess[str]]:
    """A copy of the world pushed through a pipe, as CI pushes."""
    w = world.copy(tmp_path_factory.mktemp("pushed") / "w")
    return w, in_a_pipe(w.repo, "git", "push", "origin", "main", env={"CI": ""})


def stored(w: World) -> str:
    """The version's size as kgit shows it: what DVC stores of it (its tensors once each: the
    Adam slots this model never moved are equal tensors, one object)."""
    import kgit as api
    from kgit.core.sizes import human_size

    return human_size(api.show(MODEL, "v1", repo=w.repo).release.formats["keras"]["size"])


def uploaded(w: World) -> bool:
    return has_version_data(w.store, dvc_md5(w.repo, f"artifacts/{MODEL}/keras/v1.dvc"))


@pytest.mark.slow
def test_push_on_a_terminal_shows_bytes_rate_and_refusals(world: World, tmp_path: Path) -> None:
    w = world.copy(tmp_path / "w")
    # first a remote that cannot be written: the refusal is still one line, after the bar
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote folder should be")
    in_a_pipe(w.repo, sys.executable, "-m", "dvc", "remote", "modify", "--local", "kgit", "url", str(blocker / "store"))
    code, text = on_terminal(w.repo, "git", "push", "origin", "main", env={"CI": ""})
    assert code != 0 and "Traceback" not in text, text
    refusals = [line for line in plain(text) if line.startswith("kgit: push refused")]
    assert len(refusals) == 1 and "uploading to DVC remote kgit" in refusals[0] and "failed" in refusals[0], text
    lines = plain(text)
    bar = max(i for i, line in enumerate(lines) if line.startswith("uploading ") and BAR in line)
    assert lines[bar].endswith("stopped") and lines.index(refusals[0]) > bar, text  # no time left shown for it
    assert w.origin_tags() == {}

    w.point_dvc_remote(w.repo)
    code, text = on_terminal(w.repo, "git", "push", "origin", "main", env={"CI": ""})
    assert code == 0, text
    assert f"kgit: uploading {MODEL}@v1 (keras): {stored(w)} to DVC remote kgit ({w.store})" in text
    assert_progress(text, "uploading")
    assert uploaded(w) and f"{MODEL}@v1.0.0" in w.origin_tags()


@pytest.mark.slow
def test_push_through_a_pipe_prints_its_lines_and_no_progress(
    pushed: tuple[World, subprocess.CompletedProcess[str]],
) -> None:
    w, push = pushed
    assert push.returncode == 0, push.stderr
    assert "\r" not in push.stderr
    assert_no_progress(push.stderr)
    lines = push.stderr.splitlines()
    start = lines.index(f"kgit: uploading {MODEL}@v1 (keras): {stored(w)} to DVC remote kgit ({w.store})")
    # (before it, the hook's validation of the copied clone); after it, only git's own report
    assert [line for line in lines[start + 1 :] if not line.startswith(("To ", " * "))] == [], push.stderr
    assert uploaded(w)


@pytest.mark.slow
def test_push_in_ci_on_a_terminal_draws_nothing(world: World, tmp_path: Path) -> None:
    w = world.copy(tmp_path / "w")
    code, text = on_terminal(w.repo, "git", "push", "origin", "main", env={"CI": "true"})
    assert code == 0, text
    upload = text.index(f"kgit: uploading {MODEL}@v1 (keras)")  # (before it, the copied clone's validation)
    assert_no_progress(text[upload:])
    assert uploaded(w)


@pytest.mark.slow
def test_get_shows_progress_on_a_terminal_only(
    pushed: tuple[World, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    w, push = pushed
    assert push.returncode == 0, push.stderr
    clone = w.clone(f"teammate-{tmp_path.name}")
    folder = clone / f"artifacts/{MODEL}/keras/v1"
    kgit = [sys.executable, "-m", "kgit", "get", f"{MODEL}@v1"]
    done = f"{MODEL}@v1 (keras): fetched, verified: artifacts/{MODEL}/keras/v1"

    def forget() -> None:  # as a fresh machine: nothing in the work tree or the DVC cache
        import shutil

        shutil.rmtree(folder)
        shutil.rmtree(clone / ".dvc" / "cache")

    code, text = on_terminal(clone, *kgit, env={"CI": ""})
    assert code == 0 and done in text, text
    assert_progress(text, f"fetching {MODEL}@v1")
    assert (folder / "model.keras").exists()

    forget()
    proc = in_a_pipe(clone, *kgit, env={"CI": ""})
    assert proc.returncode == 0 and proc.stderr.splitlines() == [f"{done} ({stored(w)})"], proc.stderr
    assert "\r" not in proc.stderr and proc.stdout == ""

    for how, args, env in [("--quiet", ["-q"], {"CI": ""}), ("CI", [], {"CI": "1"})]:
        forget()
        code, text = on_terminal(clone, *kgit, *args, env=env)
        assert code == 0 and done in text, (how, text)
        assert_no_progress(text)
        assert (folder / "model.keras").exists()
    assert git(clone, "status", "--porcelain") == ""
