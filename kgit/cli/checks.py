"""Commands that check releases and guard git: validate, verify, check, hooks, server, hook."""

from __future__ import annotations

import sys
from typing import Any

import typer

from kgit.cli.app import Steps, app, err, parse_key_values, print_json
from kgit.core.errors import KgitError


# -- validate ------------------------------------------------------------------------------------
@app.command()
def validate(
    refs: list[str] = typer.Argument(None, metavar="[NAME@VERSION]...", help="Releases to check (default: all)."),
    all_: bool = typer.Option(False, "--all", help="Check every release."),
    recheck: bool = typer.Option(False, "--recheck", help="Check again even versions already validated at their current content."),
    unsafe: bool = typer.Option(False, "--unsafe", help="Let the reload run the code a release carries (a Python Lambda: a release made with --unsafe). Only if you trust who released it."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check releases: data present, unchanged since tagging, file hashes, signature, the model's configuration (no code unless --unsafe), then a reload in a fresh process compared with the reference outputs. Incremental."""
    from kgit import api

    with Steps(enabled=not json_out) as steps:
        results = api.validate(refs or None, all=all_ or not refs, recheck=recheck, progress=steps, unsafe=unsafe)
    _report(results, json_out)
    if not results:
        err("no releases to validate")


def _report(results: list[Any], json_out: bool, what: str = "checks") -> None:
    """Print check results (table or JSON); raise one KgitError naming what failed."""
    if json_out:
        print_json([r.to_dict() for r in results])
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
hooks_app = typer.Typer(help="Install or remove kgit's git hooks (pre-commit, pre-merge-commit, pre-push).", no_args_is_help=True)
app.add_typer(hooks_app, name="hooks")


@hooks_app.command("install")
def hooks_install() -> None:
    """Install kgit's pre-commit, pre-merge-commit and pre-push hooks (honours core.hooksPath; chains existing hooks)."""
    from kgit import api

    changes = api.hooks_install()
    for c in changes or ["kgit's hooks are already installed; nothing changed"]:
        err(f"kgit: {c}")


@hooks_app.command("uninstall")
def hooks_uninstall() -> None:
    """Remove kgit's hooks and put back the hooks they chained."""
    from kgit import api

    changes = api.hooks_uninstall()
    for c in changes or ["no kgit hooks installed; nothing changed"]:
        err(f"kgit: {c}")


@app.command("hook", hidden=True)
def hook(
    name: str = typer.Argument(..., help="pre-push, pre-commit or pre-receive (server)."),
    args: list[str] = typer.Argument(None, help="What git passes to the hook (pre-push: remote name and URL)."),
) -> None:
    """Run a git hook's check (called by the shims in .git/hooks; not for direct use)."""
    from kgit import api

    text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    code = api.run_hook(name, args or [], text)
    if code:
        raise typer.Exit(code)




# -- check (the server hook's checks, in a clone: for CI on hosted forges) -------------------------
@app.command()
def check(
    since: str = typer.Option(None, "--since", metavar="REV", help="Also check the changes to trust since REV (e.g. the pipeline's before-SHA): no unendorsed key or policy change."),
    no_data: bool = typer.Option(False, "--no-data", help="Skip reading the DVC remote (every release's data there, its metadata.json naming that release)."),
    json_out: bool = typer.Option(False, "--json", help="Print the problems as JSON."),
) -> None:
    """Check the repository as kgit's server hook would: every release tag consistent, stage tags on valid versions, every branch tip holding its releases as released, data in the DVC remote. Git and DVC only (no TensorFlow); for CI jobs on hosted forges."""
    from kgit import api

    problems = api.check(since, data=not no_data)
    if json_out:
        print_json({"ok": not problems, "problems": problems})
    else:
        for p in problems:
            err(f"kgit: problem: {p}")
    if problems:
        raise KgitError(f"{len(problems)} problem(s) found: {problems[0]}")
    if not json_out:
        err("kgit: every release is consistent" + ("" if no_data else " and its data is in the DVC remote"))


# -- server ----------------------------------------------------------------------------------------
server_app = typer.Typer(help="The server-side guard: a pre-receive hook for the bare repository teams push to.",
                         no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.command("install")
def server_install(
    bare_repo: str = typer.Argument(..., metavar="BARE_REPO", help="Path of the bare git repository (on the server)."),
    dvc_remote: str = typer.Option(None, "--dvc-remote", metavar="URL", help="The DVC remote pushed releases must be in (default: the one in each release commit's .dvc/config)."),
    dvc_remote_option: list[str] = typer.Option(
        [], "--dvc-remote-option", metavar="KEY=VALUE",
        help="A DVC setting of that remote, e.g. endpointurl=http://minio:9000, region=eu-west-1, profile=NAME; repeatable "
        "(replaces the ones set before). Not credentials: the hook takes those from the server's environment "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws)."),
) -> None:
    """Install kgit's pre-receive hook in a bare repository (chains an existing one). It refuses moved or deleted release/stage tags, inconsistent releases, releases whose data is not in the DVC remote, and more: `--no-verify` cannot skip it."""
    from kgit import api

    options = parse_key_values(dvc_remote_option, "--dvc-remote-option")
    for c in api.server_install(bare_repo, dvc_remote, options) or ["kgit's server hook is already installed; nothing changed"]:
        err(f"kgit: {c}")


@server_app.command("uninstall")
def server_uninstall(
    bare_repo: str = typer.Argument(..., metavar="BARE_REPO", help="Path of the bare git repository."),
) -> None:
    """Remove kgit's pre-receive hook and put back the hook it chained."""
    from kgit import api

    for c in api.server_uninstall(bare_repo) or ["no kgit server hook installed; nothing changed"]:
        err(f"kgit: {c}")
