"""`kgit compat`: does a release load with other Keras/TensorFlow versions?"""

from __future__ import annotations

import typer

from kgit.cli.app import Steps, app, err, print_json


@app.command()
def compat(
    ref: str = typer.Argument(
        ..., metavar="NAME@VERSION", help="A release: mnist@v2, mnist#prod, or mnist (its latest version)."
    ),
    with_: list[str] = typer.Option(
        [],
        "--with",
        metavar="SPEC",
        help="A package of the environment to check in, as a requirement specifier "
        "(keras==3.12.*, tensorflow==2.18.*, tf-keras==2.21.* for Keras 2 readers); "
        "repeat it: every --with forms one environment.",
    ),
    env: list[str] = typer.Option(
        [],
        "--env",
        metavar="NAME",
        help="A named environment of .kgit/compat.yaml (e.g. serving); repeatable, one environment each.",
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Only a static check, with no environment made: the layer classes, arguments and dtype "
        "policies of the model's configuration that the target Keras version lacks, read from its wheel.",
    ),
    no_record: bool = typer.Option(False, "--no-record", help="Do not record the results as compat tags."),
    unsafe: bool = typer.Option(
        False,
        "--unsafe",
        help="Let the model's own code (a Lambda layer) run while loading. Only for releases you trust.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check that a release loads in other environments: each is made with uv from the package index
    (cached by the versions it resolves to), the release's formats present here are loaded there and
    their outputs compared with the recorded reference within the release's tolerance. Prints one
    line per environment (loads / loads-but-differs / fails) and records each result as the tag
    NAME@vX.Y.Z#compat#KEY on the release commit. Exit 1 if any environment does not load it."""
    from kgit import api

    if quick:
        quick_report = api.compat_quick(ref, with_=with_, envs=env)
        if json_out:
            print_json(quick_report.to_dict())
        else:
            for q in quick_report.outcomes:
                typer.echo(q.line)
                for extra in q.findings[1:]:
                    err(f"  {extra.where}: {extra.what}")
        if not quick_report.ok:
            raise typer.Exit(1)
        return
    with Steps(enabled=not json_out) as steps:
        report = api.compat(ref, with_=with_, envs=env, record=not no_record, unsafe=unsafe, log=steps)
    if json_out:
        print_json(report.to_dict())
    else:
        for outcome in report.outcomes:
            typer.echo(outcome.line)
        for fmt, why in report.skipped.items():
            err(f"kgit: note: {fmt} not checked: {why}")
        for outcome in report.outcomes:
            for note in outcome.env.notes:
                err(f"kgit: note: {note}")
            tag = outcome.record.tag_name()
            if outcome.recorded == "recorded":
                err(f"kgit: recorded as tag {tag} (`git push` shares it)")
            elif outcome.earlier:
                err(f"kgit: warning: {tag} recorded {outcome.earlier} for this environment; kept as recorded")
    if not report.ok:
        raise typer.Exit(1)
