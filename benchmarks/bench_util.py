"""Shared helpers of the benchmarks: commands, medians, peak memory, progress lines, result rows."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
KGIT = str(BIN / "kgit")
DVC = str(BIN / "dvc")
GTO = str(BIN / "gto")
MB = 1e6

_START = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    sys.stderr.write(f"[{time.perf_counter() - _START:6.1f}s] {message}\n")
    sys.stderr.flush()


def tool_env(**extra: str) -> dict[str, str]:
    """The environment of every measured command: this venv's executables first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.update(extra)
    return env


@dataclass
class Row:
    """One line of the table. ``ratio`` is value / the value of the row it is compared with."""

    measurement: str
    fixture: str
    value: float
    unit: str = "s"  # "s" or "MB"
    ratio: float | None = None
    baseline: bool = False
    target: str = ""
    runs: int | None = None

    def compared_to(self, other: Row) -> Row:
        self.ratio = self.value / other.value if other.value else None
        return self


@dataclass
class Timing:
    median: float
    runs: int


def baseline(measurement: str, fixture: str, value: float, unit: str = "s", runs: int | None = None) -> Row:
    return Row(measurement, fixture, value, unit, baseline=True, runs=runs)


def timing_row(measurement: str, fixture: str, t: Timing, against: Row | None = None, target: str = "") -> Row:
    row = Row(measurement, fixture, t.median, "s", runs=t.runs, target=target)
    return row.compared_to(against) if against is not None else row


def timing_baseline(measurement: str, fixture: str, t: Timing) -> Row:
    return baseline(measurement, fixture, t.median, "s", t.runs)


def verdict(met: bool, text: str) -> str:
    return f"{text}: {'met' if met else 'MISSED'}"


class CommandFailed(SystemExit):
    pass


def run(cmd: Sequence[str], cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None) -> float:
    """Seconds ``cmd`` took; stops the benchmark with its output if it fails."""
    return run_capture(cmd, cwd, stdin, env)[0]


def run_capture(
    cmd: Sequence[str], cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[float, str]:
    """Seconds ``cmd`` took, and its stderr; stops the benchmark with its output if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=env or tool_env(),
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise CommandFailed(
            f"benchmark command failed (exit {proc.returncode}): {' '.join(cmd)} in {cwd}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return elapsed, proc.stderr


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise CommandFailed(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.strip()


# A measurement whose first run takes longer than this is run at most SLOW_RUNS times, the first
# run counting (a warm-up changes nothing measurable for commands of many seconds).
SLOW = 5.0
SLOW_RUNS = 3


def timed(runs: int, fn: Callable[[], float], warmup: bool = True) -> Timing:
    """Median of ``runs`` calls of ``fn``, after one untimed warm-up call (file cache, .pyc) unless
    ``warmup`` is false or that first call took longer than SLOW (then it counts, and there are at
    most SLOW_RUNS calls)."""
    first = fn()
    if first > SLOW:
        values = [first] + [fn() for _ in range(min(runs, SLOW_RUNS) - 1)]
    elif warmup:
        values = [fn() for _ in range(runs)]
    else:
        values = [first] + [fn() for _ in range(runs - 1)]
    return Timing(statistics.median(values), len(values))


def timed_interleaved(
    runs: int, fns: dict[str, Callable[[], float]], warmup: bool = True, cap_slow: bool = True
) -> dict[str, Timing]:
    """Medians of several measurements run in turns (A B A B ...), so that the machine's slow and
    fast moments are shared out evenly between them. The first round is a warm-up unless
    ``warmup`` is false or a measurement in it took longer than SLOW (then it counts, and there
    are at most SLOW_RUNS rounds, unless ``cap_slow`` is false)."""
    samples: dict[str, list[float]] = {k: [fn()] for k, fn in fns.items()}
    slow = cap_slow and any(v[0] > SLOW for v in samples.values())
    rounds = min(runs, SLOW_RUNS) - 1 if slow else (runs if warmup else runs - 1)
    if warmup and not slow:
        samples = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            samples[key].append(fn())
    return {k: Timing(statistics.median(v), len(v)) for k, v in samples.items()}


def tree_bytes(folder: Path) -> int:
    """Apparent size of every regular file under ``folder`` (0 if it does not exist)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.stat(full).st_size
    return total


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- peak memory ----------------------------------------------------------------------------------
@dataclass
class Usage:
    seconds: float
    max_rss: float  # bytes: the largest single process of the tree (ru_maxrss of the waited-for command)
    tree_peak: float  # bytes: the largest sum of RSS over the command and its live descendants (sampled)
    cpu: float = 0.0  # seconds of CPU (user + system) of the command and every descendant it waited for


# The measured command is started by this small launcher, not by the benchmark process: a process
# started directly from a large parent (this one holds TensorFlow and models) inherits the parent's
# peak RSS in its own ru_maxrss, because Linux records the peak of the address space it leaves at exec.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(code)
"""


def measure_usage(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None, interval: float = 0.02) -> Usage:
    """Run ``cmd``; its wall time and peak memory (largest process, and whole process tree)."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="kgit-bench-rss-") as tmp:
        rss_file, out_file, err_file = Path(tmp) / "maxrss", Path(tmp) / "out", Path(tmp) / "err"
        with open(out_file, "wb") as out, open(err_file, "wb") as err:
            t0 = time.perf_counter()
            launcher = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(rss_file), *cmd],
                cwd=cwd,
                env=env or tool_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
            peak = 0
            try:
                root = psutil.Process(launcher.pid)
            except psutil.Error:
                root = None
            while launcher.poll() is None:
                total = 0
                try:
                    procs = root.children(recursive=True) if root is not None else []
                except psutil.Error:
                    procs = []
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        continue
                peak = max(peak, total)
                time.sleep(interval)
            elapsed = time.perf_counter() - t0
        if launcher.returncode != 0 or not rss_file.exists():
            raise CommandFailed(
                f"benchmark command failed (exit {launcher.returncode}): {' '.join(cmd)} in {cwd}\n"
                f"{out_file.read_text(errors='replace')[-3000:]}\n{err_file.read_text(errors='replace')[-3000:]}"
            )
        rss_kb, cpu = rss_file.read_text().split()
    return Usage(elapsed, float(rss_kb) * 1024.0, float(peak), float(cpu))  # ru_maxrss is in KB on Linux
