"""``kgit get`` and ``kgit.load``: bring one released version's data into the work tree, and nothing else.

Each format of a version is its own DVC output, so fetching ``NAME@VERSION`` pulls exactly that
version's ``.dvc`` files from the DVC remote. What arrives is checked against the release (metadata
recorded in git, sha256 of every file) before it is reported as fetched; what fails that check is
removed from the work tree again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit.core import layout
from kgit.core.errors import KgitError, ReleaseMismatchError
from kgit.core.layout import METADATA_FILE
from kgit.core.metadata import Metadata
from kgit.registry import catalog
from kgit.store import collected
from kgit.store.git_ops import Repo


@dataclass
class Fetched:
    name: str
    version: str
    tag: str
    formats: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> {path, size, fetched}
    # what loading would refuse (kgit.models.config_scan): fetching runs no code, loading asks first
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "tag": self.tag,
            "formats": self.formats,
            "warnings": self.warnings,
        }


def get(
    name: str, version: str, *, formats: list[str] | None = None, repo: Repo, progress: bool | None = None
) -> Fetched:
    """Fetch ``name@version`` (all its formats, or ``formats``) from the DVC remote if not present.

    ``progress``: draw the download's progress on stderr (True), never (False), or when stderr is a
    terminal and ``CI`` is not set (None)."""
    from kgit.core import progress as progress_display
    from kgit.store import dvc_ops

    rel = catalog.resolve(repo, name, version)
    wanted = formats or list(rel.formats)
    catalog.require_formats(rel, wanted)
    result = Fetched(rel.name, rel.version, rel.tag)
    to_pull = []
    for fmt in wanted:
        info = rel.formats[fmt]
        dvc_file = repo.root / layout.dvc_file(info["path"])
        if not dvc_file.exists():
            raise KgitError(
                f"{info['path']}.dvc is not in this work tree (the branch does not contain release {rel.tag}): "
                f"check out a branch that does (git checkout {rel.tag}), or use `dvc artifacts get REPO {rel.name} --rev {rel.tag.split('@')[1]}`"
            )
        present = (repo.root / info["path"] / METADATA_FILE).exists() and not _incomplete(repo.root / info["path"])
        result.formats[fmt] = {"path": info["path"], "size": info.get("size"), "fetched": not present}
        if not present:
            to_pull.append(layout.dvc_file(info["path"]))
    # Folders absent before the pull: if the pull fails or what arrives fails verification, they are
    # removed again, so no unverified byte stays in the work tree (folders already there are left alone).
    brought = [
        repo.root / rel.formats[fmt]["path"]
        for fmt in wanted
        if result.formats[fmt]["fetched"] and not (repo.root / rel.formats[fmt]["path"]).exists()
    ]
    from kgit.workflow.validating import verified_metadata

    pulled = False
    try:
        if to_pull:
            from kgit.workflow import project

            project.before_dvc(repo)
            expected = sum(
                int(result.formats[fmt].get("size") or 0) for fmt in wanted if result.formats[fmt]["fetched"]
            )
            show = progress_display.wanted() if progress is None else progress
            with progress_display.Meter(f"fetching {rel.name}@{rel.version}", expected, show=show) as meter:
                dvc_ops.pull(repo.root, to_pull, meter=meter, packed=_packed_dvc_files(repo, rel, wanted))
        pulled = True
        metas = {fmt: verified_metadata(repo, rel, fmt) for fmt in wanted}
    except KgitError as exc:
        said = _remove(repo, brought)
        gone = _collected(repo, rel.tag) if to_pull else None
        if gone is not None:
            raise KgitError(f"{gone}{'; ' + said if said else ''}") from None
        if not said:
            if isinstance(exc, ReleaseMismatchError) and exc.check == "files":
                from kgit.core.packing import TENSORS_DIR

                folder = rel.formats[exc.fmt]["path"]
                restore = layout.dvc_file(folder)
                if f"{TENSORS_DIR}/" in str(exc):  # one file with its DVC cache object (dvc_ops.piece_store)
                    raise KgitError(
                        f"{exc}: a tensor object is one file with its DVC cache object, which changed with it: "
                        f"delete both (`find .dvc/cache -samefile {folder}/{TENSORS_DIR}/NAME -delete`, then "
                        f"`rm -rf {folder}`) and `kgit get {rel.name}@{rel.version}` fetches it from the DVC remote again"
                    ) from None
                raise KgitError(
                    f"{exc}: kgit leaves a folder that was already here as it is; `dvc checkout --force {restore}` "
                    f"puts the released bytes back (discarding those changes), then `kgit get {rel.name}@{rel.version}`"
                ) from None
            raise
        if "signed by key" in str(exc) or "not signed" in str(exc):
            hint = "the bytes are as released, but their signer is not trusted here (see `kgit keys list`)"
        elif pulled:
            hint = (
                "the DVC remote (or this machine's DVC cache) does not hold what was released; push it again "
                "from a copy that passes `kgit validate`"
            )
        else:
            hint = "fix the cause and retry"
        raise KgitError(f"{exc}; {said}: {hint}") from None
    for fmt, meta in metas.items():
        result.warnings += _load_warnings(
            repo.root / rel.formats[fmt]["path"], f"{rel.name}@{rel.version} ({fmt})", meta
        )
    return result


def _packed_dvc_files(repo: Repo, rel: catalog.Release, formats: list[str]) -> set[str]:
    """The ``.dvc`` files of those ``formats`` of ``rel`` that were released packed (their metadata in
    git lists a pack manifest)."""
    from kgit.core import packing

    return {
        layout.dvc_file(rel.formats[fmt]["path"])
        for fmt in formats
        if packing.MANIFEST in catalog.metadata(repo, rel, fmt).files
    }


def _incomplete(folder: Path) -> bool:
    """Whether a release folder whose ``metadata.json`` is here lacks a file it lists, other than
    those kgit assembles (a fetch killed midway, a file deleted): fetching completes it. DVC restores
    only what is missing, so nothing in the folder is overwritten; a changed file is reported by the
    check that follows, never replaced."""
    from kgit.core import packing

    try:
        listed = Metadata.read(folder).files
        assembled = set(packing.assembled_files(folder))
    except (KgitError, OSError):
        return False  # reported, as it is, by the check that follows
    return any(not (folder / rel).is_file() for rel in listed if rel not in assembled)


def _collected(repo: Repo, tag: str) -> str | None:
    """If ``kgit gc`` collected this release's data from the DVC remote, the one line saying so."""
    from kgit.store import dvc_remotes, storage

    name, _url = dvc_remotes.remote_url(repo.root)
    if not name:
        return None
    try:
        rec = storage.collected_in_remote(repo.root, name, [tag]).get(tag)
    except KgitError:
        return None
    if rec is None:
        return None
    collected.remember(repo, [{**rec, "tag": tag}])
    return f"{tag}'s data was {collected.describe(rec)}: it can no longer be fetched; its record (tag, metadata, history) stays in git"


def _load_warnings(folder: Path, label: str, meta: Metadata) -> list[str]:
    """What kgit.load and kgit validate would refuse in this (verified) folder, said at fetch time."""
    from kgit.models import formats

    try:
        findings = formats.release_findings(folder, meta)
    except KgitError as exc:
        return [f"{label}: {exc}"]
    never = next((f for f in findings if not f.code), None)
    if never is not None:
        return [f"{never.describe(label)}: kgit will not load it, with or without --unsafe"]
    code = next((f for f in findings if f.code), None)
    if code is not None:
        return [
            f"{code.describe(label)}: loading it runs that code, so kgit validate and kgit.load refuse it "
            "unless you pass --unsafe (unsafe=True)"
        ]
    return []


def _remove(repo: Repo, folders: list[Path]) -> str:
    """Delete these fetched folders from the work tree (the DVC cache is left as DVC has it); says what it did."""
    removed, failed = [], []
    for folder in folders:
        rel = folder.relative_to(repo.root).as_posix()
        try:
            if folder.is_symlink() or folder.is_file():
                folder.unlink()
            elif folder.is_dir():
                shutil.rmtree(folder)
            else:
                continue
            removed.append(rel)
        except OSError as exc:
            failed.append(f"{rel} ({exc.strerror or exc})")
    said = f"removed what was fetched ({', '.join(removed)}) from the work tree" if removed else ""
    if failed:
        said += ("; " if said else "") + f"could not remove {', '.join(failed)}: delete it by hand"
    return said


def load_model(
    repo: Repo,
    name: str,
    version: str,
    fmt: str | None = None,
    *,
    custom_objects: dict[str, Any] | None = None,
    progress: bool | None = None,
    unsafe: bool = False,
) -> Any:
    """Resolve ``name@version``, fetch that format's data if it is not here, verify it against the
    release, check what its configuration would run (``unsafe``: the caller allows its code; see
    kgit.workflow.validating.code_allowed), import the code the release names, and load the Keras model."""
    from kgit.models import formats, usercode
    from kgit.workflow.validating import code_allowed, verified_metadata

    rel = catalog.resolve(repo, name, version)
    fmt = fmt or next(iter(rel.formats))
    catalog.require_formats(rel, [fmt])
    folder = repo.root / rel.formats[fmt]["path"]
    if not (folder / METADATA_FILE).exists():  # not here yet: fetch that version only
        get(name, rel.version, formats=[fmt], repo=repo, progress=progress)
    meta = verified_metadata(repo, rel, fmt)
    label = f"{rel.name}@{rel.version} ({fmt})"
    allowed = code_allowed(repo, meta, unsafe)
    # before any of the release's own modules are imported: a refusal runs nothing
    formats.check_config(
        folder,
        fmt,
        declared=formats.declared_modules(meta.custom_modules, custom_objects, meta.custom_objects),
        unsafe=allowed,
        label=label,
    )
    usercode.use_project(repo.root)  # the project's own modules import as they did at release
    custom = usercode.load_custom_objects(meta.custom_objects)
    custom.update(custom_objects or {})
    return formats.load_keras_model(
        folder,
        fmt,
        custom_objects=custom,
        modules=meta.custom_modules,
        builder=meta.builder,
        unsafe=allowed,
        sig=meta.signature,
        label=label,
    )
