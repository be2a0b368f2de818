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
    require: list[str] = typer.Option([], "--require", metavar="RULE",
                                      help="A rule the version's metrics must pass, KEY OP NUMBER with OP one of >= <= > < == "
                                      "(e.g. \"val.accuracy>=0.9\"); repeatable."),
    require_better: list[str] = typer.Option([], "--require-better", metavar="KEY",
                                             help="The metric must be strictly better than the version in STAGE now "
                                             "(min/max from .kgit/gates.yaml, default max: higher is better); repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Print the event as JSON."),
) -> None:
    """Put a released version in a stage (GTO stage tag NAME#STAGE#N). Validates it first if needed.

    The version's metrics must also pass the --require/--require-better rules and the stage's rules
    committed in .kgit/gates.yaml; there is no override flag: change the committed rule instead."""
    from kgit import api

    with Steps(enabled=not json_out) as steps:
        change = api.promote(ref, stage, note=note, require=require, require_better=require_better, progress=steps)
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
    gates = f"; passed {', '.join(change.gates)}" if getattr(change, "gates", None) else ""
    err(f"{change.event} {change.name} {change.version}{where} (tag {change.tag}){gates}; `git push` shares it")


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
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Add a public key (committed under .kgit/keys/), endorsed with your signing key when it is trusted.

    Without a trusted signing key the key is accepted in this clone only: other clones trust it once a
    holder of a trusted key runs `kgit keys trust` on it, or they run `kgit keys accept FP`."""
    from kgit import signing
    from kgit.git_ops import Repo

    result = signing.trust(Repo("."), public_key, name)
    if json_out:
        print_json(result)
        return
    fp = result["fingerprint"][:16]
    if result["endorsed_by"]:
        err(f"kgit: key {fp} endorsed by your key {result['endorsed_by'][:16]} ({result['public_key']}): "
            "other clones trust it once they have the commit")
    elif result["added"] or result["accepted"]:
        err(f"kgit: key {fp} added ({result['public_key']})")
    else:
        err(f"kgit: key {fp} already {result['status']} ({result['public_key']}); nothing changed")
    if result["warning"]:
        err(f"kgit: warning: {result['warning']}")


@keys_app.command("accept")
def keys_accept(
    fingerprint: str = typer.Argument(None, metavar="[FINGERPRINT]", help="A key under .kgit/keys/ (its first 8+ hex digits)."),
    policy: str = typer.Option(None, "--policy", metavar="off|optional|required",
                               help="Accept this signing policy in this clone (e.g. a weakening no trusted key endorsed)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Trust a key of the repository, or a signing policy, in this clone only (.git/kgit/trust.json, never committed)."""
    from kgit import trust
    from kgit.errors import KgitError
    from kgit.git_ops import Repo

    if fingerprint is None and policy is None:
        raise KgitError("give a key FINGERPRINT to accept, or --policy off|optional|required (see `kgit keys list`)")
    repo = Repo(".")
    if policy is not None and policy not in trust.POLICIES:
        raise KgitError(f"unknown signing policy {policy!r}: use one of {', '.join(trust.POLICIES)}")
    result: dict[str, Any] = {}
    if fingerprint is not None:
        key, changed = trust.accept_key(repo, fingerprint)
        now = trust.effective(repo).key(str(key.fingerprint))
        result.update({"fingerprint": key.fingerprint, "file": key.path, "accepted": changed,
                       "status": now.status if now else key.status})
    if policy is not None:
        result["policy_accepted"] = trust.accept_policy(repo, policy)
    t = trust.effective(repo)
    result["policy"] = t.policy
    if json_out:
        print_json(result)
        return
    if fingerprint is not None:
        state = "accepted in this clone" if result["accepted"] else f"already {result['status']}"
        err(f"kgit: key {str(result['fingerprint'])[:16]} ({result['file']}) {state}")
    if policy is not None:
        err(f"kgit: signing policy {policy} accepted in this clone; in force: {t.policy}")


@keys_app.command("policy")
def keys_policy(
    value: str = typer.Argument(None, metavar="[off|optional|required]", help="The new policy; omit to print the one in force."),
) -> None:
    """Show or set the signing policy (committed in .kgit/signing.yaml; a weakening is signed with your
    trusted key, else accepted in this clone only)."""
    from kgit import signing, trust
    from kgit.git_ops import Repo

    repo = Repo(".")
    if value is None:
        t = trust.effective(repo)
        typer.echo(t.policy)
        if t.note:
            err(f"kgit: {t.note}")
        return
    result = signing.set_policy(repo, value)
    if not result["changed"]:
        err(f"kgit: signing policy already {value}")
        return
    signed = f", signed by your key {result['endorsed_by'][:16]}" if result["endorsed_by"] else ""
    err(f"kgit: signing policy set to {value}{signed}")
    if result["warning"]:
        err(f"kgit: warning: {result['warning']}")


@keys_app.command("list")
def keys_list(json_out: bool = typer.Option(False, "--json", help="Print the keys as JSON.")) -> None:
    """List the repository's public keys with their trust in this clone, the policy, and your signing key."""
    from kgit import signing, trust
    from kgit.git_ops import Repo

    repo = Repo(".")
    t = trust.effective(repo)
    keys = []
    for k in t.keys:
        entry = k.to_dict()
        entry["added_by"] = t.added_by(k.path) if k.status in ("untrusted", "invalid") else None
        keys.append(entry)
    mine = signing.private_key_path(repo)
    data = {"policy": t.policy, "tree_policy": t.tree_policy, "pinned_policy": t.pinned_policy,
            "policy_endorsed_by": t.policy_endorsed_by, "policy_note": t.note, "root": t.root, "keys": keys,
            "trusted": [{"file": k["file"], "fingerprint": k["fingerprint"]} for k in keys if k["status"] in trust.TRUSTED],
            "signing_key": str(mine) if mine else None}
    if json_out:
        print_json(data)
        return
    typer.echo(f"policy: {t.policy} (in {trust.POLICY_FILE}: {t.tree_policy}; pinned: {t.pinned_policy or '-'})")
    if t.note:
        typer.echo(f"  {t.note}")
    typer.echo(f"signing key: {data['signing_key'] or '-'}")
    for e in keys:
        why = {"endorsed": f"endorsed by {str(e['endorsed_by'])[:16]}",
               "untrusted": f"untrusted (added by commit {str(e['added_by'])[:8]})" if e["added_by"] else "untrusted (not committed)",
               "invalid": "not a PEM public key"}.get(e["status"], e["status"])
        typer.echo(f"{(e['fingerprint'] or '-')[:16]:16}  {e['file']}  {why}")
