"""The command line: parse options, call kgit's Python API, render the result. Nothing else.

Every expected failure is a KgitError: one line on stderr, exit 1. Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.exceptions import TyperException

from kgit.errors import KgitError

app = typer.Typer(
    name="kgit",
    help="Immutable, validated, versioned Keras model releases in your git repository, stored with DVC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"traceback": False}


def _version_callback(value: bool) -> None:
    if value:
        from kgit import __version__

        typer.echo(f"kgit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    traceback: bool = typer.Option(False, "--traceback", help="Show the full stack trace when an error occurs."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print kgit's version and exit."),
) -> None:
    _state["traceback"] = traceback


def _err(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class _Steps:
    """Progress for long work: a spinner with the current step on a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.enabled = enabled
        self.status: Any = None

    def __enter__(self) -> _Steps:
        if self.enabled and self.console.is_terminal:
            self.status = self.console.status("starting")
            self.status.__enter__()
        return self

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        if self.status is not None:
            self.console.log(f"[dim]{message}[/dim]")
            self.status.update(message)
        else:
            self.console.print(f"[dim]- {message}[/dim]")

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)


# -- init ----------------------------------------------------------------------------------------
@app.command()
def init(
    remote: str = typer.Option(None, "--remote", "-r", metavar="PATH_OR_URL",
                               help="DVC remote for release data: a folder or any DVC remote URL (s3://, ssh://, ...). "
                               "Default: keep the current default remote, else a folder beside the repository."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Set up this git repository for kgit: DVC, the validation stage, a default remote, git hooks. Idempotent."""
    from kgit import api

    result = api.init(".", remote=remote)
    if json_out:
        _print_json({"root": result.root, "remote": result.remote_url, "changes": result.changes, "commit": result.commit})
        return
    if not result.changes:
        _err(f"kgit: {result.root} is already set up (remote: {result.remote_url}); nothing changed")
        return
    for change in result.changes:
        _err(f"kgit: {change}")
    if result.commit:
        _err(f"kgit: committed the set-up as {result.commit[:8]}")


# -- release -------------------------------------------------------------------------------------
def _parse_params(params: list[str], params_file: Path | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if params_file is not None:
        import yaml

        try:
            loaded = yaml.safe_load(params_file.read_text())
        except OSError as exc:
            raise KgitError(f"cannot read --params {params_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise KgitError(f"--params {params_file} is not valid YAML/JSON ({' '.join(str(exc).split())[:150]})") from None
        except RecursionError:
            raise KgitError(f"--params {params_file} is nested too deeply to read") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise KgitError(f"--params {params_file} must hold a mapping of names to values")
        result.update(loaded or {})
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
    source: str = typer.Option(..., "--from", metavar="SOURCE",
                               help="The model: a .keras or .h5 file, a SavedModel folder, or MODULE:FUNCTION returning a keras.Model."),
    formats: list[str] = typer.Option(["savedmodel"], "--format", "-f", metavar="FORMAT",
                                      help="savedmodel, keras, h5 or weights; repeat for several formats of one version."),
    version: str = typer.Option(None, "--version", "-v", help="Explicit version: vN (v3) or semantic vMAJOR.MINOR.PATCH (v1.2.0). Default: next vN."),
    bump: str = typer.Option(None, "--bump", metavar="PART", help="Next semantic version after the highest released: major, minor or patch."),
    dataset_id: str = typer.Option(None, "--dataset-id", metavar="ID", help="Identifier of the training data, recorded in metadata."),
    dataset: Path = typer.Option(None, "--dataset", metavar="PATH", help="A DVC-tracked path in this repository: its DVC hash is recorded."),
    params: list[str] = typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="A hyperparameter (VALUE parsed as JSON when it can be); repeatable."),
    params_file: Path = typer.Option(None, "--params", metavar="FILE", help="Hyperparameters from a YAML or JSON file (e.g. DVC's params.yaml)."),
    notes: str = typer.Option(None, "--notes", help="Free text recorded in metadata and the commit message."),
    custom_objects: list[str] = typer.Option([], "--custom-objects", metavar="MODULE:ATTR", help="A custom class or function the model needs to load; recorded; repeatable."),
    builder: str = typer.Option(None, "--builder", metavar="MODULE:FUNC", help="Function that rebuilds the architecture (needed for --format weights)."),
    reference_input: Path = typer.Option(None, "--reference-input", metavar="FILE.npz", help="Reference inputs (arrays named like the model's inputs). Default: generated from the input signature."),
    atol: float = typer.Option(1e-6, "--atol", help="Largest absolute difference allowed between recorded and reloaded outputs."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Release even with uncommitted changes to tracked files (recorded as dirty: true)."),
    unsafe: bool = typer.Option(False, "--unsafe", help="Allow models with Python lambdas (Keras safe mode off). Only for code you trust."),
    json_out: bool = typer.Option(False, "--json", help="Print the release record as JSON on stdout."),
) -> None:
    """Release a trained model as a new immutable version: save, validate, track with DVC, commit, tag."""
    from kgit import api

    hyper = _parse_params(params, params_file)
    if reference_input is not None and not reference_input.is_file():
        raise KgitError(f"--reference-input {reference_input} does not exist")
    with _Steps(enabled=True) as steps:
        record = api.release(
            source, name, formats=formats, version=version, bump=bump, dataset_id=dataset_id, dataset=dataset,
            hyperparams=hyper, notes=notes, custom_objects=custom_objects, builder=builder,
            reference_inputs=reference_input, atol=atol, allow_dirty=allow_dirty, unsafe=unsafe, progress=steps,
        )
    if json_out:
        _print_json(record.to_dict())
        return
    worst = max((v.get("max_abs_diff") or 0.0 for v in record.validation), default=0.0)
    _err(f"[green]released[/green] {record.name} {record.version} ({', '.join(record.formats)}) "
         f"as tag {record.tag} on commit {record.commit[:8]}; round trip max abs diff {worst:.2g}")
    _err("next: `git push` publishes the commit, the tag and (with kgit's hook) the data")


# -- list / show ---------------------------------------------------------------------------------
@app.command("list")
def list_(
    name: str = typer.Argument(None, help="Only this model."),
    json_out: bool = typer.Option(False, "--json", help="Print the releases as JSON."),
) -> None:
    """List releases (from git tags alone: fast, works before any data is fetched)."""
    from kgit import registry
    from kgit.git_ops import Repo

    rels = registry.releases(Repo("."), name)
    if json_out:
        _print_json([r.to_dict() for r in rels])
        return
    if not rels:
        _err("no releases yet" + (f" of {name}" if name else "") + ": make one with `kgit release NAME --from MODEL`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("name", "version", "stages", "formats", "created", "dataset", "commit"):
        table.add_column(col)
    for r in rels:
        stages = ",".join(r.stages) + (" [dim](deprecated)[/dim]" if r.deprecated else "")
        table.add_row(r.name, r.version, stages or "-", ",".join(r.formats),
                      (r.created_at or "").replace("T", " ").rstrip("Z"), r.dataset_id or "-", (r.source_commit or "-")[:8])
    Console().print(table)


@app.command()
def show(
    ref: str = typer.Argument(..., metavar="NAME@VERSION", help="A release, e.g. mnist@v2, mnist@latest or mnist#prod."),
    fmt: str = typer.Option(None, "--format", "-f", help="Which format's metadata (default: the first)."),
    json_out: bool = typer.Option(False, "--json", help="Print the metadata as JSON."),
) -> None:
    """Show a release's metadata (from git alone: works before any data is fetched)."""
    from kgit import registry
    from kgit.git_ops import Repo
    from kgit.versions import parse_ref

    name, version = parse_ref(ref)
    git = Repo(".")
    rel = registry.resolve(git, name, version)
    meta = registry.metadata(git, rel, fmt)
    if json_out:
        _print_json({"tag": rel.tag, "release_commit": rel.commit, "formats": rel.formats, "stages": rel.stages,
                     "deprecated": rel.deprecated, **meta.to_dict()})
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("model", f"{meta.name} {meta.version}" + (" (deprecated)" if rel.deprecated else "")), ("tag", rel.tag),
        ("stages", ", ".join(rel.stages) or "-"), ("release commit", rel.commit[:12]),
        ("formats", ", ".join(f"{f} ({_size(i.get('size'))})" for f, i in rel.formats.items())),
        ("created", meta.created_at), ("source commit", f"{(meta.git.commit or '-')[:12]} on {meta.git.branch or '-'}"
                                       + (" (dirty)" if meta.git.dirty else "")),
        ("dataset", " ".join(x for x in [meta.dataset.id or "", meta.dataset.path or "", meta.dataset.dvc_hash or ""] if x) or "-"),
        ("hyperparameters", json.dumps(meta.hyperparameters) if meta.hyperparameters else "-"),
        ("training", _training(meta.training)),
        ("inputs", "; ".join(f"{s.name} {s.shape} {s.dtype}" for s in meta.signature.inputs)),
        ("outputs", "; ".join(f"{s.name} {s.shape} {s.dtype}" for s in meta.signature.outputs)),
        ("reference", f"{meta.reference.inputs_file} -> {meta.reference.outputs_file}, atol {meta.reference.atol:g}"
                      + (" (generated)" if meta.reference.generated else "")),
        ("libraries", ", ".join(f"{k} {v}" for k, v in meta.libraries.items())),
    ]
    if meta.custom_modules or meta.custom_objects:
        rows.append(("custom objects", ", ".join(meta.custom_modules + meta.custom_objects)))
    if meta.builder:
        rows.append(("builder", meta.builder))
    rows.append(("signed by", f"key {meta.signed_by[:16]}" if meta.signed_by else "not signed"))
    if meta.notes:
        rows.append(("notes", meta.notes))
    rows.append(("files", f"{len(meta.files)} (sha256 recorded)"))
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _training(training: dict[str, Any]) -> str:
    if not training.get("compiled"):
        return "not compiled"
    opt = training.get("optimizer") or {}
    lr = (opt.get("config") or {}).get("learning_rate")
    return f"{opt.get('class_name')} (lr {lr}), loss {json.dumps(training.get('loss'))}, metrics {json.dumps(training.get('metrics'))}"


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

    with _Steps(enabled=not json_out) as steps:
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
        _print_json(change.to_dict())
        return
    where = f" {'to' if change.event == 'promoted' else 'from'} {change.stage}" if change.stage else ""
    _err(f"{change.event} {change.name} {change.version}{where} (tag {change.tag}); `git push` shares it")


@app.command()
def history(
    name: str = typer.Argument(..., help="The model."),
    json_out: bool = typer.Option(False, "--json", help="Print the events as JSON."),
) -> None:
    """Every event of a model (released, promoted, demoted, deprecated): who, when, commit; from tags."""
    from kgit import api

    events = api.history(name)
    if json_out:
        _print_json([e.to_dict() for e in events])
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for col in ("when", "event", "version", "stage", "who", "commit"):
        t.add_column(col)
    for e in events:
        t.add_row(e.when.replace("T", " ")[:19], e.event, e.version or "-", e.stage or "-", e.who.split(" <")[0], e.commit[:8])
    Console(soft_wrap=True).print(t)


# -- get / diff ----------------------------------------------------------------------------------
@app.command()
def get(
    ref: str = typer.Argument(..., metavar="NAME@VERSION", help="A release, e.g. mnist@v2, mnist@latest or mnist#prod."),
    formats: list[str] = typer.Option([], "--format", "-f", help="Only this format (repeatable; default: all formats of the release)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was fetched as JSON."),
) -> None:
    """Fetch one release's data from the DVC remote (only that version's bytes), verified against the release."""
    from kgit import api

    result = api.get(ref, formats=formats or None)
    if json_out:
        _print_json(result.to_dict())
        return
    for fmt, info in result.formats.items():
        state = "fetched" if info["fetched"] else "already here"
        _err(f"{result.name}@{result.version} ({fmt}): {state}, verified: {info['path']} ({_size(info.get('size'))})")


@app.command()
def diff(
    ref_a: str = typer.Argument(..., metavar="NAME@VERSION", help="The older release."),
    ref_b: str = typer.Argument(..., metavar="NAME@VERSION", help="The newer release."),
    json_out: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
) -> None:
    """What changed between two releases: hyperparameters, training, dataset, signature, formats,
    sizes, library versions (from git alone)."""
    from kgit import api

    result = api.diff(ref_a, ref_b)
    if json_out:
        _print_json(result)
        return
    if not result["changes"]:
        _err(f"{result['a']} and {result['b']} have the same metadata")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for col in ("section", "key", result["a"], result["b"]):
        t.add_column(col, overflow="fold")
    for c in result["changes"]:
        t.add_row(c["section"], c["key"], _cell(c["a"]), _cell(c["b"]))
    Console(soft_wrap=True).print(t)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if not isinstance(value, str) else value


# -- validate ------------------------------------------------------------------------------------
@app.command()
def validate(
    refs: list[str] = typer.Argument(None, metavar="[NAME@VERSION]...", help="Releases to check (default: all)."),
    all_: bool = typer.Option(False, "--all", help="Check every release."),
    recheck: bool = typer.Option(False, "--recheck", help="Check again even versions already validated at their current content."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check releases: data present, release unchanged since tagging, file hashes, then reload in a
    fresh process and compare the reference outputs. Incremental: unchanged versions that passed
    before are not redone."""
    from kgit import api
    from kgit.validation import result_dict

    with _Steps(enabled=not json_out) as steps:
        results = api.validate(refs or None, all=all_ or not refs, recheck=recheck, progress=steps)
    if json_out:
        _print_json([result_dict(r) for r in results])
    elif results:
        render_validation(results)
    bad = [r for r in results if not r.ok]
    if bad:
        raise KgitError(f"{len(bad)} of {len(results)} checks failed: " + "; ".join(f"{r.folder} ({r.format}) {r.check}" for r in bad[:5]))
    if not results:
        _err("no releases to validate")


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


# -- hooks -------------------------------------------------------------------------------------
hooks_app = typer.Typer(help="Install or remove kgit's git hooks (pre-commit, pre-push).", no_args_is_help=True)
app.add_typer(hooks_app, name="hooks")


@hooks_app.command("install")
def hooks_install() -> None:
    """Install kgit's pre-commit and pre-push hooks (honours core.hooksPath; chains existing hooks)."""
    from kgit import hooks
    from kgit.git_ops import Repo

    changes = hooks.install(Repo("."))
    for c in changes or ["kgit's hooks are already installed; nothing changed"]:
        _err(f"kgit: {c}")


@hooks_app.command("uninstall")
def hooks_uninstall() -> None:
    """Remove kgit's hooks and put back the hooks they chained."""
    from kgit import hooks
    from kgit.git_ops import Repo

    changes = hooks.uninstall(Repo("."))
    for c in changes or ["no kgit hooks installed; nothing changed"]:
        _err(f"kgit: {c}")


@app.command("hook", hidden=True)
def hook(
    name: str = typer.Argument(..., help="pre-push or pre-commit."),
    args: list[str] = typer.Argument(None, help="What git passes to the hook (pre-push: remote name and URL)."),
) -> None:
    """Run a git hook's check (called by the shims in .git/hooks; not for direct use)."""
    from kgit import guard

    if name == "pre-push":
        remote = (args or ["origin"])[0]
        text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        updates = guard.parse_updates(text) or guard.updates_from_pre_commit_framework()
        code = guard.pre_push(remote, updates)
    elif name == "pre-commit":
        code = guard.pre_commit()
    else:
        raise KgitError(f"unknown hook {name!r}: kgit provides pre-push and pre-commit")
    if code:
        raise typer.Exit(code)


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
        _print_json(result)
        return
    for c in result["changes"] or ["your key is already set up; nothing changed"]:
        _err(f"kgit: {c}")
    _err(f"kgit: key fingerprint {result['fingerprint'][:16]}, policy {result['policy']}")


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
    _err(f"kgit: key {result['fingerprint'][:16]} {state} ({result['public_key']})")


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
    _err(f"kgit: signing policy {'set to' if changed else 'already'} {value}")


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
        _print_json(data)
        return
    typer.echo(f"policy: {data['policy']}\nsigning key: {data['signing_key'] or '-'}")
    for k in keys:
        typer.echo(f"trusted: {k['fingerprint'][:16]}  {k['file']}")


@app.command()
def verify(
    refs: list[str] = typer.Argument(None, metavar="[NAME@VERSION]...", help="Releases to check (default: all)."),
    all_: bool = typer.Option(False, "--all", help="Check every release."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check release signatures against the trusted public keys (offline). `kgit validate` does this too."""
    from kgit import api
    from kgit.validation import result_dict

    results = api.verify(None if all_ or not refs else refs)
    if json_out:
        _print_json([result_dict(r) for r in results])
    elif results:
        render_validation(results)
    bad = [r for r in results if not r.ok]
    if bad:
        raise KgitError(f"{len(bad)} of {len(results)} signature checks failed: " + "; ".join(r.reason() for r in bad[:3]))


# -- demo ----------------------------------------------------------------------------------------
@app.command()
def demo(
    directory: Path = typer.Argument(None, metavar="[DIR]", help="Where to create the demo repository (default: a new temp folder)."),
) -> None:
    """Walk through kgit on a built-in example: init, train, release v1, change a hyperparameter, release v2."""
    from kgit.demo import run_demo

    run_demo(directory)


# -- entry point ---------------------------------------------------------------------------------
def _fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"kgit: error: {message}\n")
    sys.exit(code)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so an interrupted release cleans up


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="kgit", standalone_mode=False)
        # Non-standalone Typer turns Ctrl-C into a returned 130 and typer.Exit into its code.
        if isinstance(rv, int) and not isinstance(rv, bool):
            if rv == 130:
                sys.stderr.write("kgit: interrupted\n")
            sys.exit(rv)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors: Typer's own message and exit code (2)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            sys.stderr.write(f"kgit: error: {exc.format_message()}\n")
        sys.exit(exc.exit_code or 2)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("kgit: interrupted\n")
        sys.exit(130)
    except KgitError as exc:
        if _state["traceback"] or os.environ.get("KGIT_TRACEBACK"):
            raise
        _fail(str(exc))
    except Exception as exc:  # a bug in kgit or a library: say so, briefly, and how to see more
        if _state["traceback"] or os.environ.get("KGIT_TRACEBACK"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (rerun with --traceback for details)", 2)
