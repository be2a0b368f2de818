"""Progress of an upload or a download: bytes done of the total, rate and time left, on a terminal.

A push or ``kgit get`` of a large model moves gigabytes; on a terminal the user sees how far it is.
In a pipe, in CI (``CI`` set) or when asked to be quiet, nothing is drawn: the callers print their
usual line before and after, so logs stay as they were.

The numbers come from DVC's own transfer callbacks (see ``kgit.store.dvc_ops``); this module only keeps
the count and draws it (rich, imported only when a display is shown).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from kgit.core.sizes import human_size


def wanted(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw progress: ``stream`` (stderr) is a terminal, ``CI`` is not set, not ``quiet``."""
    if quiet or os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Meter:
    """Counts the bytes of one transfer (thread-safe: DVC copies files from a thread pool) and, when
    ``show`` is true, draws ``LABEL ━━━━━━━━━━━━━━╺━━━━━━━━━━ 12.0 MB/50.0 MB  8.1 MB/s  ETA 0:00:05`` on stderr.

    ``total`` is the expected number of bytes; it grows if more arrive, and is set to what was
    moved when the transfer ends (objects already in place are not moved again)."""

    def __init__(self, label: str, total: int, show: bool) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.done = 0
        self.show = show
        self.started = time.monotonic()
        self.stopped = False
        self.ended: float | None = None
        self._lock = threading.Lock()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Meter:
        self.started = time.monotonic()
        if self.show:
            self._start_display()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.ended = time.monotonic()
            if exc[0] is None:  # finished: the bar says what was moved
                self.total = self.done
            else:  # failed: the bar stays where it stopped, without a time left
                self.stopped = True
        if self._progress is None:
            return
        self._progress.update(self._task, completed=self.done, total=max(self.total, 1))
        self._progress.stop()

    def expect(self, nbytes: int) -> None:
        """The transfer now knows its size: ``nbytes`` in all (what it will move)."""
        with self._lock:
            self.total = max(int(nbytes), self.done)
            done, total = self.done, self.total
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=max(total, 1))

    def add(self, nbytes: int) -> None:
        """``nbytes`` more have been moved."""
        if nbytes <= 0:
            return
        with self._lock:
            self.done += nbytes
            if self.done > self.total:
                self.total = self.done
            done, total = self.done, self.total
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=max(total, 1))

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def rate(self) -> float | None:
        """Average bytes per second so far (None before anything moved)."""
        elapsed = self.elapsed
        return self.done / elapsed if self.done and elapsed > 0 else None

    def figures(self) -> str:
        """``12.0 MB/50.0 MB  8.1 MB/s  ETA 0:00:05``: what the display shows after the bar."""
        rate = self.rate()
        text = f"{human_size(self.done)}/{human_size(self.total)}  " + (f"{human_size(rate)}/s" if rate else "-- MB/s")
        if self.stopped:
            text += "  stopped"
        elif rate and self.total > self.done:
            text += f"  ETA {_clock((self.total - self.done) / rate)}"
        elif self.total and self.done >= self.total:
            text += f"  in {self.elapsed:.1f} s"
        return text

    def _start_display(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
        from rich.text import Text

        meter = self

        class Figures(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(meter.figures())

        console = Console(file=sys.stderr, highlight=False)
        bar = BarColumn(bar_width=30, complete_style="green", finished_style="green")
        # twice a second: each redraw costs about 1.5 ms of CPU (benchmarks/bench_progress.py)
        self._progress = Progress(
            TextColumn("{task.description}"),
            bar,
            Figures(),
            console=console,
            refresh_per_second=2,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(self.label, total=max(self.total, 1))
        self._progress.start()


def tell(log: object, text: str | None) -> None:
    """Say ``text`` through ``log`` (a command's progress), else as a `kgit:` line on stderr."""
    if text and callable(log):
        log(text)
    elif text:
        print(f"kgit: {text}", file=sys.stderr)
