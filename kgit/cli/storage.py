"""`kgit gc`: reclaim the storage of releases the retention policy does not keep."""

from __future__ import annotations

import typer

from kgit.cli.app import Steps, app, err, out, print_json, write_table


@app.command()
def gc(
    keep_last: str = typer.Option(
        None,
        "--keep-last",
        metavar="N|all",
        help="Keep the newest N versions of each model (all: every version). Default: .kgit/retention.yaml, else 5.",
    ),
    keep_stages: bool = typer.Option(
        None,
        "--keep-stages/--no-keep-stages",
        help="Keep every version that ever held a stage (default: yes).",
    ),
    keep_signed: bool = typer.Option(
        None, "--keep-signed/--no-keep-signed", help="Keep every signed version (default: yes)."
    ),
    keep_ref: list[str] = typer.Option(
        [],
        "--keep-ref",
        metavar="REF",
        help="Keep every release whose commit is reachable from REF (a branch, tag or commit); repeatable.",
    ),
    remote: str = typer.Option(
        None,
        "--remote",
        "-r",
        metavar="NAME",
        help="Also collect this DVC remote ('' or default: the default remote). Without it, only the local "
        "DVC cache, from which kgit get can fetch again.",
    ),
    delete: bool = typer.Option(
        False, "--delete", help="Delete. Without it, gc only says what it would delete and the bytes it would reclaim."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the plan (and what was deleted) as JSON."),
) -> None:
    """Reclaim the storage of the releases the retention policy does not keep: delete from the local
    DVC cache (and with --remote, from the DVC remote) the objects that only those releases have.

    Never deletes an object a kept release needs, nor any other DVC output of any commit of any branch
    or tag (datasets, pipeline outputs); a kept release whose file list cannot be read stops it
    before anything is deleted. A dry run unless --delete is given. The policy is read from
    .kgit/retention.yaml (keep_last, keep_stages, keep_signed, keep_refs); each flag given replaces
    its key. Releases collected from the remote are recorded there, so kgit get and kgit check say
    "collected", not "missing"."""
    from kgit import api

    last: int | str | None = keep_last
    if isinstance(keep_last, str) and keep_last.strip().isdigit():
        last = int(keep_last)
    with Steps(not json_out) as say:
        result = api.gc(
            keep_last=last,
            keep_stages=keep_stages,
            keep_signed=keep_signed,
            keep_refs=keep_ref,
            remote=("" if remote == "default" else remote),
            delete=delete,
            progress=say,
        )
    if json_out:
        print_json(result.to_dict())
        return
    err(f"policy: {result.policy.describe()}")
    rows = [[tag, "kept", "; ".join(why)] for tag, why in result.kept.items()]
    rows += [[tag, "collected" if not result.dry_run else "would be collected", ""] for tag in result.dropped]
    if rows:
        write_table(["release", "state", "why kept"], rows)
    for store in result.stores:
        verb = "reclaimed" if not result.dry_run else "would reclaim"
        out(f"{store.where}: {verb} {api.human_size(store.bytes)} ({len(store.objects)} object(s))")
    if result.dry_run and any(s.objects for s in result.stores):
        err("a dry run: nothing was deleted; run again with --delete to delete")
