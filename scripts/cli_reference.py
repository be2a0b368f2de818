"""kgit's command line read as data from its Typer app: one traversal, shared by the man page
(scripts/make_man.py) and the documentation site's command reference (scripts/make_docs.py).

Typer bundles its own click; its classes are read by what they have, not imported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Param:
    """One argument or option, as ``--help`` shows it."""

    kind: str  # "argument" or "option"
    names: tuple[str, ...]  # options: ("--format", "-f") as declared, then any --no-... form
    metavar: str  # "" for a flag
    help: str
    required: bool
    default: str  # "" when there is none worth showing (flags, empty lists, None)


@dataclass(frozen=True)
class Command:
    """A command or a group of sub-commands, with the words that run it (``("kgit", "hooks", "install")``)."""

    path: tuple[str, ...]
    help: str
    params: tuple[Param, ...]
    subcommands: tuple[str, ...]  # a group's visible sub-commands; empty for a command

    @property
    def is_group(self) -> bool:
        return bool(self.subcommands)

    @property
    def arguments(self) -> list[Param]:
        return [p for p in self.params if p.kind == "argument"]

    @property
    def options(self) -> list[Param]:
        return [p for p in self.params if p.kind == "option"]

    @property
    def usage(self) -> str:
        if self.is_group:
            return " ".join([*self.path, "COMMAND [ARGS]..."])
        return " ".join([*self.path, "[OPTIONS]", *(a.metavar for a in self.arguments)])


def _default(param: Any) -> str:
    value = param.default
    if getattr(param, "is_flag", False) or value is None or value == () or value == [] or callable(value):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _param(param: Any) -> Param | None:
    kind = getattr(param, "param_type_name", "")
    if kind not in ("argument", "option") or getattr(param, "hidden", False):
        return None
    if kind == "argument":
        return Param(
            "argument",
            (str(param.name),),
            str(param.metavar or str(param.name).upper()),
            getattr(param, "help", None) or "",
            bool(param.required),
            _default(param),
        )
    metavar = "" if param.is_flag or param.count else str(param.metavar or str(param.name).upper())
    return Param(
        "option", (*param.opts, *param.secondary_opts), metavar, param.help or "", bool(param.required), _default(param)
    )


def _command(cmd: Any, path: tuple[str, ...]) -> Command:
    params = tuple(p for p in (_param(x) for x in cmd.params) if p is not None)
    return Command(path, cmd.help or "", params, tuple(name for name, _ in _children(cmd)))


def _children(group: Any) -> list[tuple[str, Any]]:
    if not hasattr(group, "list_commands"):
        return []
    import typer

    ctx = typer.Context(group)
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is not None and not cmd.hidden:
            out.append((name, cmd))
    return out


def app_command() -> Any:
    """The click command of kgit's Typer app, from this checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import typer

    from kgit.cli import app

    return typer.main.get_command(app)


def root() -> Command:
    """The top level: kgit's description and its global options."""
    return _command(app_command(), ("kgit",))


def walk(group: Any = None, path: tuple[str, ...] = ("kgit",)) -> Iterator[Command]:
    """Every visible command and group under ``group`` (default: kgit's app), depth first in the
    app's order, each group before its sub-commands. Hidden commands and options are left out."""
    for name, cmd in _children(app_command() if group is None else group):
        yield _command(cmd, (*path, name))
        yield from walk(cmd, (*path, name))


def version() -> str:
    app_command()  # puts this checkout first on sys.path
    from kgit import __version__

    return __version__
