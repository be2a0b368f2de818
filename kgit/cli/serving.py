"""TensorFlow Serving: `kgit serve-layout`."""

from __future__ import annotations

from pathlib import Path

import typer

from kgit.cli.app import app, err, print_json, write_columns


@app.command("serve-layout")
def serve_layout(
    refs: list[str] = typer.Argument(
        ...,
        metavar="NAME[#STAGE|@VERSION]...",
        help="Releases to serve: NAME (every version of it in a stage), NAME#STAGE, NAME@VERSION or NAME@latest.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        metavar="DIR",
        help="The folder TF Serving reads (created if missing; kgit manages what it lays out there).",
    ),
    base_path: str = typer.Option(
        None,
        "--base-path",
        metavar="PATH",
        help="DIR as the server sees it, for models.config (e.g. /models in a container; default: DIR's absolute path).",
    ),
    copy: bool = typer.Option(
        False, "--copy", help="Copy the files instead of hard-linking them to the work tree's release folders."
    ),
    tf_serving_version: str = typer.Option(
        None,
        "--tf-serving-version",
        metavar="VERSION",
        help="Refuse, naming them, releases whose graphs use ops that this TensorFlow Serving "
        "version (e.g. 2.18) lacks; its op set is computed once in an isolated environment and cached.",
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the layout (models, versions, labels, what changed) as JSON."
    ),
) -> None:
    """Lay out releases for TensorFlow Serving: DIR/NAME/<integer version>/ and DIR/models.config with
    the stages as version labels. Rerun it after a release or promotion: it adds new versions and
    removes unselected ones atomically (nothing changes if nothing is new)."""
    from kgit import api

    result = api.serve_layout(refs, out, base_path=base_path, copy=copy, tf_serving_version=tf_serving_version)
    if json_out:
        print_json(result.to_dict())
        return
    rows = [
        [v.model, v.version, str(v.serving_version), ",".join(v.labels) or "-", v.action, v.how or "-"]
        for v in result.versions
    ]
    write_columns(["model", "version", "serving version", "labels", "action", "files"], rows)
    for note in result.notes:
        err(f"kgit: note: {note}")
    state = "updated" if result.changed else "already in sync, nothing changed"
    err(f"kgit: {result.out}: {state}; run tensorflow_model_server --model_config_file={result.config}")
