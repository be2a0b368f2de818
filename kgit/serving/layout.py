"""TensorFlow Serving layout (``kgit serve-layout``): released SavedModels laid out as TF Serving reads them.

    OUT/models.config       text-format ModelServerConfig: per model its base path, versions and labels
    OUT/kgit-serving.json   the manifest: what kgit laid out, per model and serving version, from which release
    OUT/NAME/<integer>/     one release's SavedModel files (hard links to the work tree's copy, or copies)

TF Serving loads only all-digit version folders, so each version is built under a dot-name inside
OUT/NAME and renamed into place when complete; models.config and the manifest are replaced atomically;
a version no longer selected is dropped from models.config first, then renamed out of the way and
deleted. A running server never sees a half-written version or config. Nothing here imports
TensorFlow; DVC only when a release's data has to be fetched first. The version numbers and the two
files' formats are in kgit.serving.serving_config.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError, ReleaseNotFoundError
from kgit.core.fsutil import exclusive
from kgit.core.layout import ARTIFACTS_DIR, METADATA_FILE
from kgit.core.metadata import Metadata, sha256_file
from kgit.registry import catalog
from kgit.registry.versions import check_name, parse_ref
from kgit.serving.serving_config import (
    CONFIG_FILE,
    MANIFEST_FILE,
    Entry,
    Manifest,
    ServedModel,
    config_text,
    manifest_text,
    read_manifest,
    serving_version,
    write_if_changed,
)
from kgit.store.git_ops import Repo

FORMAT = "savedmodel"
# Names TF Serving never loads (not all digits) and kgit owns inside OUT/NAME: leftovers are removed.
_NEW, _OLD = ".kgit-new-", ".kgit-old-"


# -- results ------------------------------------------------------------------------------------
@dataclass
class ServedVersion:
    model: str
    version: str
    tag: str
    serving_version: int
    labels: list[str]
    action: str  # added, kept, removed
    how: str | None  # hardlink or copy (None: removed)
    path: str
    deprecated: bool = False


@dataclass
class Layout:
    out: str
    config: str
    manifest: str
    changed: bool  # False: the folder already held exactly this selection, nothing was written
    models: list[ServedModel] = field(default_factory=list)
    versions: list[ServedVersion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a running server needs to know about this change

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- what to serve ------------------------------------------------------------------------------
def _resolve(repo: Repo, ref: str) -> list[catalog.Release]:
    """``NAME@VERSION``, ``NAME@latest``, ``NAME#STAGE``; a bare ``NAME`` is every version in a stage."""
    if "@" in ref or "#" in ref:
        name, selector = parse_ref(ref)
        return [catalog.resolve(repo, name, selector)]
    name = check_name(ref)
    found = catalog.read(repo, name).releases
    stages = sorted({s for r in found if r.valid for s in r.stages})
    if not found:
        raise catalog.no_model(repo, name)
    if not stages:
        raise ReleaseNotFoundError(
            f"no version of {name} is in a stage: name one ({name}@VERSION or {name}@latest) "
            f"or promote one (kgit promote {name}@VERSION prod)"
        )
    return [catalog.resolve(repo, name, f"#{s}") for s in stages]


def _select(repo: Repo, refs: list[str]) -> dict[str, dict[int, catalog.Release]]:
    chosen: dict[str, dict[int, catalog.Release]] = {}
    for ref in refs:
        for rel in _resolve(repo, ref):
            if FORMAT not in rel.formats:
                files = {"keras": "model.keras", "h5": "model.h5"}
                source = next((f"{rel.formats[f]['path']}/{files[f]}" for f in files if f in rel.formats), None)
                example = f" (e.g. kgit release {rel.name} --from {source} -f savedmodel)" if source else ""
                raise KgitError(
                    f"{rel.name}@{rel.version} has no savedmodel format (it has {', '.join(rel.formats)}), and TF "
                    f"Serving reads SavedModels: release the model again with --format savedmodel{example}"
                )
            chosen.setdefault(rel.name, {})[serving_version(rel.version)] = rel
    return chosen


def _source(repo: Repo, rel: catalog.Release) -> tuple[Path, Metadata]:
    """The release's savedmodel folder in the work tree, fetched if absent, verified against git."""
    from kgit.workflow.validating import verified_metadata

    folder = repo.root / rel.formats[FORMAT]["path"]
    if not (folder / METADATA_FILE).exists():  # not here yet: fetch that version's savedmodel only
        from kgit.workflow import fetch

        fetch.get(rel.name, rel.version, formats=[FORMAT], repo=repo)
    return folder, verified_metadata(repo, rel, FORMAT)


# -- laying out ---------------------------------------------------------------------------------
def _served_files(meta: Metadata) -> list[str]:
    """What TF Serving needs and what says where it came from: every released file but kgit's own
    extras for training (``assets.extra/``: the Keras copy and the map of its weights in variables/),
    the tensor objects of a packed release (the assembled files are served) and the signature over
    the whole folder."""
    from kgit.core.packing import MANIFEST, PACK_DIR
    from kgit.models.savedmodel import KERAS_FILE, WEIGHTS_MAP

    return [
        rel
        for rel in sorted(meta.files)
        if rel not in (KERAS_FILE, WEIGHTS_MAP, MANIFEST) and not rel.startswith(PACK_DIR + "/")
    ] + [METADATA_FILE]


def _build(src: Path, dest: Path, meta: Metadata, copy: bool) -> tuple[str, dict[str, list[Any]]]:
    """Lay out one version at ``dest``: built under a dot-name beside it, checked, renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_NEW}{dest.name}-", dir=dest.parent))
    how = "copy" if copy else "hardlink"
    files: dict[str, list[Any]] = {}
    try:
        for rel in _served_files(meta):
            source, target = src / rel, tmp / rel
            if source.is_symlink():
                raise KgitError(
                    f"{source} is a symlink: release folders hold regular files only (kgit validate says more)"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            if how == "hardlink":
                try:
                    os.link(source, target)
                except OSError:  # another file system, or links not allowed: copies from here on
                    how = "copy"
            if how == "copy":
                shutil.copyfile(source, target)
            digest = sha256_file(target)
            expected = meta.files.get(rel) if rel != METADATA_FILE else digest
            if digest != expected:
                raise KgitError(
                    f"{source} changed while it was being laid out: check it with `kgit validate "
                    f"{meta.name}@{meta.version}` and rerun"
                )
            files[rel] = [digest, target.stat().st_size]
        if Metadata.read(tmp).to_dict() != meta.to_dict():
            raise KgitError(f"{src / METADATA_FILE} changed while it was being laid out: rerun")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return how, files


def _remove(folder: Path) -> None:
    """Rename a version folder out of TF Serving's sight first, then delete it."""
    if not folder.exists():
        return
    gone = Path(tempfile.mkdtemp(prefix=f"{_OLD}{folder.name}-", dir=folder.parent))
    os.rename(folder, gone / folder.name)
    shutil.rmtree(gone)


def _unchanged_problem(folder: Path, entry: Entry) -> str | None:
    """Cheap check of a laid-out folder against the manifest: same files, same sizes."""
    have = {}
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            full = Path(dirpath) / name
            have[full.relative_to(folder).as_posix()] = full.lstat().st_size
    want = {rel: size for rel, (_sha, size) in entry.files.items()}
    if have == want:
        return None
    diff = sorted(set(have) ^ set(want)) or sorted(r for r in have if have[r] != want.get(r))
    return f"{folder} was changed after kgit laid it out ({', '.join(diff[:3])}): delete that folder and rerun"


def _locked(out: Path) -> contextlib.AbstractContextManager[None]:
    return exclusive(out, f"another kgit serve-layout is writing {out}: wait for it to finish and retry")


def _check_out(repo: Repo, out: Path, manifest: Manifest | None) -> None:
    """Refuse a folder kgit would write into a release or over someone else's files."""
    artifacts, real = (repo.root / ARTIFACTS_DIR).resolve(), out.resolve()
    if real == artifacts or artifacts in real.parents or real in (repo.root, repo.git_dir):
        raise KgitError(f"--out {out} is inside the repository's releases: give a folder outside {artifacts}")
    if manifest is None and out.exists() and any(out.iterdir()):
        first = sorted(p.name for p in out.iterdir())[0]
        raise KgitError(
            f"{out} is not empty ({first}) and holds no {MANIFEST_FILE}, so it is not a layout kgit made: "
            "give an empty or new folder (kgit never overwrites or deletes what it did not write)"
        )


def layout(
    repo: Repo,
    refs: list[str],
    out: Path,
    *,
    base_path: str | None = None,
    copy: bool = False,
    tf_serving_version: str | None = None,
) -> Layout:
    """Lay out the selected releases under ``out`` for TF Serving and bring models.config in sync.
    ``tf_serving_version``: refuse, before anything changes, a release whose graph uses an op that
    TensorFlow (Serving) of that version does not have (kgit.compat.graph_ops)."""
    if not refs:
        raise KgitError("name at least one release to serve (NAME, NAME#STAGE or NAME@VERSION)")
    if base_path is not None and not base_path.strip("/ "):
        raise KgitError("--base-path is empty: give the folder as the server sees it (e.g. /models)")
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise KgitError(f"--out {out} is a file: give a folder")
    if tf_serving_version is not None:
        from kgit.compat import graph_ops

        graph_ops.check_version(tf_serving_version)
    chosen = _select(repo, refs)
    _check_out(repo, out, read_manifest(out) if out.is_dir() else None)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(out):
            return _sync(repo, out, chosen, base_path, copy, tf_serving_version)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a refused first run leaves no folder behind
        raise


@dataclass
class _Plan:
    """What a run will do, decided (and every new version fetched and verified) before OUT changes."""

    out: Path
    served: dict[str, ServedModel]  # the models as models.config will have them
    versions: list[ServedVersion]  # the rows of the result
    entries: dict[str, dict[int, Entry]]  # the manifest once done: kept entries now, built ones added
    build: list[tuple[catalog.Release, int, Path, Metadata]]  # release, number, verified source, metadata
    remove: list[tuple[str, int, Entry]]  # laid out before, no longer selected
    previous: dict[str, dict[int, Entry]]  # the manifest before the run
    notes: list[str]


def _plan(
    repo: Repo,
    out: Path,
    chosen: dict[str, dict[int, catalog.Release]],
    base_path: str | None,
    recorded: Manifest | None,
) -> _Plan:
    old = recorded.models if recorded else {}
    old_labels = recorded.labels if recorded else {}
    plan = _Plan(out, {}, [], {}, [], [], old, [])
    for name, by_number in sorted(chosen.items()):
        if name not in old and os.path.lexists(out / name):
            raise KgitError(f"{out / name} exists and was not laid out by kgit: move it away, or give another --out")
        base = f"{base_path.rstrip('/')}/{name}" if base_path else str(out / name)
        labels = {stage: n for n, rel in by_number.items() for stage in rel.stages}
        plan.served[name] = ServedModel(name, base, sorted(by_number), dict(sorted(labels.items())))
        plan.entries[name] = {}
        for number, rel in sorted(by_number.items()):
            folder = out / name / str(number)
            md5 = str(rel.formats[FORMAT].get("md5"))
            entry = old.get(name, {}).get(number)
            if entry is not None and (entry.tag, entry.md5) != (rel.tag, md5):
                raise KgitError(
                    f"{folder} holds {entry.tag} with DVC hash {entry.md5[:12]}, but {rel.tag} has {md5[:12]}: "
                    "it was laid out from another repository; give another --out"
                )
            if entry is None and os.path.lexists(folder):
                raise KgitError(f"{folder} exists and was not laid out by kgit: move it away, or give another --out")
            # "pending": recorded by a run that stopped before finishing; its folder, if any, is redone
            kept = entry is not None and entry.how != "pending" and folder.is_dir()
            if kept:
                assert entry is not None
                problem = _unchanged_problem(folder, entry)
                if problem:
                    raise KgitError(problem)
                plan.entries[name][number] = entry
            else:  # fetched and verified now, before anything in OUT changes
                src, meta = _source(repo, rel)
                plan.build.append((rel, number, src, meta))
            plan.versions.append(
                ServedVersion(
                    name,
                    rel.version,
                    rel.tag,
                    number,
                    sorted(rel.stages),
                    "kept" if kept else "added",
                    entry.how if kept and entry else None,
                    str(folder),
                    rel.deprecated,
                )
            )
    plan.remove = [
        (name, n, e)
        for name, entries in sorted(old.items())
        for n, e in sorted(entries.items())
        if n not in chosen.get(name, {})
    ]
    added = {(rel.name, n) for rel, n, _s, _m in plan.build}
    plan.notes = [
        f"label {label} of {name} moves to {n}, which this run added: a running TF Serving applies that only "
        "when started with --force_allow_any_version_labels_for_unavailable_models=true (or lay a version "
        "out before promoting it, then rerun)"
        for name, m in sorted(plan.served.items())
        for label, n in m.labels.items()
        if (name, n) in added and old_labels.get(name, {}).get(label, n) != n
    ]
    return plan


def _sync(
    repo: Repo,
    out: Path,
    chosen: dict[str, dict[int, catalog.Release]],
    base_path: str | None,
    copy: bool,
    tf_serving_version: str | None = None,
) -> Layout:
    recorded = read_manifest(out)
    _check_out(repo, out, recorded)
    for name in set(recorded.models if recorded else {}) | set(chosen):  # leftovers of an interrupted run
        model_dir = out / name
        for leftover in model_dir.glob(".kgit-*") if model_dir.is_dir() else []:
            if leftover.name.startswith((_NEW, _OLD)):  # names only kgit uses
                shutil.rmtree(leftover, ignore_errors=True)
    plan = _plan(repo, out, chosen, base_path, recorded)
    if tf_serving_version is not None:
        plan.notes.append(_check_ops(plan, tf_serving_version))
    return _apply(plan, copy)


def _check_ops(plan: _Plan, version: str) -> str:
    """Refuse (KgitError naming each release and op) if a selected release's graph uses an op that
    TensorFlow ``version`` lacks; else the note saying what was checked."""
    from kgit.compat import graph_ops

    have, exact = graph_ops.tf_ops(version)
    graphs = [(rel.tag, src / graph_ops.SAVED_MODEL_FILE) for rel, _n, src, _m in plan.build]
    graphs += [
        (e.tag, plan.out / name / str(n) / graph_ops.SAVED_MODEL_FILE)
        for name, entries in plan.entries.items()
        for n, e in entries.items()
    ]
    refused = []
    for tag, graph in sorted(graphs):
        used, written_by = graph_ops.saved_model_ops(graph)
        missing = sorted(used - have)
        if missing:
            refused.append(
                f"{tag} uses {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
                + (f" (written by TensorFlow {written_by})" if written_by else "")
            )
    if refused:
        raise KgitError(
            f"TensorFlow Serving {version} (TensorFlow {exact}) lacks ops these releases use: "
            f"{'; '.join(refused)}: serve them with a newer TensorFlow Serving, or release the model "
            "again from a TensorFlow that version has; nothing was laid out"
        )
    return f"every graph uses only ops TensorFlow Serving {version} has (TensorFlow {exact}: {len(have)} ops)"


def _apply(plan: _Plan, copy: bool) -> Layout:
    """Build new versions, then switch models.config, then remove what is no longer selected."""
    out, old, new = plan.out, plan.previous, plan.entries
    config, manifest = out / CONFIG_FILE, out / MANIFEST_FILE
    changed = False
    if plan.build:  # recorded before they exist, so a crash never leaves an unrecorded version folder
        pending = {
            name: {
                **old.get(name, {}),
                **new.get(name, {}),
                **{
                    n: Entry(rel.version, rel.tag, str(rel.formats[FORMAT].get("md5")), "pending", {})
                    for rel, n, _s, _m in plan.build
                    if rel.name == name
                },
            }
            for name in set(old) | set(new)
        }
        changed |= write_if_changed(manifest, manifest_text(pending, plan.served))
    for rel, number, src, meta in plan.build:
        _remove(out / rel.name / str(number))  # only ever a folder the manifest records (checked in _plan)
        how, files = _build(src, out / rel.name / str(number), meta, copy)
        new[rel.name][number] = Entry(rel.version, rel.tag, str(rel.formats[FORMAT].get("md5")), how, files)
        for v in plan.versions:
            if v.model == rel.name and v.serving_version == number:
                v.how = how
        changed = True
    changed |= write_if_changed(config, config_text(list(plan.served.values())))
    for name, number, entry in plan.remove:
        _remove(out / name / str(number))
        plan.versions.append(
            ServedVersion(name, entry.version, entry.tag, number, [], "removed", None, str(out / name / str(number)))
        )
        changed = True
    for name in set(old) - set(new):  # a model no longer served: its folder goes if nothing else is in it
        with contextlib.suppress(OSError):
            (out / name).rmdir()
    changed |= write_if_changed(manifest, manifest_text(new, plan.served))
    return Layout(
        str(out),
        str(config),
        str(manifest),
        changed,
        sorted(plan.served.values(), key=lambda m: m.name),
        plan.versions,
        plan.notes,
    )
