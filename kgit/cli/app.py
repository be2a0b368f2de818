"""The Typer application and what every command shares: output helpers and progress."""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from typing import Any

import typer

from kgit.core.errors import KgitError

app = typer.Typer(
    name="kgit",
    help="Immutable, validated, versioned Keras model releases in your git repository, stored with DVC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"traceback": False}


def _version_callback(value: bool) -> None:
    if value:
        from kgit import __version__

        typer.echo(f"kgit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    traceback: bool = typer.Option(False, "--traceback", help="Show the full stack trace when an error occurs."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print kgit's version and exit."),
) -> None:
    _state["traceback"] = traceback


def err(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text)


def print_json(data: Any) -> None:
    """JSON on stdout: indented for a person at a terminal, compact for a program reading a pipe
    (``indent`` makes Python's json fall back to its slow pure-Python encoder: seconds at 15,000 releases)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")


class Steps:
    """Progress for long work: a spinner with the current step on a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.enabled = enabled
        self.status: Any = None

    def __enter__(self) -> Steps:
        if self.enabled and self.console.is_terminal:
            self.status = self.console.status("starting")
            self.status.__enter__()
        return self

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        if self.status is not None:
            self.console.log(f"[dim]{message}[/dim]")
            self.status.update(message)
        else:
            self.console.print(f"[dim]- {message}[/dim]")

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)



def write_columns(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns on stdout in one write (bold header on a terminal)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    if sys.stdout.isatty():
        head = f"\033[1m{head}\033[0m"
    lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    sys.stdout.write("\n".join(lines) + "\n")


def write_pairs(rows: list[tuple[str, str]]) -> None:
    """``key  value`` lines on stdout in one write, keys aligned (bold on a terminal, where long
    values wrap under their column; a pipe gets each value on one line, for grep)."""
    width = max(len(k) for k, _ in rows) + 2
    tty = sys.stdout.isatty()
    room = shutil.get_terminal_size().columns - width if tty else 0
    lines = []
    for key, value in rows:
        head = f"\033[1m{key}\033[0m" + " " * (width - len(key)) if tty else key.ljust(width)
        parts = textwrap.wrap(value, room, break_on_hyphens=False) if room >= 20 else []
        lines.append(head + (parts[0] if parts else value))
        lines += [" " * width + part for part in parts[1:]]
    sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")


def parse_key_values(items: list[str], option: str) -> dict[str, str]:
    """``["endpointurl=http://h:9000", ...]`` -> a dict; a malformed item is refused."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", key.strip()):
            raise KgitError(f"invalid {option} {item.split('=')[0]!r}=...: use KEY=VALUE with a DVC setting name "
                            "as KEY (e.g. endpointurl=https://s3.example.com)")
        result[key.strip()] = value
    return result
