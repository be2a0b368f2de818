"""Commands that move releases through their life: promote, rollback, demote, deprecate, history; signing keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kgit.cli.app import Steps, app, err, out, print_json, write_table


# -- stages ----------------------------------------------------------------------------------------
@app.command()
def promote(
    ref: str = typer.Argument(..., metavar="NAME@VERSION", help="The release to promote, e.g. mnist@v3."),
    stage: str = typer.Argument(
        ..., help="The stage, e.g. prod or staging (lowercase; .gto may list the allowed ones)."
    ),
    note: str = typer.Option(None, "--note", help="Why: recorded in the tag message."),
    require: list[str] = typer.Option(
        [],
        "--require",
        metavar="RULE",
        help="A rule the version's metrics must pass, KEY OP NUMBER with OP one of >= <= > < == "
        '(e.g. "val.accuracy>=0.9"); repeatable.',
    ),
    require_better: list[str] = typer.Option(
        [],
        "--require-better",
        metavar="KEY",
        help="The metric must be strictly better than STAGE's last holder (the version in it now, "
        "or the last one there if demoted since; min/max from .kgit/gates.yaml, otherwise "
        "keys ending in loss, error, mae, mse or rmse are lower-is-better, the rest higher); repeatable.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the event as JSON."),
) -> None:
    """Put a released version in a stage (GTO stage tag NAME#STAGE#N). Validates it first if needed.

    The version's metrics must also pass the --require/--require-better rules and the stage's rules
    committed in .kgit/gates.yaml (thresholds, and better than the stage's holder: strictly, by a
    fraction of its value with min_relative_change, or by an amount with min_absolute_change);
    there is no override flag: change the committed rule instead."""
    from kgit import api

    with Steps(enabled=not json_out) as steps:
        change = api.promote(ref, stage, note=note, require=require, require_better=require_better, progress=steps)
    _report_change(change, json_out)


@app.command()
def rollback(
    name: str = typer.Argument(..., help="The model."),
    stage: str = typer.Argument(..., help="The stage to roll back, e.g. prod."),
    to: str = typer.Option(
        None,
        "--to",
        metavar="VERSION",
        help="The version to go back to, one that held STAGE before (e.g. v2); default: the one "
        "that held it before the current (or, if demoted, last) holder.",
    ),
    note: str = typer.Option(None, "--note", help="Why: recorded in the tag message."),
    json_out: bool = typer.Option(False, "--json", help="Print the event as JSON."),
) -> None:
    """Put back in a stage a version that held it before (a stage tag NAME#STAGE#N whose message says rollback).

    Validates the version first if needed. The stage's rules in .kgit/gates.yaml apply as to promote,
    except require_better where the stage's entry sets allow_rollback: true."""
    from kgit import api

    with Steps(enabled=not json_out) as steps:
        change = api.rollback(name, stage, to=to, note=note, progress=steps)
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
    gates = f"; passed {', '.join(change.gates)}" if getattr(change, "gates", None) else ""
    if change.event == "rolled back":
        what = f"rolled back {change.stage} of {change.name} to {change.version}" + (
            f" from {change.replaced}" if change.replaced else ""
        )
    else:
        where = f" {'to' if change.event == 'promoted' else 'from'} {change.stage}" if change.stage else ""
        what = f"{change.event} {change.name} {change.version}{where}"
    err(f"{what} (tag {change.tag}){gates}; `git push` shares it")


@app.command()
def history(
    ref: str = typer.Argument(
        ..., metavar="NAME[#STAGE]", help="The model (mnist), or one of its stages (mnist#prod)."
    ),
    at: str = typer.Option(
        None,
        "--at",
        metavar="WHEN",
        help="Say which version held the stage (each stage, for a bare NAME) at this moment, who "
        "put it there, when and with which note: 'YYYY-MM-DD HH:MM' (local time) or ISO 8601 "
        "with a zone (2026-11-01T12:00:00+01:00). From the stage tags' dates alone.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the events (with --at: the stages' holders) as JSON."),
) -> None:
    """Every event of a model (released, promoted, rolled back, demoted, deprecated): who, when, commit, the --note given; from tags.

    With NAME#STAGE, only that stage's events; with --at, which version held the stage at that moment."""
    from kgit import api

    name, _, stage = ref.partition("#")
    if at is not None:
        holdings = api.holders_at(name, at, stage=stage if "#" in ref else None)
        if json_out:
            print_json(holdings[0].to_dict() if "#" in ref else [h.to_dict() for h in holdings])
            return
        if not holdings:
            err(f"{name} has never had a version in a stage: there is nothing to look up at {at}")
        for h in holdings:
            out(_holding_text(h))
        return
    events = api.history(name, stage=stage if "#" in ref else None)
    if json_out:
        print_json([e.to_dict() for e in events])
        return
    rows = [
        [
            e.when.replace("T", " ")[:19],
            e.event,
            e.version or "-",
            e.stage or "-",
            e.who.split(" <")[0],
            e.commit[:8],
            e.note or "",
        ]
        for e in events
    ]
    write_table(["when", "event", "version", "stage", "who", "commit", "note"], rows)


def _when(iso: str) -> str:
    """An ISO 8601 moment as people read it: ``2026-11-01 12:00:00 +01:00``."""
    return iso[:19].replace("T", " ") + (f" {iso[19:]}" if iso[19:] else "")


def _one_line(note: str | None) -> str:
    return " ".join(note.split()) if note else ""


def _holding_text(h: Any) -> str:
    """One line: what a stage held at a moment and who put it there, or why it held nothing."""
    at = _when(h.at)
    e = h.event
    if h.held:
        how = "rolled back to" if e.event == "rolled back" else "promoted"
        what = f"{h.name}@{h.version}" if h.version else f"commit {e.commit[:8]} (not a valid release)"
        note = f"; note: {_one_line(e.note)}" if e.note else ""
        return f"{h.stage}: {what} at {at}, {how} {_when(e.when)} by {e.who.split(' <')[0]} (tag {e.tag}){note}"
    if e is not None:  # demoted by then
        note = f"; note: {_one_line(e.note)}" if e.note else ""
        return f"{h.stage}: no version at {at}: demoted {_when(e.when)} by {e.who.split(' <')[0]} (tag {e.tag}){note}"
    first = h.first_promotion
    if first is None:
        return f"{h.stage}: no version of {h.name} has ever been in {h.stage}"
    return (
        f"{h.stage}: no version at {at}: the first promotion to {h.stage} was {h.name}@{first.version or '?'} "
        f"at {_when(first.when)} by {first.who.split(' <')[0]}"
    )


# -- signing -----------------------------------------------------------------------------------
keys_app = typer.Typer(help="Signing keys and the repository's signing policy.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    private_key: Path = typer.Option(
        None, "--private-key", metavar="PEM", help="Register this existing EC private key instead of creating one."
    ),
    name: str = typer.Option(
        None, "--name", help="File name for the public key under .kgit/keys/ (default: its fingerprint)."
    ),
    require: bool = typer.Option(False, "--require", help="Make signed releases required (default policy: optional)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create (or register) your signing key: private key outside the repository, public key committed."""
    from kgit import api

    result = api.keys_init(private_key=private_key, name=name, require=require)
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
    from kgit import api

    result = api.keys_trust(public_key, name=name)
    if json_out:
        print_json(result)
        return
    fp = result["fingerprint"][:16]
    if result["endorsed_by"]:
        err(
            f"kgit: key {fp} endorsed by your key {result['endorsed_by'][:16]} ({result['public_key']}): "
            "other clones trust it once they have the commit"
        )
    elif result["added"] or result["accepted"]:
        err(f"kgit: key {fp} added ({result['public_key']})")
    else:
        err(f"kgit: key {fp} already {result['status']} ({result['public_key']}); nothing changed")
    if result["warning"]:
        err(f"kgit: warning: {result['warning']}")


@keys_app.command("accept")
def keys_accept(
    fingerprint: str = typer.Argument(
        None, metavar="[FINGERPRINT]", help="A key under .kgit/keys/ (its first 8+ hex digits)."
    ),
    policy: str = typer.Option(
        None,
        "--policy",
        metavar="off|optional|required",
        help="Accept this signing policy in this clone (e.g. a weakening no trusted key endorsed).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Trust a key of the repository, or a signing policy, in this clone only (.git/kgit/trust.json, never committed)."""
    from kgit import api

    result = api.keys_accept(fingerprint, policy=policy)
    if json_out:
        print_json(result)
        return
    if fingerprint is not None:
        state = "accepted in this clone" if result["accepted"] else f"already {result['status']}"
        err(f"kgit: key {str(result['fingerprint'])[:16]} ({result['file']}) {state}")
    if policy is not None:
        err(f"kgit: signing policy {policy} accepted in this clone; in force: {result['policy']}")


@keys_app.command("policy")
def keys_policy(
    value: str = typer.Argument(
        None, metavar="[off|optional|required]", help="The new policy; omit to print the one in force."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Show or set the signing policy (committed in .kgit/signing.yaml; a weakening is signed with your
    trusted key, else accepted in this clone only)."""
    from kgit import api

    result = api.keys_policy(value)
    if json_out:
        print_json(result)
        return
    if value is None:
        out(result["policy"])
        if result["note"]:
            err(f"kgit: {result['note']}")
        return
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
    from kgit import api

    data = api.keys_list()
    if json_out:
        print_json(data)
        return
    out(
        f"policy: {data['policy']} (in {data['policy_file']}: {data['tree_policy']}; pinned: {data['pinned_policy'] or '-'})"
    )
    if data["policy_note"]:
        out(f"  {data['policy_note']}")
    out(f"signing key: {data['signing_key'] or '-'}")
    for e in data["keys"]:
        why = {
            "endorsed": f"endorsed by {str(e['endorsed_by'])[:16]}",
            "untrusted": f"untrusted (added by commit {str(e['added_by'])[:8]})"
            if e["added_by"]
            else "untrusted (not committed)",
            "invalid": "not a PEM public key",
        }.get(e["status"], e["status"])
        out(f"{(e['fingerprint'] or '-')[:16]:16}  {e['file']}  {why}")
