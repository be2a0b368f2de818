"""Commands that check releases and guard git: validate, verify, check, hooks, server, hook."""

from __future__ import annotations

import sys
from typing import Any

import typer

from kgit.cli.app import Steps, app, either, err, former, parse_key_values, print_json, write_table
from kgit.core.errors import KgitError


# -- validate ------------------------------------------------------------------------------------
@app.command()
def validate(
    refs: list[str] = typer.Argument(None, metavar="[NAME@VERSION]...", help="Releases to check (default: all)."),
    formats: list[str] = typer.Option(
        [],
        "--format",
        "-f",
        metavar="FORMAT",
        help="Only this format of the releases named (repeatable; default: every format). "
        "Its data must be here: `kgit get NAME@VERSION -f FORMAT` fetches it.",
    ),
    all_: bool = typer.Option(False, "--all", help="Check every release."),
    recheck: bool = typer.Option(
        False, "--recheck", help="Check again even versions already validated at their current content."
    ),
    unsafe: bool = typer.Option(
        False,
        "--unsafe",
        help="Let the reload run the code a release carries (a Python Lambda: a release made with --unsafe). Only if you trust who released it.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check releases: data present, unchanged since tagging, file hashes, signature, the model's configuration (no code unless --unsafe), then a reload in a fresh process compared with the reference outputs. Incremental."""
    from kgit import api

    with Steps(enabled=not json_out) as steps:
        results = api.validate(
            refs or None, all=all_ or not refs, formats=formats or None, recheck=recheck, progress=steps, unsafe=unsafe
        )
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
        raise KgitError(
            f"{len(bad)} of {len(results)} {what} failed: "
            + "; ".join(f"{r.folder} ({r.format}) {r.check}: {r.reason()}" for r in bad[:3])
        )


_COLOURS = {"passed": "green", "cached": "green", "missing": "yellow", "collected": "dim"}


def render_validation(results: list[Any]) -> None:
    rows, styles = [], []
    for r in results:
        diff = r.max_abs_diff
        rows.append(
            [
                r.folder,
                r.format,
                r.check if not r.ok or r.status == "collected" else "all",
                r.status if r.status != "cached" else "passed (cached)",
                "-" if diff is None else f"{diff:.3g}",
                "" if r.ok and r.status != "collected" else r.reason(),
            ]
        )
        styles.append(_COLOURS.get(r.status, "red"))
    write_table(["version", "format", "check", "result", "max abs diff", "reason"], rows, styles)


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
hooks_app = typer.Typer(
    help="Install or remove kgit's git hooks (pre-commit, pre-merge-commit, pre-push).", no_args_is_help=True
)
app.add_typer(hooks_app, name="hooks")


@hooks_app.command("install")
def hooks_install(json_out: bool = typer.Option(False, "--json", help="Print what changed as JSON.")) -> None:
    """Install kgit's pre-commit, pre-merge-commit and pre-push hooks (honours core.hooksPath; chains existing hooks)."""
    from kgit import api

    _changes(api.hooks_install(), json_out, "kgit's hooks are already installed; nothing changed")


@hooks_app.command("uninstall")
def hooks_uninstall(json_out: bool = typer.Option(False, "--json", help="Print what changed as JSON.")) -> None:
    """Remove kgit's hooks and put back the hooks they chained."""
    from kgit import api

    _changes(api.hooks_uninstall(), json_out, "no kgit hooks installed; nothing changed")


def _changes(changes: list[str], json_out: bool, none: str) -> None:
    if json_out:
        print_json({"changes": changes})
        return
    for c in changes or [none]:
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
    since: str = typer.Option(
        None,
        "--since",
        metavar="REV",
        help="Also check the changes to trust since REV (e.g. the pipeline's before-SHA): no unendorsed key or policy change.",
    ),
    no_data: bool = typer.Option(
        False,
        "--no-data",
        help="Skip reading the DVC remote (every release's data there, its metadata.json naming that release).",
    ),
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
server_app = typer.Typer(
    help="The server-side guard: a pre-receive hook for the bare repository teams push to.", no_args_is_help=True
)
app.add_typer(server_app, name="server")


@server_app.command("install")
def server_install(
    bare_repo: str = typer.Argument(..., metavar="BARE_REPO", help="Path of the bare git repository (on the server)."),
    remote: str = typer.Option(
        None,
        "--remote",
        "-r",
        metavar="PATH_OR_URL",
        help="The DVC remote pushed releases must be in (default: the one in each release commit's .dvc/config).",
    ),
    remote_option: list[str] = typer.Option(
        [],
        "--remote-option",
        metavar="KEY=VALUE",
        help="A DVC setting of that remote, e.g. endpointurl=http://minio:9000, region=eu-west-1, profile=NAME; repeatable "
        "(replaces the ones set before). Not credentials: the hook takes those from the server's environment "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws).",
    ),
    dvc_remote: str = former("--dvc-remote", "--remote"),
    dvc_remote_option: list[str] = former("--dvc-remote-option", "--remote-option", many=True),
    json_out: bool = typer.Option(False, "--json", help="Print what changed as JSON."),
) -> None:
    """Install kgit's pre-receive hook in a bare repository (chains an existing one). It refuses moved or deleted release/stage tags, inconsistent releases, releases whose data is not in the DVC remote, and more: `--no-verify` cannot skip it."""
    from kgit import api

    remote = either(remote, dvc_remote, "--remote", "--dvc-remote")
    options = parse_key_values(
        either(remote_option, dvc_remote_option, "--remote-option", "--dvc-remote-option"), "--remote-option"
    )
    _changes(
        api.server_install(bare_repo, remote, options),
        json_out,
        "kgit's server hook is already installed; nothing changed",
    )


@server_app.command("uninstall")
def server_uninstall(
    bare_repo: str = typer.Argument(..., metavar="BARE_REPO", help="Path of the bare git repository."),
    json_out: bool = typer.Option(False, "--json", help="Print what changed as JSON."),
) -> None:
    """Remove kgit's pre-receive hook and put back the hook it chained."""
    from kgit import api

    _changes(api.server_uninstall(bare_repo), json_out, "no kgit server hook installed; nothing changed")
