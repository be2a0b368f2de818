"""What drawing the progress bar costs an upload: kgit's push of one version folder to a DVC
local-folder remote, with the bar drawn on a (pseudo-)terminal, against the same push without it.

    .venv/bin/python benchmarks/bench_progress.py                 # a 1 GiB file + 64 files of 1 MiB
    .venv/bin/python benchmarks/bench_progress.py --mb 256 --runs 3

Builds a scratch git + DVC repository with one folder (``--mb`` MiB in one file, so DVC copies it in
1 MiB chunks and reports each one when it is 1 GiB or more, plus 64 files of 1 MiB that DVC copies
in one call each), ``dvc add``s it, then pushes it with ``kgit.store.dvc_ops.push`` to an empty remote
folder, in turns: ``bar`` (a ``kgit.core.progress.Meter`` drawing on a pseudo-terminal read by a thread,
as a user's terminal reads it), ``none`` (no meter: what a pipe or CI gets), and ``dvc-push`` (the
``python -m dvc push`` subprocess the hook ran before, stderr piped). Prints the median and the
best wall time and CPU time (user + system, this process and its children) of each, and the bar's
cost against none. On a shared machine a local copy of 1 GiB varies by 2x from run to run (page cache,
writeback), more than the bar costs; so it also times the bar's own work directly: one
``Meter.add`` with the bar drawn (DVC reports a local copy once per MiB, an object store once per
part of several MiB), and the display's redraws (2 a second).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MIB = 1 << 20


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_repo(base: Path, mb: int) -> tuple[Path, str]:
    from kgit.store import dvc_ops

    repo = base / "repo"
    (repo / "data").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc_ops.init(repo)
    with open(repo / "data" / "big.bin", "wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(MIB))
    for i in range(64):
        (repo / "data" / f"part-{i:02d}.bin").write_bytes(os.urandom(MIB))
    dvc_ops.add(repo, [repo / "data"])
    dvc_ops.set_default_remote(repo, str(base / "store"))
    oid = dvc_ops.out_hash(dvc_ops.read_dvc_file((repo / "data.dvc").read_text(), "data.dvc"))["md5"]
    return repo, str(oid)


class Terminal:
    """sys.stderr on a pseudo-terminal whose other end a thread reads (and drops), as a terminal does."""

    def __enter__(self) -> Terminal:
        self.master, slave = os.openpty()
        self.saved = sys.stderr
        sys.stderr = open(slave, "w", buffering=1)  # noqa: SIM115 - closed in __exit__
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        return self

    def _drain(self) -> None:
        try:
            while os.read(self.master, 65536):
                pass
        except OSError:
            pass

    def __exit__(self, *exc: object) -> None:
        sys.stderr.close()
        sys.stderr = self.saved
        self.reader.join(timeout=5)
        os.close(self.master)


def push_once(repo: Path, oid: str, store: Path, mode: str, total: int) -> tuple[float, float]:
    from kgit.core import progress
    from kgit.store import dvc_ops

    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(repo / ".dvc" / "tmp" / "index", ignore_errors=True)  # DVC's index of what the remote has
    with Terminal() if mode == "bar" else contextlib.nullcontext():  # the terminal is there before the push
        t0, c0 = time.perf_counter(), cpu()
        if mode == "dvc-push":
            subprocess.run(
                [sys.executable, "-m", "dvc", "push", "-q", "data.dvc"],
                cwd=repo,
                check=True,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        elif mode == "bar":
            with progress.Meter("uploading", total, show=True) as meter:
                dvc_ops.push(repo, [oid], "kgit", meter)
        else:
            dvc_ops.push(repo, [oid], "kgit")
        return time.perf_counter() - t0, cpu() - c0


def update_cost(n: int = 20000) -> tuple[float, float]:
    """(microseconds per ``Meter.add`` with the bar drawn on a terminal, without it)."""
    from kgit.core import progress

    costs = []
    for show in (True, False):
        with Terminal(), progress.Meter("uploading", n * MIB, show=show) as meter:
            t0 = time.process_time()
            for _ in range(n):
                meter.add(MIB)
            costs.append((time.process_time() - t0) / n * 1e6)
    return costs[0], costs[1]


def redraw_cost(seconds: float = 2.0) -> float:
    """Milliseconds of CPU per second the bar is shown (its redraws, and 20 updates a second)."""
    from kgit.core import progress

    with Terminal(), progress.Meter("uploading", 1 << 40, show=True) as meter:
        t0, end = time.process_time(), time.monotonic() + seconds
        while time.monotonic() < end:
            meter.add(MIB)
            time.sleep(0.05)
        return (time.process_time() - t0) / seconds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024, help="MiB in the one large file (default 1024)")
    parser.add_argument("--runs", type=int, default=5, help="pushes of each kind, in turns (default 5)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory(prefix="kgit-bench-progress-") as tmp:
        base = Path(tmp)
        repo, oid = make_repo(base, args.mb)
        total = (args.mb + 64) * MIB
        modes = ["bar", "none", "dvc-push"]
        times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        for mode in modes:  # warm-up, untimed: imports, page cache
            push_once(repo, oid, base / "store", mode, total)
        for i in range(args.runs):
            for mode in modes[i % 3 :] + modes[: i % 3]:
                times[mode].append(push_once(repo, oid, base / "store", mode, total))
        print(
            f"push of {total / MIB:.0f} MiB ({args.mb} MiB file + 64 x 1 MiB) to a local-folder remote, "
            f"median of {args.runs}:"
        )
        med = {m: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for m, v in times.items()}
        best = {m: (min(w for w, _ in v), min(c for _, c in v)) for m, v in times.items()}
        for mode in modes:
            print(
                f"  {mode:9s} wall {med[mode][0]:6.2f} s (best {best[mode][0]:5.2f})  cpu {med[mode][1]:6.2f} s "
                f"(best {best[mode][1]:5.2f})  runs: {', '.join(f'{w:.2f}' for w, _ in times[mode])}"
            )
        print(
            f"  bar against none: median wall {med['bar'][0] / med['none'][0]:.3f}x, cpu "
            f"{med['bar'][1] / med['none'][1]:.3f}x; best wall {best['bar'][0] / best['none'][0]:.3f}x, "
            f"cpu {best['bar'][1] / best['none'][1]:.3f}x"
        )
        drawn, counted = update_cost()
        per_gib = drawn * 1024 / 1e3
        print(
            f"  one Meter.add: {drawn:.1f} us with the bar drawn, {counted:.1f} us without; at one per MiB: "
            f"{per_gib:.1f} ms per GiB, {per_gib / 1e3 / best['none'][0] * (total / (1 << 30)) * 100:.2f}% of the best "
            f"push above"
        )
        print(f"  the display's redraws: {redraw_cost():.1f} ms of CPU per second shown")


if __name__ == "__main__":
    main()
