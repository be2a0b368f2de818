"""The Typer application and what every command shares: output helpers and progress."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Sequence
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
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print kgit's version and exit."
    ),
) -> None:
    _state["traceback"] = traceback


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ANSI = {"bold": "\033[1m", "dim": "\033[2m", "green": "\033[32m", "yellow": "\033[33m", "red": "\033[31m"}


def printable(text: object) -> str:
    """``text`` as one line that is safe to print: line breaks and tabs become spaces, any other
    control character (a terminal escape sequence in a tag message...) is shown as ``\\xNN``."""
    flat = re.sub(r"[\r\n\t]+", " ", str(text))
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", flat)


def colour(stream: Any) -> bool:
    """Whether to style what goes to ``stream``: a terminal, and the NO_COLOR convention not set."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def styled(text: str, style: str | None, stream: Any) -> str:
    return f"{_ANSI[style]}{text}\033[0m" if style and colour(stream) else text


def err(text: str, *, style: str | None = None) -> None:
    """One line on stderr (messages, warnings, what changed), plain text; ``style`` on a terminal."""
    sys.stderr.write(styled(printable(text), style, sys.stderr) + "\n")


def out(text: str) -> None:
    """One line of a result on stdout, plain text."""
    sys.stdout.write(printable(text) + "\n")


def print_json(data: Any) -> None:
    """JSON on stdout: indented for a person at a terminal, compact for a program reading a pipe
    (``indent`` makes Python's json fall back to its slow pure-Python encoder: seconds at 15,000 releases)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")


class Steps:
    """Progress for long work on stderr: a spinner with the current step on a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.status: Any = None
        self.console: Any = None

    def __enter__(self) -> Steps:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False, soft_wrap=True)
            self.status = self.console.status("starting")
            self.status.__enter__()
        return self

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        if self.status is not None:
            from rich.text import Text

            self.console.log(Text(printable(message), style="dim"))
            self.status.update(Text(printable(message)))
        else:
            err(f"- {message}", style="dim")

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)


def write_columns(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns on stdout in one write, each row one line holding every value whole, however
    long (bold header on a terminal). Fast: no rich (its table costs ~0.6 s at 1,500 rows)."""
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    head = styled("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), "bold", sys.stdout)
    lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    sys.stdout.write("\n".join(lines) + "\n")


def write_table(header: list[str], rows: list[list[str]], styles: Sequence[str | None] | None = None) -> None:
    """A table on stdout. On a terminal, rich's: long cells wrap inside their column, ``styles``
    (one per row, e.g. "red") colour the rows. Anywhere else (a pipe, a file), ``write_columns``:
    plain aligned text, no escape codes, every value whole on its row's line, whatever the width."""
    if not sys.stdout.isatty():
        write_columns(header, rows)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for col in header:
        table.add_column(col, overflow="fold")
    for i, row in enumerate(rows):
        style = (styles[i] if styles else None) or ""
        table.add_row(*(Text(printable(c), style=style) for c in row))
    Console(highlight=False, no_color=bool(os.environ.get("NO_COLOR"))).print(table)


def write_pairs(rows: list[tuple[str, str]]) -> None:
    """``key  value`` lines on stdout in one write, keys aligned (bold on a terminal, where long
    values wrap under their column; a pipe gets each value whole on one line, for grep)."""
    rows = [(k, printable(v)) for k, v in rows]
    width = max(len(k) for k, _ in rows) + 2
    tty = sys.stdout.isatty()
    room = shutil.get_terminal_size().columns - width if tty else 0
    lines = []
    for key, value in rows:
        head = styled(key, "bold", sys.stdout) + " " * (width - len(key))
        parts = textwrap.wrap(value, room, break_on_hyphens=False) if room >= 20 else []
        lines.append(head + (parts[0] if parts else value))
        lines += [" " * width + part for part in parts[1:]]
    sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")


def former(name: str, of: str, *, many: bool = False) -> Any:
    """A hidden option: ``name``, a former spelling of option ``of`` that is still accepted (``--help``,
    the man page and the docs show only ``of``). Combine the two with ``either``."""
    return typer.Option([] if many else None, name, hidden=True, help=f"Former spelling of {of}; still accepted.")


def either(value: Any, old: Any, name: str, old_name: str) -> Any:
    """The value of option ``name`` given under that name or under its former spelling ``old_name``
    (a repeatable option: both lists); the two with different values is refused."""
    if isinstance(value, list):
        return [*value, *(old or [])]
    if old is None or old == value:
        return value
    if value is not None:
        raise KgitError(f"{old_name} is the former spelling of {name}: give {name} once")
    return old


def parse_key_values(items: list[str], option: str) -> dict[str, str]:
    """``["endpointurl=http://h:9000", ...]`` -> a dict; a malformed item is refused."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", key.strip()):
            raise KgitError(
                f"invalid {option} {item.split('=')[0]!r}=...: use KEY=VALUE with a DVC setting name "
                "as KEY (e.g. endpointurl=https://s3.example.com)"
            )
        result[key.strip()] = value
    return result
