"""The command line: parse options, call kgit's Python API, render the result. Nothing else.

Every expected failure is a KgitError: one line on stderr, exit 1. A usage error (unknown command
or option, missing argument) is one line too, exit 2. Ctrl-C exits 130.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

import typer
from typer.exceptions import TyperException

# isort: off
# Importing the command modules registers their commands; this order is the order of `kgit --help`.
from kgit.cli import releases, lifecycle, checks, compat, serving, report, storage  # noqa: F401

# isort: on
from kgit.cli.app import _state, app, printable
from kgit.core.errors import KgitError, describe

__all__ = ["app", "main"]


# -- entry point ---------------------------------------------------------------------------------
def _fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"kgit: error: {printable(message)}\n")  # one line, whatever the message holds
    sys.exit(code)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so an interrupted release cleans up


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="kgit", standalone_mode=False)
        # Non-standalone Typer turns Ctrl-C into a returned 130 and typer.Exit into its code.
        if isinstance(rv, int) and not isinstance(rv, bool):
            if rv == 130:
                sys.stderr.write("kgit: interrupted\n")
            sys.exit(rv)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors: Typer's message (with its "did you mean"), one line, exit 2
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group named alone: its help
            exc.show()  # type: ignore[attr-defined]
        else:
            message = " ".join(str(exc.format_message()).split())
            hint = f" (see `{ctx.command_path} -h`)" if ctx is not None else ""
            sys.stderr.write(f"kgit: error: {printable(message)}{hint}\n")
        sys.exit(getattr(exc, "exit_code", None) or 2)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("kgit: interrupted\n")
        sys.exit(130)
    except KgitError as exc:
        if _state["traceback"] or os.environ.get("KGIT_TRACEBACK"):
            raise
        _fail(str(exc))
    except Exception as exc:  # a bug in kgit or a library: say so, briefly, and how to see more
        if _state["traceback"] or os.environ.get("KGIT_TRACEBACK"):
            raise
        _fail(f"unexpected {describe(exc)} (rerun with --traceback for details)", 2)
