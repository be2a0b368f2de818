"""TensorFlow Serving layout (``kgit serve-layout``): released SavedModels laid out as TF Serving reads them.

    OUT/models.config       text-format ModelServerConfig: per model its base path, versions and labels
    OUT/kgit-serving.json   the manifest: what kgit laid out, per model and serving version, from which release
    OUT/NAME/<integer>/     one release's SavedModel files (hard links to the work tree's copy, or copies)

TF Serving loads only all-digit version folders, so each version is built under a dot-name inside
OUT/NAME and renamed into place when complete; models.config and the manifest are replaced atomically;
a version no longer selected is dropped from models.config first, then renamed out of the way and
deleted. A running server never sees a half-written version or config. Nothing here imports
TensorFlow; DVC only when a release's data has to be fetched first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kgit import registry
from kgit.errors import BusyError, InvalidVersionError, KgitError, ReleaseNotFoundError
from kgit.git_ops import Repo
from kgit.metadata import ARTIFACTS_DIR, METADATA_FILE, Metadata, sha256_file
from kgit.versions import Version, check_name, parse_ref

CONFIG_FILE = "models.config"
MANIFEST_FILE = "kgit-serving.json"
MANIFEST_SCHEMA = 1
FORMAT = "savedmodel"
# Names TF Serving never loads (not all digits) and kgit owns inside OUT/NAME: leftovers are removed.
_NEW, _OLD = ".kgit-new-", ".kgit-old-"
PART_LIMIT = 1000  # minor and patch must stay below this for the serving number to be unique


def serving_version(version: str) -> int:
    """The integer folder TF Serving loads for a release version: MAJOR*1000000 + MINOR*1000 + PATCH
    (``v3`` and ``v3.0.0`` -> 3000000, ``v1.2.3`` -> 1002003). A function of the version alone, so
    stable per release, unique per model, and ordered like the versions (TF Serving serves the
    highest number when a request names no version or label)."""
    v = Version.parse(version)
    if v.minor >= PART_LIMIT or v.patch >= PART_LIMIT:
        raise InvalidVersionError(
            f"{version} has no TensorFlow Serving version number: kgit maps vMAJOR.MINOR.PATCH to "
            f"MAJOR*1000000 + MINOR*1000 + PATCH, so minor and patch must be below {PART_LIMIT}; serve another version")
    return v.major * 1_000_000 + v.minor * 1_000 + v.patch


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
class ServedModel:
    name: str
    base_path: str
    versions: list[int]
    labels: dict[str, int]  # stage -> serving version


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


# -- models.config ------------------------------------------------------------------------------
def _quote(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII as is, every other byte as an octal escape."""
    out = []
    for b in text.encode("utf-8"):
        ch = chr(b)
        out.append("\\" + ch if ch in '"\\' else ch if 0x20 <= b < 0x7F else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def config_text(models: list[ServedModel]) -> str:
    """The ``ModelServerConfig`` TF Serving reads with ``--model_config_file`` (text format)."""
    lines = ["# Written by kgit serve-layout from the release tags: rerun it instead of editing this file.",
             "model_config_list {"]
    for m in sorted(models, key=lambda m: m.name):
        lines += ["  config {", f"    name: {_quote(m.name)}", f"    base_path: {_quote(m.base_path)}",
                  '    model_platform: "tensorflow"', "    model_version_policy {", "      specific {"]
        lines += [f"        versions: {n}" for n in sorted(m.versions)]
        lines += ["      }", "    }"]
        for label, n in sorted(m.labels.items()):
            lines += ["    version_labels {", f"      key: {_quote(label)}", f"      value: {n}", "    }"]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- the manifest -------------------------------------------------------------------------------
@dataclass
class _Entry:
    """One laid-out version, as the manifest records it."""

    version: str
    tag: str
    md5: str
    how: str
    files: dict[str, list[Any]]  # relative path -> [sha256, size]


@dataclass
class _Manifest:
    models: dict[str, dict[int, _Entry]]
    labels: dict[str, dict[str, int]]  # model -> label -> serving version, as models.config has them


def _read_manifest(out: Path) -> _Manifest | None:
    path = out / MANIFEST_FILE
    if not path.exists():
        return None
    bad = f"{path} is not a manifest kgit wrote"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") != MANIFEST_SCHEMA:
            raise KgitError(f"{bad} (schema_version {str(data.get('schema_version'))[:20]}): "
                            f"give another --out, or remove the folder if it is yours")
        models: dict[str, dict[int, _Entry]] = {}
        labels: dict[str, dict[str, int]] = {}
        for name, model in data["models"].items():
            check_name(name)
            models[name] = {}
            labels[name] = {str(k): int(v) for k, v in model["labels"].items()}
            for number, e in model["versions"].items():
                files = {str(k): [str(v[0]), int(v[1])] for k, v in e["files"].items()}
                entry = _Entry(str(e["version"]), str(e["tag"]), str(e["md5"]), str(e["how"]), files)
                if not number.isdigit() or int(number) != serving_version(entry.version):
                    raise ValueError(f"version folder {number} does not match {entry.version}")
                models[name][int(number)] = entry
        return _Manifest(models, labels)
    except KgitError as exc:
        if str(exc).startswith(bad):
            raise
        raise KgitError(f"{bad} ({exc}): give another --out, or remove the folder if it is yours") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        raise KgitError(f"{bad} ({type(exc).__name__}: {str(exc)[:80]}): give another --out, "
                        "or remove the folder if it is yours") from None


def _manifest_text(models: dict[str, dict[int, _Entry]], meta: dict[str, ServedModel]) -> str:
    data = {"schema_version": MANIFEST_SCHEMA, "written_by": "kgit serve-layout",
            "version_rule": "MAJOR*1000000 + MINOR*1000 + PATCH", "models": {
                name: {"base_path": meta[name].base_path if name in meta else None,
                       "labels": dict(sorted(meta[name].labels.items())) if name in meta else {},
                       "versions": {str(n): asdict(e) for n, e in sorted(entries.items())}}
                for name, entries in sorted(models.items())}}
    return json.dumps(data, indent=2) + "\n"


def _write_if_changed(path: Path, text: str) -> bool:
    from kgit.project import write_atomic

    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return False
    write_atomic(path, text)
    return True


# -- what to serve ------------------------------------------------------------------------------
def _resolve(repo: Repo, ref: str) -> list[registry.Release]:
    """``NAME@VERSION``, ``NAME@latest``, ``NAME#STAGE``; a bare ``NAME`` is every version in a stage."""
    if "@" in ref or "#" in ref:
        name, selector = parse_ref(ref)
        return [registry.resolve(repo, name, selector)]
    name = check_name(ref)
    found = registry.read(repo, name).releases
    stages = sorted({s for r in found if r.valid for s in r.stages})
    if not found:
        raise ReleaseNotFoundError(f"no releases of model {name!r}: see `kgit list`")
    if not stages:
        raise ReleaseNotFoundError(f"no version of {name} is in a stage: name one ({name}@VERSION or {name}@latest) "
                                   f"or promote one (kgit promote {name}@VERSION prod)")
    return [registry.resolve(repo, name, f"#{s}") for s in stages]


def _select(repo: Repo, refs: list[str]) -> dict[str, dict[int, registry.Release]]:
    chosen: dict[str, dict[int, registry.Release]] = {}
    for ref in refs:
        for rel in _resolve(repo, ref):
            if FORMAT not in rel.formats:
                files = {"keras": "model.keras", "h5": "model.h5"}
                source = next((f"{rel.formats[f]['path']}/{files[f]}" for f in files if f in rel.formats), None)
                example = f" (e.g. kgit release {rel.name} --from {source} -f savedmodel)" if source else ""
                raise KgitError(
                    f"{rel.name}@{rel.version} has no savedmodel format (it has {', '.join(rel.formats)}), and TF "
                    f"Serving reads SavedModels: release the model again with --format savedmodel{example}")
            chosen.setdefault(rel.name, {})[serving_version(rel.version)] = rel
    return chosen


def _source(repo: Repo, rel: registry.Release) -> tuple[Path, Metadata]:
    """The release's savedmodel folder in the work tree, fetched if absent, verified against git."""
    from kgit.checking import verified_metadata

    folder = repo.root / rel.formats[FORMAT]["path"]
    if not (folder / METADATA_FILE).exists():  # not here yet: fetch that version's savedmodel only
        from kgit import fetch

        fetch.get(rel.name, rel.version, formats=[FORMAT], repo=repo)
    return folder, verified_metadata(repo, rel, FORMAT)


# -- laying out ---------------------------------------------------------------------------------
def _served_files(meta: Metadata) -> list[str]:
    """What TF Serving needs and what says where it came from: every released file but the Keras copy
    kept for training (``assets.extra/model.keras``) and the signature over the whole folder."""
    from kgit.formats import SAVEDMODEL_KERAS

    return [rel for rel in sorted(meta.files) if rel != SAVEDMODEL_KERAS] + [METADATA_FILE]


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
                raise KgitError(f"{source} is a symlink: release folders hold regular files only (kgit validate says more)")
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
                raise KgitError(f"{source} changed while it was being laid out: check it with `kgit validate "
                                f"{meta.name}@{meta.version}` and rerun")
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


def _unchanged_problem(folder: Path, entry: _Entry) -> str | None:
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


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"another kgit serve-layout is writing {out}: wait for it to finish and retry") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _check_out(repo: Repo, out: Path, manifest: _Manifest | None) -> None:
    """Refuse a folder kgit would write into a release or over someone else's files."""
    artifacts, real = (repo.root / ARTIFACTS_DIR).resolve(), out.resolve()
    if real == artifacts or artifacts in real.parents or real in (repo.root, repo.git_dir):
        raise KgitError(f"--out {out} is inside the repository's releases: give a folder outside {artifacts}")
    if manifest is None and out.exists() and any(out.iterdir()):
        first = sorted(p.name for p in out.iterdir())[0]
        raise KgitError(f"{out} is not empty ({first}) and holds no {MANIFEST_FILE}, so it is not a layout kgit made: "
                        "give an empty or new folder (kgit never overwrites or deletes what it did not write)")


def layout(repo: Repo, refs: list[str], out: Path, *, base_path: str | None = None, copy: bool = False) -> Layout:
    """Lay out the selected releases under ``out`` for TF Serving and bring models.config in sync."""
    if not refs:
        raise KgitError("name at least one release to serve (NAME, NAME#STAGE or NAME@VERSION)")
    if base_path is not None and not base_path.strip("/ "):
        raise KgitError("--base-path is empty: give the folder as the server sees it (e.g. /models)")
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise KgitError(f"--out {out} is a file: give a folder")
    chosen = _select(repo, refs)
    _check_out(repo, out, _read_manifest(out) if out.is_dir() else None)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        return _sync(repo, out, chosen, base_path, copy)


def _sync(repo: Repo, out: Path, chosen: dict[str, dict[int, registry.Release]], base_path: str | None,
          copy: bool) -> Layout:
    recorded = _read_manifest(out)
    _check_out(repo, out, recorded)
    old = recorded.models if recorded else {}
    old_labels = recorded.labels if recorded else {}
    for name in set(old) | set(chosen):  # leftovers of an interrupted run (names only kgit uses)
        model_dir = out / name
        for leftover in model_dir.glob(".kgit-*") if model_dir.is_dir() else []:
            if leftover.name.startswith((_NEW, _OLD)):
                shutil.rmtree(leftover, ignore_errors=True)

    served: dict[str, ServedModel] = {}
    versions: list[ServedVersion] = []
    to_build: list[tuple[registry.Release, int, Path, Metadata]] = []
    new: dict[str, dict[int, _Entry]] = {}
    for name, by_number in sorted(chosen.items()):
        if name not in old and os.path.lexists(out / name):
            raise KgitError(f"{out / name} exists and was not laid out by kgit: move it away, or give another --out")
        base = f"{base_path.rstrip('/')}/{name}" if base_path else str(out / name)
        labels = {stage: n for n, rel in by_number.items() for stage in rel.stages}
        served[name] = ServedModel(name, base, sorted(by_number), dict(sorted(labels.items())))
        new[name] = {}
        for number, rel in sorted(by_number.items()):
            folder = out / name / str(number)
            md5 = str(rel.formats[FORMAT].get("md5"))
            entry = old.get(name, {}).get(number)
            if entry is not None and (entry.tag, entry.md5) != (rel.tag, md5):
                raise KgitError(f"{folder} holds {entry.tag} with DVC hash {entry.md5[:12]}, but {rel.tag} has {md5[:12]}: "
                                "it was laid out from another repository; give another --out")
            if entry is None and os.path.lexists(folder):
                raise KgitError(f"{folder} exists and was not laid out by kgit: move it away, or give another --out")
            # "pending": recorded by a run that stopped before finishing; its folder, if any, is redone
            action = "kept" if entry is not None and entry.how != "pending" and folder.is_dir() else "added"
            if action == "kept":
                assert entry is not None
                problem = _unchanged_problem(folder, entry)
                if problem:
                    raise KgitError(problem)
                new[name][number] = entry
            else:  # fetched and verified now, before anything in OUT changes
                src, meta = _source(repo, rel)
                to_build.append((rel, number, src, meta))
            versions.append(ServedVersion(name, rel.version, rel.tag, number, sorted(rel.stages), action,
                                          entry.how if entry is not None and action == "kept" else None,
                                          str(folder), rel.deprecated))
    removed = [(name, n, e) for name, entries in sorted(old.items()) for n, e in sorted(entries.items())
               if n not in chosen.get(name, {})]

    added = {(v.model, v.serving_version) for v in versions if v.action == "added"}
    notes = [f"label {label} of {name} moves to {n}, which this run added: a running TF Serving applies that only "
             "when started with --force_allow_any_version_labels_for_unavailable_models=true (or lay a version out "
             "before promoting it, then rerun)"
             for name, m in sorted(served.items()) for label, n in m.labels.items()
             if (name, n) in added and old_labels.get(name, {}).get(label, n) != n]

    config = out / CONFIG_FILE
    manifest = out / MANIFEST_FILE
    # Recorded before they exist, so a crash never leaves an unrecorded version folder behind.
    pending = {name: {**old.get(name, {}), **new.get(name, {}),
                      **{n: _Entry(rel.version, rel.tag, str(rel.formats[FORMAT].get("md5")), "pending", {})
                         for rel, n, _s, _m in to_build if rel.name == name}}
               for name in set(old) | set(new)}
    changed = False
    if to_build:
        changed |= _write_if_changed(manifest, _manifest_text(pending, served))
    for rel, number, src, meta in to_build:
        _remove(out / rel.name / str(number))  # only ever a folder the manifest records (checked above)
        how, files = _build(src, out / rel.name / str(number), meta, copy)
        new[rel.name][number] = _Entry(rel.version, rel.tag, str(rel.formats[FORMAT].get("md5")), how, files)
        for v in versions:
            if v.model == rel.name and v.serving_version == number:
                v.how = how
        changed = True
    changed |= _write_if_changed(config, config_text(list(served.values())))
    for name, number, entry in removed:
        _remove(out / name / str(number))
        versions.append(ServedVersion(name, entry.version, entry.tag, number, [], "removed", None, str(out / name / str(number))))
        changed = True
    for name in set(old) - set(chosen):  # a model no longer served: its folder goes if nothing else is in it
        with contextlib.suppress(OSError):
            (out / name).rmdir()
    changed |= _write_if_changed(manifest, _manifest_text(new, served))
    return Layout(str(out), str(config), str(manifest), changed, sorted(served.values(), key=lambda m: m.name),
                  versions, notes)
