"""The suite's own scheduling: the tests sharing an expensive fixture run on one worker, so it is built
once (tests/conftest.py groups them; pytest-xdist's `--dist loadgroup` sends each group to one worker).
If the installed pytest and pytest-xdist stop agreeing on how a group is named, xdist falls back to
sending every test anywhere, nothing fails, and the whole suite quietly takes twice as long: this test
notices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SUPPORT

PROBE = """
import os, time
import pytest

@pytest.fixture(scope="module")
def shared():
    with open(os.environ["PROBE_LOG"], "a") as fh:
        fh.write(f"built {os.getpid()}\\n")
    return 1

@pytest.mark.parametrize("n", range(6))
def test_uses_it(shared, n):
    with open(os.environ["PROBE_LOG"], "a") as fh:
        fh.write(f"used {os.getpid()}\\n")
    time.sleep(0.1)

@pytest.mark.parametrize("n", range(6))
def test_alone(n):
    time.sleep(0.1)
"""


@pytest.mark.slow  # it guards the whole suite's time: two pytest workers of its own take seconds
def test_tests_sharing_a_module_fixture_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    log = tmp_path / "probe.log"
    env = {**os.environ, "PROBE_LOG": str(log), "PYTHONPATH": str(SUPPORT.parent)}
    proc = subprocess.run(
        # the suite's conftest as a plugin (its grouping hook), two workers as scripts/test.sh runs them
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "-n", "2"]
        + ["--dist", "loadgroup", "test_probe.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = log.read_text().splitlines()
    built = [line for line in lines if line.startswith("built")]
    used = {line.split()[1] for line in lines if line.startswith("used")}
    assert len([line for line in lines if line.startswith("used")]) == 6
    assert len(built) == 1 and used == {built[0].split()[1]}, lines
