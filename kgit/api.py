"""The Python API the CLI and users call. Heavy work is imported lazily inside each function."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from kgit import registry
from kgit.errors import KgitError, ReleaseNotFoundError
from kgit.git_ops import Repo
from kgit.metadata import Metadata
from kgit.releasing import ReleaseRecord, release
from kgit.versions import check_name

__all__ = ["release", "load", "get", "diff", "list_releases", "show", "init", "validate", "promote", "demote",
           "deprecate", "history", "verify", "report", "ReleaseRecord"]


def init(path: str | os.PathLike[str] = ".", remote: str | None = None) -> Any:
    """Set up the git repository at ``path`` for kgit (idempotent). See ``kgit init --help``."""
    from kgit import project, txn

    repo = Repo(path)
    with txn.repo_lock(repo):
        txn.recover(repo)
        return project.init(path, remote=remote)


def list_releases(name: str | None = None, repo: str | os.PathLike[str] = ".", *,
                  sort: str | None = None, columns: Sequence[str] = ()) -> list[registry.Release]:
    """Every release (of one model if ``name``), from git tags alone; with ``sort`` (a metric key),
    best first (direction from ``.kgit/gates.yaml``, default higher is better), those without it last.
    ``columns``: metric keys the caller will show, checked to be valid metric names."""
    from kgit import metrics

    for key in columns:
        metrics.check_key(key, "--metric")
    git = Repo(repo)
    rels = registry.releases(git, name)
    if sort is None:
        return rels
    from kgit import gates

    metrics.check_key(sort, "--sort")
    return metrics.sort_releases(rels, sort, gates.directions(git).get(sort, "max"))


def read_metrics(file: str | os.PathLike[str] | None = None, items: Sequence[str] = ()) -> dict[str, float]:
    """Metrics from a JSON/YAML file (nested keys joined with dots: ``val.accuracy``) and from
    ``KEY=VALUE`` items, which win; every value a finite number, or a KgitError naming the key."""
    from pathlib import Path

    from kgit import metrics

    return metrics.combine(metrics.read_file(Path(file)) if file is not None else {}, metrics.parse_assignments(items))


def read_params_file(file: str | os.PathLike[str]) -> dict[str, Any]:
    """Hyperparameters from a YAML/JSON file (e.g. DVC's params.yaml), read safely and bounded."""
    from pathlib import Path

    from kgit import bounded_yaml

    loaded = bounded_yaml.read_file(Path(file), f"--params {file}")
    if loaded is not None and not isinstance(loaded, dict):
        raise KgitError(f"--params {file} must hold a mapping of names to values")
    return dict(loaded or {})


def show(name: str, version: str = "latest", fmt: str | None = None, repo: str | os.PathLike[str] = ".") -> Metadata:
    """Metadata of ``name@version`` (or ``version="#prod"``), from git alone (works before `dvc pull`)."""
    git = Repo(repo)
    return registry.metadata(git, registry.resolve(git, name, version), fmt)


def get(ref: str, *, formats: list[str] | None = None, repo: str | os.PathLike[str] = ".") -> Any:
    """Fetch the data of ``NAME@VERSION`` (or ``NAME@latest``) from the DVC remote, verified."""
    from kgit import fetch
    from kgit.versions import parse_ref

    name, version = parse_ref(ref)
    return fetch.get(name, version, formats=formats, repo=Repo(repo))


def verify(refs: list[str] | None = None, *, repo: str | os.PathLike[str] = ".") -> list[Any]:
    """Check the signatures of releases (all when ``refs`` is None) against the trusted keys."""
    from kgit import checking

    git = Repo(repo)
    return checking.verify_signatures(git, checking.targets_for(git, refs))


def promote(ref: str, stage: str, *, note: str | None = None, require: Sequence[str] = (),
            require_better: Sequence[str] = (), repo: str | os.PathLike[str] = ".", progress: Any = None) -> Any:
    """Put a release (``NAME@VERSION``) in ``stage`` (e.g. "prod"); validates it first if needed.

    Refused (kgit.gates.GateError) unless its metrics pass each ``require`` rule ("val.accuracy>=0.9"),
    are strictly better than the version in the stage now on each ``require_better`` key, and pass
    the rules for the stage committed in ``.kgit/gates.yaml``."""
    from kgit import stages
    from kgit.versions import parse_ref

    name, version = parse_ref(ref)
    return stages.promote(Repo(repo), name, version, stage, note=note, progress=progress, require=require,
                          require_better=require_better)


def demote(name: str, stage: str, *, note: str | None = None, repo: str | os.PathLike[str] = ".") -> Any:
    """Take ``stage`` away from whichever version of ``name`` holds it."""
    from kgit import stages

    check_name(name)
    return stages.demote(Repo(repo), name, stage, note=note)


def deprecate(ref: str, *, note: str | None = None, repo: str | os.PathLike[str] = ".") -> Any:
    """Deprecate ``NAME@VERSION``: the data stays; it can no longer be promoted or resolved as latest."""
    from kgit import stages
    from kgit.versions import parse_ref

    name, version = parse_ref(ref)
    return stages.deprecate(Repo(repo), name, version, note=note)


def history(name: str, *, repo: str | os.PathLike[str] = ".") -> list[registry.HistoryEvent]:
    """Every event of a model (released, promoted, demoted, deprecated) with who, when and the commit."""
    check_name(name)
    events = registry.read(Repo(repo), name).events
    if not events:
        raise ReleaseNotFoundError(f"no releases of model {name!r}: see `kgit list`")
    return events


def report(names: list[str] | None = None, *, out: str | os.PathLike[str] = "kgit-report",
           repo: str | os.PathLike[str] = ".") -> Any:
    """Write the static registry site (index.html, a page per model and per version) into ``out``,
    from git alone; returns a ReportResult (``out``, ``index``, ``models``, ...). See ``kgit report --help``."""
    from kgit import reporting

    return reporting.build(Repo(repo), names, out)


def diff(ref_a: str, ref_b: str, *, repo: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """What changed between two releases (hyperparameters, dataset, signature, formats, sizes,
    library versions...), from git alone."""
    from kgit import diffing

    return diffing.diff(Repo(repo), ref_a, ref_b)


def load(name: str, version: str = "latest", format: str | None = None, *, stage: str | None = None,
         repo: str | os.PathLike[str] = ".", custom_objects: dict[str, Any] | None = None) -> Any:
    """The Keras model released as ``name@version`` (``latest`` = highest not deprecated; or
    ``stage="prod"`` / ``version="#prod"`` for the version in a stage).

    Full-model formats (savedmodel, keras, h5) come back compiled with their optimizer state, so
    training resumes; ``weights`` is rebuilt with the recorded builder. ``format`` defaults to the
    first format of the release that can give a Keras model.
    """
    from kgit import formats as fmts
    from kgit import usercode

    check_name(name)
    if stage is not None:
        from kgit.versions import check_stage

        version = f"#{check_stage(stage)}"
    git = Repo(repo)
    rel = registry.resolve(git, name, version)
    fmt = format or next(iter(rel.formats))
    if fmt not in rel.formats:
        raise ReleaseNotFoundError(f"{name}@{rel.version} has no {fmt} format (it has {', '.join(rel.formats)})")
    folder = git.root / rel.formats[fmt]["path"]
    if not (folder / "metadata.json").exists():  # not here yet: fetch that version only
        from kgit import fetch

        fetch.get(name, rel.version, formats=[fmt], repo=git)
    from kgit.checking import verified_metadata

    meta = verified_metadata(git, rel, fmt)
    custom = usercode.load_custom_objects(meta.custom_objects)
    custom.update(custom_objects or {})
    return fmts.load_keras_model(folder, fmt, custom_objects=custom, modules=meta.custom_modules,
                                 builder=meta.builder, unsafe=meta.unsafe, sig=meta.signature)


VALIDATE_ONLY_ENV = "KGIT_VALIDATE_ONLY"


def validate(refs: list[str] | None = None, *, all: bool = False, recheck: bool = False,
             repo: str | os.PathLike[str] = ".", progress: Any = None) -> list[Any]:
    """Check released versions (see kgit.checking); returns one result per version and format.

    With ``all`` (or no ``refs``) every release is checked, unless the environment variable
    KGIT_VALIDATE_ONLY (space-separated NAME@VERSION, set by the pre-push hook when it runs the
    dvc.yaml stage) narrows it down.
    """
    from kgit import checking

    git = Repo(repo)
    if all or not refs:
        only = os.environ.get(VALIDATE_ONLY_ENV)
        refs = only.split() if only is not None else None
    targets = checking.targets_for(git, refs)
    return checking.check(git, targets, use_record=not recheck, progress=progress)
