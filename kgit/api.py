"""The Python API: everything kgit does, for scripts and for the command line (which only parses
options, calls these functions and renders what they return). Heavy work is imported lazily.

A release is named the same way everywhere: a reference (``"mnist@v2"``, ``"mnist@latest"``,
``"mnist#prod"``), or a bare model name with ``version=`` or ``stage=`` (neither: the latest).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kgit.core.errors import KgitError
from kgit.core.metadata import Metadata
from kgit.core.sizes import human_size as human_size  # the command line shows sizes with it
from kgit.registry import catalog
from kgit.registry.versions import check_name, release_ref
from kgit.store.git_ops import Repo

if TYPE_CHECKING:
    from datetime import datetime

    from kgit.compat.checking import CompatReport
    from kgit.compat.quick import QuickReport
    from kgit.registry.stage_history import Holding
    from kgit.reporting import ReportResult
    from kgit.serving.layout import Layout
    from kgit.workflow.fetch import Fetched
    from kgit.workflow.project import InitResult
    from kgit.workflow.releasing import ReleaseRecord, release
    from kgit.workflow.roundtrip import FolderResult
    from kgit.workflow.stages import StageChange

__all__ = [
    "release",
    "load",
    "get",
    "diff",
    "list_releases",
    "show",
    "init",
    "validate",
    "promote",
    "rollback",
    "demote",
    "deprecate",
    "history",
    "holders_at",
    "verify",
    "check",
    "report",
    "ReleaseRecord",
    "ReleaseView",
    "hooks_install",
    "hooks_uninstall",
    "run_hook",
    "server_install",
    "server_uninstall",
    "keys_init",
    "keys_trust",
    "keys_accept",
    "keys_policy",
    "keys_list",
    "demo",
    "serve_layout",
    "compat",
    "compat_quick",
    "gc",
    "collected_releases",
    "describe_collected",
]

PathLike = str | os.PathLike[str]


def __getattr__(name: str) -> Any:
    """``release`` and ``ReleaseRecord`` come from kgit.workflow.releasing, imported on first use: commands
    that only read git do not pay for the release machinery's imports."""
    if name in ("release", "ReleaseRecord"):
        from kgit.workflow import releasing

        return getattr(releasing, name)
    raise AttributeError(f"module 'kgit.api' has no attribute {name!r}")


# -- set-up ------------------------------------------------------------------------------------
def init(path: PathLike = ".", remote: str | None = None, remote_options: dict[str, str] | None = None) -> InitResult:
    """Set up the git repository at ``path`` for kgit (idempotent). See ``kgit init --help``.
    ``remote_options``: DVC settings of the remote, e.g. ``{"endpointurl": "https://..."}``."""
    from kgit.store import txn
    from kgit.workflow import project

    repo = Repo(path)
    project.check_checkout(repo)  # before anything is written, the lock file included
    with txn.writing(repo):
        return project.init(path, remote=remote, remote_options=remote_options)


def hooks_install(repo: PathLike = ".") -> list[str]:
    """Install kgit's pre-commit, pre-merge-commit and pre-push hooks (chaining existing ones); what changed."""
    from kgit.store import githooks

    return githooks.install(Repo(repo))


def hooks_uninstall(repo: PathLike = ".") -> list[str]:
    """Remove kgit's hooks and put back the hooks they chained; what changed."""
    from kgit.store import githooks

    return githooks.uninstall(Repo(repo))


def run_hook(name: str, args: list[str], stdin_text: str) -> int:
    """Run kgit's ``pre-push``, ``pre-commit`` or (server) ``pre-receive`` hook in the current
    repository, as the hook shims do; returns the hook's exit code."""
    from kgit.guard import client_hooks

    return client_hooks.run_hook(name, args, stdin_text)


def server_install(
    bare_repo: PathLike, dvc_remote: str | None = None, dvc_remote_options: dict[str, str] | None = None
) -> list[str]:
    """Install kgit's pre-receive hook in a bare repository; what changed. ``dvc_remote_options``:
    the remote's DVC settings (endpoint, region...) the hook needs to check data presence."""
    from kgit.guard import server

    return server.install(os.fspath(bare_repo), dvc_remote, dvc_remote_options)


def server_uninstall(bare_repo: PathLike) -> list[str]:
    """Remove kgit's pre-receive hook from a bare repository; what changed."""
    from kgit.guard import server

    return server.uninstall(os.fspath(bare_repo))


def demo(directory: PathLike | None = None) -> None:
    """Walk through kgit on a built-in example (what `kgit demo` prints), in ``directory`` or a temp folder."""
    from pathlib import Path

    from kgit.workflow.demo import run_demo

    run_demo(Path(directory) if directory is not None else None)


# -- releases ----------------------------------------------------------------------------------
@dataclass
class ReleaseView:
    """One release as ``show`` returns it: its tag (stages, formats) and one format's metadata."""

    release: catalog.Release
    metadata: Metadata
    deprecation_note: str | None = None  # the --note of `kgit deprecate`, when deprecated with one
    collected: dict[str, Any] | None = None  # kgit gc collected its data (as this clone knows: kgit.store.collected)

    def to_dict(self) -> dict[str, Any]:
        rel = self.release
        return {
            "tag": rel.tag,
            "release_commit": rel.commit,
            "formats": rel.formats,
            "stages": rel.stages,
            "deprecated": rel.deprecated,
            "deprecation_note": self.deprecation_note,
            **self.metadata.to_dict(),
            "compat": [c.to_dict() for c in rel.compat],
            "collected": self.collected,
        }


def list_releases(
    name: str | None = None, repo: PathLike = ".", *, sort: str | None = None, columns: Sequence[str] = ()
) -> list[catalog.Release]:
    """Every release (of one model if ``name``), from git tags alone; with ``sort`` (a metric key),
    best first (direction from ``.kgit/gates.yaml``, else from the key's name: ``*loss``, ``*error``,
    ``*mae``, ``*mse``, ``*rmse`` lower is better, others higher), those without it last.
    ``columns``: metric keys the caller will show. A model, sort key or column that none of the
    releases has is refused (ReleaseNotFoundError, MetricError), suggesting the one probably meant."""
    from kgit.core import metrics

    for key in [*columns, *([sort] if sort is not None else [])]:
        metrics.check_key(key, "--sort" if key == sort else "--metric")
    git = Repo(repo)
    rels = catalog.releases(git, name)
    if name is not None and not rels:
        raise catalog.no_model(git, name)
    known = {key for r in rels for key in r.metrics}
    among = f"the releases of {name}" if name else "any release"
    for key in columns if rels else ():
        metrics.check_known(key, known, "--metric", among)
    if sort is None:
        return rels
    from kgit.registry import gates

    directions = gates.directions(git)  # a gates file that cannot be read is refused whatever the key
    if rels:
        metrics.check_known(sort, known, "--sort", among)
    return metrics.sort_releases(rels, sort, metrics.direction(sort, directions))


def collected_releases(repo: PathLike = ".") -> dict[str, dict[str, Any]]:
    """{tag: record} of the releases whose data ``kgit gc`` collected from the DVC remote, as this
    clone knows it (it ran gc, or kgit get/validate/check read gc's record in the remote); git-only:
    no DVC, no network. A record has ``collected_at``, ``by`` and ``policy``."""
    from kgit.store import collected

    return collected.known(Repo(repo))


def describe_collected(record: dict[str, Any]) -> str:
    """A record of ``collected_releases`` in one line: when, by whom, under which policy."""
    from kgit.store import collected

    return collected.describe(record)


def read_metrics(file: PathLike | None = None, items: Sequence[str] = ()) -> dict[str, float]:
    """Metrics from a JSON/YAML file (nested keys joined with dots: ``val.accuracy``) and from
    ``KEY=VALUE`` items, which win; every value a finite number, or a KgitError naming the key."""
    from pathlib import Path

    from kgit.core import metrics

    return metrics.combine(metrics.read_file(Path(file)) if file is not None else {}, metrics.parse_assignments(items))


def read_params_file(file: PathLike) -> dict[str, Any]:
    """Hyperparameters from a YAML/JSON file (e.g. DVC's params.yaml), read safely and bounded."""
    from pathlib import Path

    from kgit.core import bounded_yaml

    loaded = bounded_yaml.read_file(Path(file), f"--params {file}")
    if loaded is not None and not isinstance(loaded, dict):
        raise KgitError(f"--params {file} must hold a mapping of names to values")
    return dict(loaded or {})


def show(
    ref: str, version: str | None = None, *, stage: str | None = None, format: str | None = None, repo: PathLike = "."
) -> ReleaseView:
    """A release and the metadata of one of its formats (default: the first), with the note it was
    deprecated with, if any; from git alone (works before `dvc pull`)."""
    git = Repo(repo)
    rel = catalog.resolve(git, *release_ref(ref, version, stage))
    view = ReleaseView(rel, catalog.metadata(git, rel, format), collected=collected_releases(git.root).get(rel.tag))
    if rel.deprecated:
        from kgit.registry import stage_checks
        from kgit.registry.versions import Version

        view.deprecation_note = stage_checks.deprecation_note(git, rel.name, Version.parse(rel.version))
    return view


def get(
    ref: str,
    version: str | None = None,
    *,
    stage: str | None = None,
    formats: list[str] | None = None,
    repo: PathLike = ".",
    progress: bool | None = None,
) -> Fetched:
    """Fetch a release's data from the DVC remote (only that version's bytes), verified.

    ``progress``: draw bytes, rate and time left on stderr (True), never (False), or only when
    stderr is a terminal and ``CI`` is not set (None, the default)."""
    from kgit.workflow import fetch

    return fetch.get(*release_ref(ref, version, stage), formats=formats, repo=Repo(repo), progress=progress)


def load(
    ref: str,
    version: str | None = None,
    *,
    stage: str | None = None,
    format: str | None = None,
    repo: PathLike = ".",
    custom_objects: dict[str, Any] | None = None,
    progress: bool | None = None,
    unsafe: bool = False,
) -> Any:
    """The Keras model of a release, fetched first if its data is not here, and verified.

    Full-model formats (savedmodel, keras, h5) come back compiled with their optimizer state, so
    training resumes; ``weights`` is rebuilt with the recorded builder. ``format`` defaults to the
    first format of the release. ``progress`` is as for ``get`` (when the data must be fetched).
    A model whose configuration carries code (a Python Lambda layer: a release made with
    ``--unsafe``) is refused unless you pass ``unsafe=True`` (only if you trust who released it),
    or this clone's git config ``kgit.unsafeLoading`` is ``signed`` and a key it trusts signed it.
    """
    from kgit.workflow import fetch

    name, selector = release_ref(ref, version, stage)
    return fetch.load_model(
        Repo(repo), name, selector, format, custom_objects=custom_objects, progress=progress, unsafe=unsafe
    )


def diff(ref_a: str, ref_b: str, *, metrics: Sequence[str] = (), repo: PathLike = ".") -> dict[str, Any]:
    """What changed between two releases (metrics, hyperparameters, dataset, signature, formats,
    sizes, library versions...), from git alone. ``metrics``: only these metric keys in the
    ``metrics`` comparison (a key neither release has is refused)."""
    from kgit.registry import diffing

    return diffing.diff(Repo(repo), ref_a, ref_b, metrics=metrics)


# -- serving -----------------------------------------------------------------------------------
def serve_layout(
    refs: list[str] | str,
    out: PathLike,
    *,
    base_path: str | None = None,
    copy: bool = False,
    tf_serving_version: str | None = None,
    repo: PathLike = ".",
) -> Layout:
    """Lay out releases (``NAME``: every version in a stage, ``NAME#STAGE``, ``NAME@VERSION``) in
    ``out`` as TensorFlow Serving reads them (``out/NAME/<integer>/``, ``out/models.config`` with the
    stages as version labels), in sync with the selection: see kgit.serving.layout.
    ``tf_serving_version`` ("2.18"): refuse releases whose graphs use ops that TF Serving version lacks."""
    from pathlib import Path

    from kgit.serving import layout

    refs = [refs] if isinstance(refs, str) else list(refs)
    return layout.layout(
        Repo(repo), refs, Path(out), base_path=base_path, copy=copy, tf_serving_version=tf_serving_version
    )


# -- compatibility ----------------------------------------------------------------------------
def compat(
    ref: str,
    *,
    with_: Sequence[str] = (),
    envs: Sequence[str] = (),
    version: str | None = None,
    record: bool = True,
    unsafe: bool = False,
    repo: PathLike = ".",
    log: Any = None,
) -> CompatReport:
    """Does a release load in other environments? ``with_``: package specifiers forming one
    environment (``["keras==3.12.*", "tensorflow==2.21.*"]``); ``envs``: names from
    ``.kgit/compat.yaml``, one environment each. Each is made with uv (cached by what it resolves
    to), the release's formats present here are loaded there and compared with the recorded reference
    outputs, and each result is recorded as a compat tag (``record=False``: not recorded). See
    kgit.compat.checking."""
    from kgit.compat import checking

    git = Repo(repo)
    name, selector = release_ref(ref, version)
    requests = checking.requests(git, with_, envs)
    return checking.check(git, name, selector, requests, record=record, unsafe=unsafe, log=log)


def compat_quick(
    ref: str, *, with_: Sequence[str] = (), envs: Sequence[str] = (), version: str | None = None, repo: PathLike = "."
) -> QuickReport:
    """``kgit compat --quick``: the release's model configuration against each target Keras version's
    own source (its wheel, downloaded once into kgit's cache and read without importing it): the
    layer classes, arguments and dtype policies that version does not have. No environment is made."""
    from kgit.compat import checking, quick

    git = Repo(repo)
    name, selector = release_ref(ref, version)
    return quick.check(git, name, selector, checking.requests(git, with_, envs))


# -- life cycle --------------------------------------------------------------------------------
def promote(
    ref: str,
    stage: str,
    *,
    version: str | None = None,
    note: str | None = None,
    require: Sequence[str] = (),
    require_better: Sequence[str] = (),
    repo: PathLike = ".",
    progress: Any = None,
) -> StageChange:
    """Put a release in ``stage`` (e.g. "prod"); validates it first if needed.

    Refused (kgit.registry.gates.GateError) unless its metrics pass each ``require`` rule ("val.accuracy>=0.9"),
    are strictly better on each ``require_better`` key than the stage's last holder (the version in
    the stage now, or the last one there if it was demoted since), and pass the rules for the stage
    committed in ``.kgit/gates.yaml``."""
    from kgit.workflow import stages

    name, selector = release_ref(ref, version)
    return stages.promote(
        Repo(repo), name, selector, stage, note=note, progress=progress, require=require, require_better=require_better
    )


def rollback(
    name: str, stage: str, *, to: str | None = None, note: str | None = None, repo: PathLike = ".", progress: Any = None
) -> StageChange:
    """Put back in ``stage`` a version of model ``name`` that held it before: ``to`` (e.g. "v2"), or
    by default the one that held it before the current (or last, if demoted) holder. Validates it
    first if needed. The stage's gates apply as to ``promote``, except the require_better rules of
    entries that set ``allow_rollback: true`` in ``.kgit/gates.yaml`` (kgit.registry.gates.GateError otherwise)."""
    from kgit.workflow import stages

    check_name(name)
    return stages.rollback(Repo(repo), name, stage, to=to, note=note, progress=progress)


def demote(name: str, stage: str, *, note: str | None = None, repo: PathLike = ".") -> StageChange:
    """Take ``stage`` away from whichever version of model ``name`` holds it."""
    from kgit.workflow import stages

    check_name(name)
    return stages.demote(Repo(repo), name, stage, note=note)


def deprecate(ref: str, *, version: str | None = None, note: str | None = None, repo: PathLike = ".") -> StageChange:
    """Deprecate a release: the data stays; it can no longer be promoted or resolved as latest."""
    from kgit.workflow import stages

    name, selector = release_ref(ref, version)
    return stages.deprecate(Repo(repo), name, selector, note=note)


def history(name: str, *, stage: str | None = None, repo: PathLike = ".") -> list[catalog.HistoryEvent]:
    """Every event of a model (released, promoted, rolled back, demoted, deprecated) with who, when,
    the commit and the note given (``--note``); with ``stage``, only that stage's. A rollback is a promotion tag
    whose message says so and that goes back to a version that held the stage before
    (kgit.registry.stage_checks)."""
    from dataclasses import replace

    from kgit.registry import stage_checks
    from kgit.registry.versions import check_stage

    check_name(name)
    if stage is not None:
        check_stage(stage)
    git = Repo(repo)
    reg = catalog.read(git, name)
    if not reg.events:
        raise catalog.no_model(git, name)
    rolled = stage_checks.rollbacks(git, reg, name)
    notes = stage_checks.event_notes(git, [name])
    return [
        replace(e, event="rolled back" if e.tag in rolled else e.event, note=notes.get(e.tag))
        for e in reg.events
        if stage is None or e.stage == stage
    ]


def holders_at(name: str, at: str | datetime, *, stage: str | None = None, repo: PathLike = ".") -> list[Holding]:
    """Which version held each stage of model ``name`` (or only ``stage``) at the moment ``at``
    ("2026-11-01 12:00" in local time, ISO 8601 with a zone, or an aware datetime), with the event
    that put it there (who, when, note), from the stage tags and their tagger dates alone
    (kgit.registry.stage_history). A stage empty then has ``version`` None and its first promotion."""
    from kgit.registry import stage_history

    moment = stage_history.parse_moment(at) if isinstance(at, str) else at
    if moment.tzinfo is None:
        moment = moment.astimezone()
    events = history(name, stage=stage, repo=repo)
    stages = [stage] if stage is not None else stage_history.stages_of(events, name)
    return [stage_history.holding_at(events, name, s, moment) for s in stages]


# -- the registry page -------------------------------------------------------------------------
def report(names: list[str] | None = None, *, out: PathLike = "kgit-report", repo: PathLike = ".") -> ReportResult:
    """Write the static registry site (index.html, a page per model and per version) into ``out``,
    from git alone; returns a ReportResult (``out``, ``index``, ``models``, ...). See ``kgit report --help``."""
    from kgit import reporting

    return reporting.build(Repo(repo), names, out)


# -- storage -----------------------------------------------------------------------------------
def gc(
    *,
    keep_last: int | str | None = None,
    keep_stages: bool | None = None,
    keep_signed: bool | None = None,
    keep_refs: Sequence[str] = (),
    remote: str | None = None,
    delete: bool = False,
    repo: PathLike = ".",
    progress: Any = None,
) -> Any:
    """Plan, and with ``delete=True`` carry out, the collection of the DVC objects that only releases
    outside the retention policy have (``.kgit/retention.yaml``; each argument given replaces its key):
    from the local DVC cache, and with ``remote`` (a DVC remote's name, "" for the default) from that
    remote too. Never an object a kept release or any other DVC output of any commit needs. Returns a
    GcResult (``kept``, ``dropped``, ``stores`` with the bytes each reclaims). See ``kgit gc --help``."""
    from kgit.workflow import project, retention

    git = Repo(repo)
    project.require_initialised(git)
    policy = retention.read_policy(
        git,
        keep_last=keep_last,
        keep_stages=keep_stages,
        keep_signed=keep_signed,
        keep_refs=tuple(keep_refs) or None,
    )
    return retention.gc(git, policy, remote=remote, delete=delete, log=progress)


# -- checks ------------------------------------------------------------------------------------
def validate(
    refs: list[str] | None = None,
    *,
    all: bool = False,
    formats: list[str] | None = None,
    recheck: bool = False,
    repo: PathLike = ".",
    progress: Any = None,
    unsafe: bool = False,
) -> list[FolderResult]:
    """Check released versions (see kgit.workflow.validating); returns one result per version and format.
    With ``all`` (or no ``refs``), every release; inside the pre-push hook's validation stage, the
    releases being pushed. ``formats``: only these formats of the releases ``refs`` names, whose
    data must be here (a format not released, or not fetched, is refused before anything is loaded).
    ``unsafe``: let the round trip run the code a release carries (a Lambda layer); without it such
    a release fails its ``code`` check (unless validated here before)."""
    from kgit.guard import client_hooks
    from kgit.workflow import validating

    git = Repo(repo)
    if formats and not refs:
        refs = None  # refused by targets_for: formats are checked in named releases
    elif all or not refs:
        refs = client_hooks.stage_targets()
    return validating.check(
        git, validating.targets_for(git, refs, formats), use_record=not recheck, progress=progress, unsafe=unsafe
    )


def verify(refs: list[str] | None = None, *, repo: PathLike = ".") -> list[FolderResult]:
    """Check the signatures of releases (all when ``refs`` is None) against the trusted keys."""
    from kgit.workflow import validating

    git = Repo(repo)
    return validating.verify_signatures(git, validating.targets_for(git, refs))


def check(since: str | None = None, *, data: bool = True, repo: PathLike = ".") -> list[str]:
    """What kgit's server hook would refuse, found in a clone (for CI on hosted forges): one line
    per problem, empty when all is well."""
    from kgit.guard import server

    return server.check_clone(Repo(repo), since, check_data=data)


# -- signing keys ------------------------------------------------------------------------------
def keys_init(
    *, private_key: PathLike | None = None, name: str | None = None, require: bool = False, repo: PathLike = "."
) -> dict[str, Any]:
    """Create (or register) this user's signing key; commit its public key and the policy."""
    from pathlib import Path

    from kgit.store import txn
    from kgit.trust import signing

    git = Repo(repo)
    with txn.writing(git):
        return signing.init_keys(
            git, private_key=Path(private_key) if private_key else None, name=name, require=require
        )


def keys_trust(public_key: PathLike, *, name: str | None = None, repo: PathLike = ".") -> dict[str, Any]:
    """Add a teammate's public key, endorsed with this user's key when it is trusted."""
    from pathlib import Path

    from kgit.store import txn
    from kgit.trust import signing

    git = Repo(repo)
    with txn.writing(git):
        return signing.trust(git, Path(public_key), name)


def keys_accept(fingerprint: str | None = None, *, policy: str | None = None, repo: PathLike = ".") -> dict[str, Any]:
    """Trust a key of the repository, or a signing policy, in this clone only."""
    from kgit.trust import signing

    return signing.accept(Repo(repo), fingerprint, policy)


def keys_policy(value: str | None = None, *, repo: PathLike = ".") -> dict[str, Any]:
    """The signing policy in force (``value`` None), or set it to ``value``."""
    from kgit.store import txn
    from kgit.trust import keyring, signing

    git = Repo(repo)
    if value is None:
        t = keyring.effective(git)
        return {"policy": t.policy, "note": t.note}
    with txn.writing(git):
        return signing.set_policy(git, value)


def keys_list(*, repo: PathLike = ".") -> dict[str, Any]:
    """The repository's public keys with their trust in this clone, the policy, and this user's key."""
    from kgit.trust import signing

    return signing.overview(Repo(repo))
