"""Releases made by hand the way `kgit release` leaves them in git (a `.dvc` file per format with
kgit's metadata, a commit carrying the release trailer, an annotated tag whose message holds the
summary), without TensorFlow or DVC: for fast tests of everything that reads releases from git."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from kgit.registry import catalog
from kgit.registry.versions import Version, tag_name
from kgit.store import txn


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def repo_at(path: Path) -> Path:
    """An empty git repository on branch main with one commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "--initial-branch=main")
    git(path, "commit", "-q", "--allow-empty", "-m", "start")
    return path


def dvc_text(name: str, version: str, fmt: str, md5: str, meta: dict[str, object] | None = None) -> str:
    """A release's ``.dvc`` file; with ``meta``, a whole metadata record (``kgit show`` reads it)
    with these fields of it set."""
    kgit_meta: dict[str, object] = {"name": name, "version": version, "format": fmt}
    if meta is not None:
        kgit_meta = {**full_metadata(name, version, fmt), **meta}
    return yaml.safe_dump(
        {"outs": [{"md5": md5, "size": 100, "nfiles": 3, "hash": "md5", "path": version}], "meta": {"kgit": kgit_meta}}
    )


def full_metadata(name: str, version: str, fmt: str) -> dict[str, object]:
    """A complete metadata record as `kgit release` writes it, with made-up values."""
    from kgit.core.metadata import (
        DatasetInfo,
        GitInfo,
        Metadata,
        ReferenceInfo,
        Signature,
        TensorSpec,
    )

    return Metadata(
        name=name,
        version=version,
        format=fmt,
        formats=[fmt],
        created_at="2026-11-26T12:00:00Z",
        git=GitInfo("0" * 40, "main", False),
        dataset=DatasetInfo("data-1"),
        hyperparameters={},
        training={"compiled": False},
        libraries={"kgit": "test"},
        signature=Signature([TensorSpec("x", [None, 3], "float32")], [TensorSpec("y", [None, 1], "float32")]),
        reference=ReferenceInfo("reference_inputs.npz", "0" * 64, "reference_outputs.npz", "0" * 64, 1e-6, True),
        files={},
        resumable=False,
    ).to_dict()


def md5_of(name: str, version: str, fmt: str, salt: str = "") -> str:
    return hashlib.md5(f"{name}/{fmt}/{version}{salt}".encode()).hexdigest() + ".dir"


def release(
    repo: Path,
    name: str,
    version: str,
    formats: tuple[str, ...] = ("keras",),
    *,
    claims: dict[str, object] | None = None,
    meta: dict[str, object] | None = None,
) -> str:
    """Commit and tag ``name@version``; ``claims`` overrides fields of the tag's summary (a lying
    message); ``meta``: write whole metadata records with these fields (their ``metrics`` also in
    the tag's summary). Returns the tag name."""
    summary_formats = {}
    for fmt in formats:
        path = f"artifacts/{name}/{fmt}/{version}"
        md5 = md5_of(name, version, fmt)
        dvc = repo / f"{path}.dvc"
        dvc.parent.mkdir(parents=True, exist_ok=True)
        dvc.write_text(dvc_text(name, version, fmt, md5, meta))
        summary_formats[fmt] = {"path": path, "md5": md5, "size": 100, "nfiles": 3}
    tag = tag_name(name, Version.parse(version))
    git(repo, "add", "artifacts")
    git(repo, "commit", "-q", "-m", f"kgit: release {name} {version}\n\n{txn.TRAILER}: {tag}")
    summary: dict[str, object] = {
        "formats": summary_formats,
        "created_at": "2026-11-26T12:00:00Z",
        "dataset_id": "data-1",
        "source_commit": git(repo, "rev-parse", "HEAD~1"),
    }
    if meta and meta.get("metrics"):
        summary.update({"metrics": meta["metrics"], "measured": []})
    summary.update(claims or {})
    body = {k: v for k, v in summary.items() if k not in ("name", "version")}
    message = catalog.tag_message(str(summary.get("name", name)), str(summary.get("version", version)), body)
    git(repo, "tag", "-a", tag, "-m", message)
    return tag


def promote(repo: Path, name: str, version: str, stage: str, counter: int) -> str:
    """A GTO stage tag NAME#STAGE#N on the commit of ``name@version``."""
    tag = f"{name}#{stage}#{counter}"
    git(
        repo,
        "tag",
        "-a",
        tag,
        "-m",
        f"promote {name} {version} to {stage}",
        f"{tag_name(name, Version.parse(version))}^{{commit}}",
    )
    return tag
