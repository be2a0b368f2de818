"""Commands that make and read releases: init, release, list, show, get, diff, demo."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import typer

from kgit.cli.app import (
    Steps,
    app,
    either,
    err,
    former,
    parse_key_values,
    print_json,
    write_columns,
    write_pairs,
    write_table,
)
from kgit.core.errors import KgitError


# -- init ----------------------------------------------------------------------------------------
@app.command()
def init(
    remote: str = typer.Option(
        None,
        "--remote",
        "-r",
        metavar="PATH_OR_URL",
        help="DVC remote for release data: a folder outside the repository or any DVC remote URL (s3://, ssh://, ...). "
        "Default: keep the current default remote, else a folder beside the repository.",
    ),
    remote_option: list[str] = typer.Option(
        [],
        "--remote-option",
        metavar="KEY=VALUE",
        help="A DVC setting of the remote (`dvc remote modify`), e.g. endpointurl=http://minio:9000, region=eu-west-1, "
        "profile=NAME; repeatable. Credentials and personal settings (access_key_id, secret_access_key, profile, "
        "keyfile, ...) go to .dvc/config.local, never committed; the others to .dvc/config.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Set up this git repository for kgit: DVC, the validation stage, a default remote, git hooks. Idempotent."""
    from kgit import api

    result = api.init(".", remote=remote, remote_options=parse_key_values(remote_option, "--remote-option"))
    if json_out:
        print_json(
            {"root": result.root, "remote": result.remote_url, "changes": result.changes, "commit": result.commit}
        )
        return
    if not result.changes:
        err(f"kgit: {result.root} is already set up (remote: {result.remote_url}); nothing changed")
        return
    for change in result.changes:
        err(f"kgit: {change}")
    if result.commit:
        err(f"kgit: committed the set-up as {result.commit[:8]}")


# -- release -------------------------------------------------------------------------------------
def _parse_params(params: list[str], params_file: Path | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if params_file is not None:
        from kgit import api

        result.update(api.read_params_file(params_file))
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KgitError(f"invalid --param {item!r}: use KEY=VALUE")
        try:
            result[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            result[key.strip()] = value
    return result


@app.command()
def release(
    name: str = typer.Argument(..., help="Model name: lowercase letters, digits, '-' and '_' (e.g. mnist-cnn)."),
    source: str = typer.Option(
        ...,
        "--from",
        metavar="SOURCE",
        help="The model: a .keras or .h5 file, a SavedModel folder (a kgit release, or tf_keras' model.save(dir)), "
        "or MODULE:FUNCTION returning a keras.Model.",
    ),
    formats: list[str] = typer.Option(
        ["savedmodel"],
        "--format",
        "-f",
        metavar="FORMAT",
        help="savedmodel, keras, h5 or weights; repeat for several formats of one version.",
    ),
    version: str = typer.Option(
        None,
        "--version",
        "-v",
        help="Explicit version: vN (v3) or semantic vMAJOR.MINOR.PATCH (v1.2.0). Default: next vN.",
    ),
    bump: str = typer.Option(
        None, "--bump", metavar="PART", help="Next semantic version after the highest released: major, minor or patch."
    ),
    dataset_id: str = typer.Option(
        None, "--dataset-id", metavar="ID", help="Identifier of the training data, recorded in metadata."
    ),
    dataset: Path = typer.Option(
        None, "--dataset", metavar="PATH", help="A DVC-tracked path in this repository: its DVC hash is recorded."
    ),
    params: list[str] = typer.Option(
        [],
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A hyperparameter (VALUE parsed as JSON when it can be); repeatable.",
    ),
    params_file: Path = typer.Option(
        None, "--params", metavar="FILE", help="Hyperparameters from a YAML or JSON file (e.g. DVC's params.yaml)."
    ),
    note: str = typer.Option(None, "--note", help="Why: free text recorded in metadata and the commit message."),
    notes: str = former("--notes", "--note"),
    custom_object: list[str] = typer.Option(
        [],
        "--custom-object",
        metavar="MODULE:ATTR",
        help="A custom class or function the model needs to load; recorded; repeatable.",
    ),
    custom_objects: list[str] = former("--custom-objects", "--custom-object", many=True),
    builder: str = typer.Option(
        None,
        "--builder",
        metavar="MODULE:FUNCTION",
        help="Function that rebuilds the architecture (needed for --format weights).",
    ),
    reference_input: Path = typer.Option(
        None,
        "--reference-input",
        metavar="FILE.npz",
        help="Reference inputs (arrays named like the model's inputs). Default: generated from the input signature.",
    ),
    atol: float = typer.Option(
        1e-6, "--atol", help="Largest absolute difference allowed between recorded and reloaded outputs."
    ),
    allow_dirty: bool = typer.Option(
        False, "--allow-dirty", help="Release even with uncommitted changes to tracked files (recorded as dirty: true)."
    ),
    unsafe: bool = typer.Option(
        False, "--unsafe", help="Allow models with Python lambdas (Keras safe mode off). Only for code you trust."
    ),
    inference_only: bool = typer.Option(
        False,
        "--inference-only",
        help="Release without the training state (optimizer and its step): loads uncompiled; "
        "recorded as resumable: false. Default: the state is released and checked, or the release is refused.",
    ),
    pack: bool = typer.Option(
        True,
        "--pack/--no-pack",
        help="Store each large tensor of the weight files as its own DVC object, so that a version stores "
        "only the tensors that changed (the files stay in the folder, assembled, for Keras to load). "
        "--no-pack stores the weight files whole.",
    ),
    metrics_file: Path = typer.Option(
        None,
        "--metrics",
        metavar="FILE",
        help="Metrics from a JSON or YAML file (nested allowed, e.g. dvclive's metrics.json; "
        "nested keys are recorded with dots: val.accuracy).",
    ),
    metric: list[str] = typer.Option(
        [],
        "--metric",
        "-m",
        metavar="KEY=VALUE",
        help="A metric (a finite number); repeatable; wins over the same key in --metrics.",
    ),
    evaluate: str = typer.Option(
        None,
        "--evaluate",
        metavar="MODULE:FUNCTION",
        help="Function called with the model reloaded from the artifact in the fresh validation "
        "process; the metrics it returns are recorded as measured on the artifact.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the release record as JSON on stdout."),
) -> None:
    """Release a trained model as a new immutable version: save, validate, track with DVC, commit, tag.

    The release records where the model came from (its source: HEAD, the script or module it came
    from, and the repository's files it ran with that are modified or untracked) and a digest of its
    weights and optimizer state. It warns, without refusing, when that code is not all committed and
    when the weights equal an earlier version's."""
    from kgit import api

    hyper = _parse_params(params, params_file)
    given = api.read_metrics(metrics_file, metric)
    if reference_input is not None and not reference_input.is_file():
        raise KgitError(f"--reference-input {reference_input} does not exist")
    with Steps(enabled=True) as steps:
        record = api.release(
            source,
            name,
            formats=formats,
            version=version,
            bump=bump,
            dataset_id=dataset_id,
            dataset=dataset,
            hyperparams=hyper,
            notes=either(note, notes, "--note", "--notes"),
            custom_objects=either(custom_object, custom_objects, "--custom-object", "--custom-objects"),
            builder=builder,
            reference_inputs=reference_input,
            atol=atol,
            allow_dirty=allow_dirty,
            unsafe=unsafe,
            inference_only=inference_only,
            pack=pack,
            metrics=given,
            evaluate=evaluate,
            progress=steps,
        )
    if json_out:
        print_json(record.to_dict())
        return
    worst = max((v.get("max_abs_diff") or 0.0 for v in record.validation), default=0.0)
    err(
        f"released {record.name} {record.version} ({', '.join(record.formats)}) "
        f"as tag {record.tag} on commit {record.commit[:8]}; round trip max abs diff {worst:.2g}",
        style="green",
    )
    for fmt, info in record.formats.items():
        if info.get("new_bytes") is not None and info.get("size"):
            err(f"{fmt}: {_stored_text(info)}")
    if record.metadata.get("metrics"):
        measured = set(record.metadata.get("measured") or [])
        err(
            "metrics: "
            + ", ".join(
                f"{k} {v:g}" + (" (measured)" if k in measured else "") for k, v in record.metadata["metrics"].items()
            )
        )
    if not record.metadata.get("resumable", True):
        err("the release holds no training state (resumable: false): it loads for inference; training restarts")
    for warning in record.warnings:
        err(f"kgit: warning: {warning}")
    err("next: `git push` publishes the commit, the tag and (with kgit's hook) the data")


# -- list / show ---------------------------------------------------------------------------------
@app.command("list")
def list_(
    name: str = typer.Argument(None, help="Only this model."),
    metric: list[str] = typer.Option(
        [], "--metric", "-m", metavar="KEY", help="Add a column with this metric (e.g. val.accuracy); repeatable."
    ),
    sort: str = typer.Option(
        None,
        "--sort",
        metavar="KEY",
        help="Sort by this metric, best first (min/max from .kgit/gates.yaml; otherwise keys ending in "
        "loss, error, mae, mse or rmse are lower-is-better, the rest higher); releases without it last.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the releases as JSON (with all their metrics)."),
) -> None:
    """List releases (from git tags alone: fast, works before any data is fetched)."""
    from kgit import api

    rels = api.list_releases(name, sort=sort, columns=metric)
    gc.freeze()  # they live until the process ends: the collector need not walk them again (-10% at 15,000)
    collected = api.collected_releases()
    if json_out:
        print_json([{**r.to_dict(), "collected": collected.get(r.tag)} for r in rels])
        return
    if not rels:  # (a model named that has none is refused)
        err("no releases yet: make one with `kgit release NAME --from MODEL`")
        return
    rows = [
        [
            r.name,
            r.version,
            (",".join(r.stages) + (" (deprecated)" if r.deprecated else "")).strip() or "-",
            ",".join(r.formats),
            (r.created_at or "").replace("T", " ").rstrip("Z"),
            r.dataset_id or "-",
            (r.source_commit or "-")[:8],
            *(_metric_cell(r.metrics.get(k)) for k in metric),
        ]
        for r in rels
    ]
    header = ["name", "version", "stages", "formats", "created", "dataset", "commit", *metric]
    if any(r.compat for r in rels):  # where each version was checked to load (kgit compat)
        header.append("compat")
        for row, r in zip(rows, rels):
            row.append(_compat_cell(r))
    invalid = [r for r in rels if not r.valid]
    gone = [r for r in rels if r.valid and r.tag in collected]
    if invalid or gone:  # tags that are not valid releases are listed, marked, and never used
        header.append("status")
        for row, r in zip(rows, rels):
            row.append("collected" if r.valid and r.tag in collected else r.status)
    # Plain aligned columns: a rich Table measures every cell and costs ~0.6 s at 1,500 rows.
    write_columns(header, rows)
    if invalid:
        err(
            f"kgit: warning: {len(invalid)} tag(s) are not valid releases and will not be used "
            f"(get, load, validate and promote refuse them): {', '.join(r.tag for r in invalid[:3])}"
        )


def _compat_cell(rel: Any) -> str:
    if not rel.compat:
        return "-"
    counts: dict[str, int] = {}
    for c in rel.compat:
        counts[c.result] = counts.get(c.result, 0) + 1
    return ", ".join(f"{n} {result}" for result, n in counts.items())


def _metric_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


@app.command()
def show(
    ref: str = typer.Argument(
        ..., metavar="NAME@VERSION", help="A release: mnist@v2, mnist#prod, or mnist (its latest version)."
    ),
    fmt: str = typer.Option(None, "--format", "-f", help="Which format's metadata (default: the first)."),
    json_out: bool = typer.Option(False, "--json", help="Print the metadata as JSON."),
) -> None:
    """Show a release's metadata (from git alone: works before any data is fetched): its source (the commit and
    any uncommitted files of the code that made it), metrics, training state, signature, libraries."""
    from kgit import api

    view = api.show(ref, format=fmt)
    if json_out:
        print_json(view.to_dict())
        return
    rel, meta = view.release, view.metadata
    rows = [
        ("model", f"{meta.name} {meta.version}" + (" (deprecated)" if rel.deprecated else "")),
        *([("deprecated", view.deprecation_note or "yes (no note given)")] if rel.deprecated else []),
        *(
            [("data", f"{api.describe_collected(view.collected)}: it can no longer be fetched")]
            if view.collected
            else []
        ),
        ("tag", rel.tag),
        ("stages", ", ".join(rel.stages) or "-"),
        ("release commit", rel.commit[:12]),
        ("formats", ", ".join(f"{f} ({_stored_text(i)})" for f, i in rel.formats.items())),
        ("created", meta.created_at),
        *_source_rows(meta),
        (
            "dataset",
            " ".join(x for x in [meta.dataset.id or "", meta.dataset.path or "", meta.dataset.dvc_hash or ""] if x)
            or "-",
        ),
        ("hyperparameters", json.dumps(meta.hyperparameters) if meta.hyperparameters else "-"),
        (
            "metrics",
            ", ".join(f"{k} {v:g}" + (" (measured)" if k in meta.measured else "") for k, v in meta.metrics.items())
            or "-",
        ),
        ("training", _training(meta.training)),
        ("resumable", _resumable(meta)),
        *(
            [("keras flavour", f"{meta.keras_flavour} (validated with TF_USE_LEGACY_KERAS=1)")]
            if meta.keras_flavour != "keras"
            else []
        ),
        ("inputs", "; ".join(f"{s.name} {s.shape} {s.dtype}" for s in meta.signature.inputs)),
        ("outputs", "; ".join(f"{s.name} {s.shape} {s.dtype}" for s in meta.signature.outputs)),
        (
            "reference",
            f"{meta.reference.inputs_file} -> {meta.reference.outputs_file}, atol {meta.reference.atol:g}"
            + (" (generated)" if meta.reference.generated else ""),
        ),
        ("libraries", ", ".join(f"{k} {v}" for k, v in meta.libraries.items())),
    ]
    if meta.custom_modules or meta.custom_objects:
        rows.append(("custom objects", ", ".join(meta.custom_modules + meta.custom_objects)))
    if meta.builder:
        rows.append(("builder", meta.builder))
    rows.append(("signed by", f"key {meta.signed_by[:16]}" if meta.signed_by else "not signed"))
    rows.append(
        (
            "compat",
            "; ".join(
                f"{c.env + ': ' if c.env else ''}{c.describe_env()} (python {c.python}): {c.text}" for c in rel.compat
            )
            or "not checked (kgit compat)",
        )
    )
    if meta.notes:
        rows.append(("notes", meta.notes))
    rows.append(("files", f"{len(meta.files)} (sha256 recorded)"))
    write_pairs([(k, str(v)) for k, v in rows])  # plain text: rich's import and table cost ~60 ms


def _stored_text(info: dict[str, Any]) -> str:
    """A format's size and, if the release recorded it, what it added: ``12.1 MB, 40.2 kB new``."""
    from kgit import api

    size = api.human_size(info.get("size"))
    new = info.get("new_bytes")
    if new is None or not info.get("size"):
        return size
    shared = int(info["size"]) - int(new)
    return f"{size}, {api.human_size(new)} new" + (
        f", {api.human_size(shared)} unchanged from earlier versions" if shared > 0 else ""
    )


def _source_rows(meta: Any) -> list[tuple[str, str]]:
    """Where the model came from: HEAD and the files not committed, the script or module it came from."""
    branch = f" on {meta.git.branch}" if meta.git.branch else ""
    if meta.source is None:  # released before kgit recorded which code was committed
        return [("source commit", f"{(meta.git.commit or '-')[:12]}{branch}" + (" (dirty)" if meta.git.dirty else ""))]
    return [("source", meta.source.summary(meta.git.branch)), ("entry", meta.source.entry_text())]


def _resumable(meta: Any) -> str:
    if meta.resumable:
        return "yes: the optimizer state is released, training resumes"
    if meta.training.get("compiled"):
        return "no: released for inference only, without the optimizer state"
    return "no: the model was not compiled (no optimizer state)"


def _training(training: dict[str, Any]) -> str:
    if not training.get("compiled"):
        return "not compiled"
    opt = training.get("optimizer") or {}
    lr = (opt.get("config") or {}).get("learning_rate")
    return f"{opt.get('class_name')} (lr {lr}), loss {json.dumps(training.get('loss'))}, metrics {json.dumps(training.get('metrics'))}"


# -- get / diff ----------------------------------------------------------------------------------
@app.command()
def get(
    ref: str = typer.Argument(
        ..., metavar="NAME@VERSION", help="A release: mnist@v2, mnist#prod, or mnist (its latest version)."
    ),
    formats: list[str] = typer.Option(
        [], "--format", "-f", help="Only this format (repeatable; default: all formats of the release)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print what was fetched as JSON."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar (it is drawn only when stderr is a terminal and CI is not set)."
    ),
) -> None:
    """Fetch one release's data from the DVC remote (only that version's bytes), verified against the release."""
    from kgit import api

    result = api.get(ref, formats=formats or None, progress=False if quiet else None)
    if json_out:
        print_json(result.to_dict())
    else:
        for fmt, info in result.formats.items():
            state = "fetched" if info["fetched"] else "already here"
            err(
                f"{result.name}@{result.version} ({fmt}): {state}, verified: {info['path']} ({api.human_size(info.get('size'))})"
            )
    for warning in result.warnings:  # fetching ran none of it; loading asks first
        err(f"kgit: warning: {warning}")


@app.command()
def diff(
    ref_a: str = typer.Argument(..., metavar="NAME@VERSION", help="The older release."),
    ref_b: str = typer.Argument(..., metavar="NAME@VERSION", help="The newer release."),
    metric: list[str] = typer.Option(
        [],
        "--metric",
        "-m",
        metavar="KEY",
        help="Compare only this metric (e.g. val.accuracy); repeatable. Default: every metric of either release.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
) -> None:
    """What changed between two releases: metrics (old, new, delta), hyperparameters, training, dataset, signature, formats, sizes, libraries."""
    from kgit import api

    result = api.diff(ref_a, ref_b, metrics=metric)
    if json_out:
        print_json(result)
        return
    if result["metrics"]:
        rows = [
            [
                m["key"],
                _metric_cell(m["a"]),
                _metric_cell(m["b"]),
                "-" if m["delta"] is None else f"{m['delta']:+.6g}",
                f"{m['verdict']} ({m['direction']})",
            ]
            for m in result["metrics"]
        ]
        write_columns(["metric", result["a"], result["b"], "delta", "b is"], rows)
    changes = [c for c in result["changes"] if c["section"] != "metrics"]  # metrics: in the table above
    if not changes:
        err(
            f"{result['a']} and {result['b']} have the same metadata"
            + (" but for metrics" if result["changes"] else "")
        )
        return
    if result["metrics"]:
        sys.stdout.write("\n")
    write_table(
        ["section", "key", result["a"], result["b"]],
        [[c["section"], c["key"], _cell(c["a"]), _cell(c["b"])] for c in changes],
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if not isinstance(value, str) else value


# -- demo ----------------------------------------------------------------------------------------
@app.command()
def demo(
    directory: Path = typer.Argument(
        None, metavar="[DIR]", help="Where to create the demo repository (default: a new temp folder)."
    ),
) -> None:
    """Walk through kgit on a built-in example: init, release v1 and v2, push, then use them from a fresh clone."""
    from kgit import api

    api.demo(directory)
