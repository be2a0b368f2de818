"""``kgit report``: write the static registry site."""

from __future__ import annotations

from pathlib import Path

import typer

from kgit.cli.app import app, err, print_json


@app.command()
def report(
    names: list[str] = typer.Argument(None, metavar="NAME", help="Only these models (default: every model)."),
    out: Path = typer.Option(
        Path("kgit-report"),
        "--out",
        "-o",
        metavar="DIR",
        help="Folder to write the site into: new, empty, or a report written before (replaced whole).",
    ),
    open_: bool = typer.Option(False, "--open", help="Open index.html in the web browser afterwards."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a static registry site (index.html, a page per model and per version) from git alone: works from file://, no server."""
    from kgit import api

    result = api.report(names or None, out=out)
    if json_out:
        print_json(result.to_dict())
    else:
        models = len(result.models)
        err(
            f"kgit: wrote {result.files} files for {models} model{'s' if models != 1 else ''} and {result.versions} "
            f"version{'s' if result.versions != 1 else ''} into {result.out} in {result.seconds:.1f} s"
        )
        err(f"open {result.index_uri}")
    if open_:
        import webbrowser

        if not webbrowser.open(result.index_uri):
            err(f"kgit: warning: no web browser found to open {result.index_uri}")
