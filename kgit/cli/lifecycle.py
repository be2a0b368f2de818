"""Commands that move releases through their life: promote, demote, deprecate, history; signing keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kgit.cli.app import Steps, app, err, print_json


# -- stages ----------------------------------------------------------------------------------------
@app.command()
def promote(
    ref: str = typer.Argument(..., metavar="NAME@VERSION", help="The release to promote, e.g. mnist@v3."),
    stage: str = typer.Argument(..., help="The stage, e.g. prod or staging (lowercase; .gto may list the allowed ones)."),
    note: str = typer.Option(None, "--note", help="Why: recorded in the tag message."),
    json_out: bool = typer.Option(False, "--json", help="Print the event as JSON."),
) -> None:
    """Put a released version in a stage (GTO stage tag NAME#STAGE#N). Validates it first if needed."""
    from kgit import api

    with Steps(enabled=not json_out) as steps:
        change = api.promote(ref, stage, note=note, progress=steps)
    _report_change(change, json_out)


@app.command()
def demote(
    name: str = typer.Argument(..., help="The model."),
    stage: str = typer.Argument(..., help="The stage to clear, e.g. prod."),
    note: str = typer.Option(None, "--note", help="Why: recorded in the tag message."),
    json_out: bool = typer.Option(False, "--json", help="Print the event as JSON."),
) -> None:
    """Take a stage away from the version that holds it (GTO tag NAME#STAGE!#N)."""
    from kgit import api

    _report_change(api.demote(name, stage, note=note), json_out)


@app.command()
def deprecate(
    ref: str = typer.Argument(..., metavar="NAME@VERSION", help="The release to deprecate, e.g. mnist@v2."),
    note: str = typer.Option(None, "--note", help="Why: recorded in the tag message."),
    json_out: bool = typer.Option(False, "--json", help="Print the event as JSON."),
) -> None:
    """Deprecate a version: its data stays, but it can no longer be promoted or resolved as latest."""
    from kgit import api

    _report_change(api.deprecate(ref, note=note), json_out)


def _report_change(change: Any, json_out: bool) -> None:
    if json_out:
        print_json(change.to_dict())
        return
    where = f" {'to' if change.event == 'promoted' else 'from'} {change.stage}" if change.stage else ""
    err(f"{change.event} {change.name} {change.version}{where} (tag {change.tag}); `git push` shares it")


@app.command()
def history(
    name: str = typer.Argument(..., help="The model."),
    json_out: bool = typer.Option(False, "--json", help="Print the events as JSON."),
) -> None:
    """Every event of a model (released, promoted, demoted, deprecated): who, when, commit; from tags."""
    from kgit import api

    events = api.history(name)
    if json_out:
        print_json([e.to_dict() for e in events])
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for col in ("when", "event", "version", "stage", "who", "commit"):
        t.add_column(col)
    for e in events:
        t.add_row(e.when.replace("T", " ")[:19], e.event, e.version or "-", e.stage or "-", e.who.split(" <")[0], e.commit[:8])
    Console(soft_wrap=True).print(t)


# -- signing -----------------------------------------------------------------------------------
keys_app = typer.Typer(help="Signing keys and the repository's signing policy.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    private_key: Path = typer.Option(None, "--private-key", metavar="PEM", help="Register this existing EC private key instead of creating one."),
    name: str = typer.Option(None, "--name", help="File name for the public key under .kgit/keys/ (default: its fingerprint)."),
    require: bool = typer.Option(False, "--require", help="Make signed releases required (default policy: optional)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create (or register) your signing key: private key outside the repository, public key committed."""
    from kgit import signing
    from kgit.git_ops import Repo

    result = signing.init_keys(Repo("."), private_key=private_key, name=name, require=require)
    if json_out:
        print_json(result)
        return
    for c in result["changes"] or ["your key is already set up; nothing changed"]:
        err(f"kgit: {c}")
    err(f"kgit: key fingerprint {result['fingerprint'][:16]}, policy {result['policy']}")


@keys_app.command("trust")
def keys_trust(
    public_key: Path = typer.Argument(..., metavar="PUBLIC.pem", help="A teammate's (or CI's) EC public key."),
    name: str = typer.Option(None, "--name", help="File name under .kgit/keys/ (default: its fingerprint)."),
) -> None:
    """Trust another public key (committed under .kgit/keys/)."""
    from kgit import signing
    from kgit.git_ops import Repo

    result = signing.trust(Repo("."), public_key, name)
    state = "now trusted" if result["added"] else "already trusted"
    err(f"kgit: key {result['fingerprint'][:16]} {state} ({result['public_key']})")


@keys_app.command("policy")
def keys_policy(
    value: str = typer.Argument(None, metavar="[off|optional|required]", help="The new policy; omit to print the current one."),
) -> None:
    """Show or set the repository's signing policy (committed in .kgit/signing.yaml)."""
    from kgit import signing
    from kgit.git_ops import Repo

    repo = Repo(".")
    if value is None:
        typer.echo(signing.policy(repo.root))
        return
    changed = signing.set_policy(repo, value)
    err(f"kgit: signing policy {'set to' if changed else 'already'} {value}")


@keys_app.command("list")
def keys_list(json_out: bool = typer.Option(False, "--json", help="Print the keys as JSON.")) -> None:
    """List the trusted public keys, the policy, and your signing key."""
    from kgit import signing
    from kgit.git_ops import Repo

    repo = Repo(".")
    keys = [{"file": str(k.path.relative_to(repo.root)), "fingerprint": k.fingerprint} for k in signing.trusted_keys(repo.root)]
    mine = signing.private_key_path(repo)
    data = {"policy": signing.policy(repo.root), "trusted": keys, "signing_key": str(mine) if mine else None}
    if json_out:
        print_json(data)
        return
    typer.echo(f"policy: {data['policy']}\nsigning key: {data['signing_key'] or '-'}")
    for k in keys:
        typer.echo(f"trusted: {k['fingerprint'][:16]}  {k['file']}")


