"""The Python API the CLI and users call. Heavy work is imported lazily inside each function."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kgit import registry
from kgit.errors import KgitError, ReleaseNotFoundError
from kgit.git_ops import Repo
from kgit.metadata import Metadata
from kgit.releasing import ReleaseRecord, release
from kgit.versions import check_name

__all__ = ["release", "load", "list_releases", "show", "init", "validate", "ReleaseRecord"]


def init(path: str | os.PathLike[str] = ".", remote: str | None = None) -> Any:
    """Set up the git repository at ``path`` for kgit (idempotent). See ``kgit init --help``."""
    from kgit import project, txn

    repo = Repo(path)
    with txn.repo_lock(repo):
        txn.recover(repo)
        return project.init(path, remote=remote)


def list_releases(name: str | None = None, repo: str | os.PathLike[str] = ".") -> list[registry.Release]:
    """Every release (of one model if ``name``), from git tags alone."""
    return registry.releases(Repo(repo), name)


def show(name: str, version: str = "latest", fmt: str | None = None, repo: str | os.PathLike[str] = ".") -> Metadata:
    """Metadata of ``name@version``, from git alone (works before `dvc pull`)."""
    git = Repo(repo)
    return registry.metadata(git, registry.resolve(git, name, version), fmt)


def _release_folder(git: Repo, rel: registry.Release, fmt: str) -> Path:
    folder = git.root / rel.formats[fmt]["path"]
    if not (folder / "metadata.json").exists():
        raise KgitError(
            f"the data of {rel.name}@{rel.version} ({fmt}) is not in this work tree: run `dvc pull {rel.formats[fmt]['path']}.dvc`"
        )
    return folder


def load(name: str, version: str = "latest", format: str | None = None, *, repo: str | os.PathLike[str] = ".",
         custom_objects: dict[str, Any] | None = None) -> Any:
    """The Keras model released as ``name@version`` (``latest`` = highest).

    Full-model formats (savedmodel, keras, h5) come back compiled with their optimizer state, so
    training resumes; ``weights`` is rebuilt with the recorded builder. ``format`` defaults to the
    first format of the release that can give a Keras model.
    """
    from kgit import formats as fmts
    from kgit.validation import check_files

    check_name(name)
    git = Repo(repo)
    rel = registry.resolve(git, name, version)
    fmt = format or next(iter(rel.formats))
    if fmt not in rel.formats:
        raise ReleaseNotFoundError(f"{name}@{rel.version} has no {fmt} format (it has {', '.join(rel.formats)})")
    folder = _release_folder(git, rel, fmt)
    meta = Metadata.read(folder)
    problem = check_files(folder, meta)
    if problem:
        raise KgitError(f"{name}@{rel.version} ({fmt}) does not match its release: {problem}")
    custom = fmts.load_custom_objects(meta.custom_objects)
    custom.update(custom_objects or {})
    return fmts.load_keras_model(folder, fmt, custom_objects=custom, modules=meta.custom_modules,
                                 builder=meta.builder, unsafe=meta.unsafe, sig=meta.signature)


def validate(refs: list[str] | None = None, *, all: bool = False, repo: str | os.PathLike[str] = ".") -> list[Any]:
    """Check released versions: file hashes, then a fresh-process round trip. Returns one result per format."""
    from kgit.validation import FolderResult, check_files, roundtrip
    from kgit.versions import parse_ref

    git = Repo(repo)
    targets: list[registry.Release] = []
    if all or not refs:
        targets = registry.releases(git)
    for ref in refs or []:
        n, v = parse_ref(ref)
        targets.append(registry.resolve(git, n, v))
    results: list[FolderResult] = []
    to_run: list[Path] = []
    for rel in targets:
        for fmt, info in rel.formats.items():
            folder = git.root / info["path"]
            label = f"{rel.name}@{rel.version}"
            if not (folder / "metadata.json").exists():
                results.append(FolderResult(label, fmt, False, error="data not present locally (run `dvc pull`)"))
                continue
            meta = Metadata.read(folder)
            problem = check_files(folder, meta)
            if problem:
                results.append(FolderResult(label, fmt, False, atol=meta.reference.atol, error=problem))
                continue
            to_run.append(folder)
    by_folder = {r.folder: r for r in roundtrip(to_run)}
    for folder in to_run:
        r = by_folder[str(folder.resolve())]
        meta = Metadata.read(folder)
        r.folder = f"{meta.name}@{meta.version}"
        results.append(r)
    return results
