"""Commands that check releases and guard git: validate, verify, hooks, hook."""

from __future__ import annotations

import sys
from typing import Any

import typer

from kgit.cli.app import Steps, app, err, print_json
from kgit.errors import KgitError


# -- validate ------------------------------------------------------------------------------------
@app.command()
def validate(
    refs: list[str] = typer.Argument(None, metavar="[NAME@VERSION]...", help="Releases to check (default: all)."),
    all_: bool = typer.Option(False, "--all", help="Check every release."),
    recheck: bool = typer.Option(False, "--recheck", help="Check again even versions already validated at their current content."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check releases: data present, unchanged since tagging, file hashes, signature, then a reload in a fresh process compared with the reference outputs. Incremental."""
    from kgit import api

    with Steps(enabled=not json_out) as steps:
        results = api.validate(refs or None, all=all_ or not refs, recheck=recheck, progress=steps)
    _report(results, json_out)
    if not results:
        err("no releases to validate")


def _report(results: list[Any], json_out: bool, what: str = "checks") -> None:
    """Print check results (table or JSON); raise one KgitError naming what failed."""
    from kgit.validation import result_dict

    if json_out:
        print_json([result_dict(r) for r in results])
    elif results:
        render_validation(results)
    bad = [r for r in results if not r.ok]
    if bad:
        raise KgitError(f"{len(bad)} of {len(results)} {what} failed: "
                        + "; ".join(f"{r.folder} ({r.format}) {r.check}: {r.reason()}" for r in bad[:3]))


def render_validation(results: list[Any], stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for col in ("version", "format", "check", "result", "max abs diff", "reason"):
        t.add_column(col)
    colours = {"passed": "green", "cached": "green", "missing": "yellow", "failed": "red"}
    for r in results:
        diff = r.max_abs_diff
        status = r.status if r.status != "cached" else "passed (cached)"
        t.add_row(r.folder, r.format, r.check if not r.ok else "all",
                  f"[{colours.get(r.status, 'red')}]{status}[/]", "-" if diff is None else f"{diff:.3g}",
                  "" if r.ok else r.reason())
    Console(stderr=stderr, soft_wrap=True).print(t)


@app.command()
def verify(
    refs: list[str] = typer.Argument(None, metavar="[NAME@VERSION]...", help="Releases to check (default: all)."),
    all_: bool = typer.Option(False, "--all", help="Check every release."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check release signatures against the trusted public keys (offline). `kgit validate` does this too."""
    from kgit import api

    results = api.verify(None if all_ or not refs else refs)
    _report(results, json_out, "signature checks")


# -- hooks -------------------------------------------------------------------------------------
hooks_app = typer.Typer(help="Install or remove kgit's git hooks (pre-commit, pre-push).", no_args_is_help=True)
app.add_typer(hooks_app, name="hooks")


@hooks_app.command("install")
def hooks_install() -> None:
    """Install kgit's pre-commit and pre-push hooks (honours core.hooksPath; chains existing hooks)."""
    from kgit import hooks
    from kgit.git_ops import Repo

    changes = hooks.install(Repo("."))
    for c in changes or ["kgit's hooks are already installed; nothing changed"]:
        err(f"kgit: {c}")


@hooks_app.command("uninstall")
def hooks_uninstall() -> None:
    """Remove kgit's hooks and put back the hooks they chained."""
    from kgit import hooks
    from kgit.git_ops import Repo

    changes = hooks.uninstall(Repo("."))
    for c in changes or ["no kgit hooks installed; nothing changed"]:
        err(f"kgit: {c}")


@app.command("hook", hidden=True)
def hook(
    name: str = typer.Argument(..., help="pre-push or pre-commit."),
    args: list[str] = typer.Argument(None, help="What git passes to the hook (pre-push: remote name and URL)."),
) -> None:
    """Run a git hook's check (called by the shims in .git/hooks; not for direct use)."""
    from kgit import guard

    if name == "pre-push":
        remote = (args or ["origin"])[0]
        text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        updates = guard.parse_updates(text) or guard.updates_from_pre_commit_framework()
        code = guard.pre_push(remote, updates)
    elif name == "pre-commit":
        code = guard.pre_commit()
    else:
        raise KgitError(f"unknown hook {name!r}: kgit provides pre-push and pre-commit")
    if code:
        raise typer.Exit(code)


