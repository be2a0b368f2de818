"""Are a release's bytes where they must be? Object presence in the DVC cache and in a DVC remote.

``dvc push`` exits 0 when objects are missing from the local cache (it only warns), so kgit checks
for itself: before uploading, that the cache holds every object of each version; after uploading,
that the remote does, before anything is recorded as published. The server-side hook asks the same
of a remote given by URL. Each version folder is one DVC directory object (``<md5>.dir``, a JSON
list of its files) plus one object per file; all of them must be present.

DVC (its object database and filesystems) is imported lazily, only here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError
from kgit.core.layout import DVC_DIR, METADATA_FILE
from kgit.core.metadata import MAX_FILE_BYTES
from kgit.store.dvc_remotes import Where, failure, one_line_of, scheme_of


def _read_json(odb: Any, oid: str, what: str) -> Any:
    """The JSON document stored as object ``oid`` of ``odb`` (a ``.dir`` listing, a metadata.json),
    read no further than the limit, through the bounded reader; KgitError if it is not JSON."""
    with odb.fs.open(odb.oid_to_path(oid), mode="rb") as fh:
        raw = fh.read(MAX_FILE_BYTES + 1)
    return bounded_yaml.load_json(raw, what, max_bytes=MAX_FILE_BYTES)


def _dir_entries(odb: Any, oid: str) -> list[str] | None:
    """File object ids listed by the directory object ``oid``; None if it cannot be read."""
    try:
        entries = _read_json(odb, oid, f"DVC listing {oid}")
    except (OSError, KgitError):
        return None
    if not isinstance(entries, list):
        return None
    oids = []
    for e in entries:
        md5 = e.get("md5") if isinstance(e, dict) else None
        if not isinstance(md5, str):
            return None
        oids.append(md5)
    return oids


def missing(odb: Any, oids: Iterable[str], where: Where | None = None) -> dict[str, list[str]]:
    """For each top-level object id (a version folder's ``.dir`` hash, or a file hash), the objects
    of it that ``odb`` lacks (the id itself if its listing is absent or unreadable). Empty: all there.
    ``where`` names the storage in error messages."""
    result: dict[str, list[str]] = {}
    top = list(dict.fromkeys(oids))
    try:
        # oids_exist, not exists(): an object store's exists() answers False for an unreachable
        # server or refused credentials, where a listing raises
        present_top = set(odb.oids_exist(top))
        for oid in top:
            if oid not in present_top:
                result[oid] = [oid]
                continue
            if not oid.endswith(".dir"):
                continue
            files = _dir_entries(odb, oid)
            if files is None:
                result[oid] = [oid]
                continue
            present = set(odb.oids_exist(sorted(set(files))))
            absent = sorted(set(files) - present)
            if absent:
                result[oid] = absent
    except Exception as exc:  # a remote's filesystem raises its own errors (network, auth)
        if where is None:
            raise KgitError(f"cannot read the DVC storage at {odb.path}: {one_line_of(exc)}") from None
        raise KgitError(failure(exc, where)) from None
    return result


Identity = tuple[str, str, str]  # (model, version, format) as a release tag names them


def identity_problems(
    odb: Any, wanted: list[tuple[str, Identity]], where: Where | None = None
) -> list[tuple[str, Identity, str]]:
    """For each (version folder's ``.dir`` object id, the release its tag says it is) in ``wanted``,
    what the ``metadata.json`` inside the data says if it names another release (a tag made by hand
    over another release's data). Only the listing and that one small file are read; objects
    ``odb`` lacks are skipped (``missing`` reports them)."""
    found: list[tuple[str, Identity, str]] = []
    try:
        for oid, want in wanted:
            if not oid.endswith(".dir") or not odb.exists(oid):
                continue
            entries = _read_json(odb, oid, f"DVC listing {oid}")
            entry = (
                next((e for e in entries if isinstance(e, dict) and e.get("relpath") == METADATA_FILE), None)
                if isinstance(entries, list)
                else None
            )
            md5 = entry.get("md5") if entry is not None else None
            if not isinstance(md5, str) or not odb.exists(md5):
                found.append((oid, want, f"its data holds no {METADATA_FILE}"))
                continue
            try:
                meta = _read_json(odb, md5, METADATA_FILE)
            except KgitError:
                meta = None
            said = (
                tuple(str(meta.get(k))[:64] for k in ("name", "version", "format")) if isinstance(meta, dict) else None
            )
            if said != want:
                what = ":".join(said) if said else "unreadable"
                found.append((oid, want, f"the {METADATA_FILE} in its data is for {what}, not {':'.join(want)}"))
    except Exception as exc:  # a remote's filesystem raises its own errors (network, auth)
        if where is None:
            raise KgitError(f"cannot read the DVC storage at {odb.path}: {one_line_of(exc)}") from None
        raise KgitError(failure(exc, where)) from None
    return found


def local_identity(root: Path, oid: str) -> Identity | None:
    """The (model, version, format) that the ``metadata.json`` of version folder ``oid`` names, read
    from the repository's local DVC cache (its default place, ``.dvc/cache``) without importing
    DVC; None when the cache does not hold it."""

    def read(md5: str, limit: int) -> bytes | None:
        path = root / DVC_DIR / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        try:
            with path.open("rb") as fh:
                data = fh.read(limit + 1)
        except OSError:
            return None
        return data if len(data) <= limit else None

    listing = read(oid, MAX_FILE_BYTES) if oid.endswith(".dir") else None
    try:
        entries = bounded_yaml.load_json(listing, oid, max_bytes=MAX_FILE_BYTES) if listing is not None else None
        entry = (
            next((e for e in entries if isinstance(e, dict) and e.get("relpath") == METADATA_FILE), None)
            if isinstance(entries, list)
            else None
        )
        md5 = entry.get("md5") if entry is not None else None
        raw = read(md5, MAX_FILE_BYTES) if isinstance(md5, str) and len(md5) == 32 and md5.isalnum() else None
        meta = bounded_yaml.load_json(raw, str(md5), max_bytes=MAX_FILE_BYTES) if raw is not None else None
    except KgitError:
        return None
    if not isinstance(meta, dict):
        return None
    name, version, fmt = (meta.get(k) for k in ("name", "version", "format"))
    return (name, version, fmt) if all(isinstance(x, str) for x in (name, version, fmt)) else None  # type: ignore[return-value]


def missing_in_cache(root: Path, oids: Iterable[str]) -> dict[str, list[str]]:
    """What of ``oids`` the repository's local DVC cache lacks."""
    from kgit.store.dvc_ops import open_repo

    with open_repo(root) as repo:
        return missing(repo.cache.local, oids)


def missing_in_remote(root: Path, remote: str, oids: Iterable[str]) -> dict[str, list[str]]:
    """What of ``oids`` the repository's DVC remote ``remote`` lacks (its config, credentials included)."""
    return check_remote(root, remote, oids)[0]


def check_remote(
    root: Path, remote: str, oids: Iterable[str], wanted: list[tuple[str, Identity]] | None = None
) -> tuple[dict[str, list[str]], list[tuple[str, Identity, str]]]:
    """``missing_in_remote`` and ``identity_problems`` of ``wanted``, in one opening of the remote."""
    from kgit.store.dvc_ops import open_repo

    with open_repo(root) as repo:
        odb, where = _remote_odb(repo, remote)
        return missing(odb, oids, where), identity_problems(odb, wanted or [], where)


def _remote_odb(repo: Any, remote: str) -> tuple[Any, Where]:
    """The object database of DVC remote ``remote`` (its settings and credentials as DVC merges them)."""
    conf = dict(repo.config["remote"].get(remote) or {})
    where = Where.of(remote, str(conf.get("url", "")), conf)
    try:
        return repo.cloud.get_remote_odb(remote), where
    except Exception as exc:
        raise KgitError(failure(exc, where, "open")) from None


def presence(root: Path, remote: str, oids: Iterable[str]) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """What of ``oids`` the local DVC cache lacks, then (only if the cache has everything: None
    otherwise) what the DVC remote ``remote`` lacks, in one opening of the repository. Reaching the
    remote here turns an unreachable server or refused credentials into one clear line before
    anything is uploaded."""
    from kgit.store.dvc_ops import open_repo

    oids = list(oids)
    with open_repo(root) as repo:
        in_cache = missing(repo.cache.local, oids)
        if in_cache:
            return in_cache, None
        url = str((repo.config["remote"].get(remote) or {}).get("url", ""))
        try:
            odb, where = _remote_odb(repo, remote)
            return in_cache, missing(odb, oids, where)
        except KgitError:
            if scheme_of(url) is None:  # a folder: `dvc push` creates it, or says why it cannot
                return in_cache, {oid: [oid] for oid in oids}
            raise


def missing_at_url(url: str, oids: Iterable[str], options: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """What of ``oids`` the DVC remote at ``url`` lacks (no repository needed: the server hook).
    ``options`` are the remote's DVC settings (``endpointurl``, ``region``, ...)."""
    odb, where = odb_at_url(url, options)
    return missing(odb, oids, where)


def odb_at_url(url: str, options: dict[str, Any] | None = None) -> tuple[Any, Where]:
    """The object database of the DVC remote at ``url`` (no repository needed: the server hook)."""
    from dvc.fs import get_cloud_fs
    from dvc_data.hashfile.db import HashFileDB

    where = Where.of(None, url, options)
    try:
        cls, conf, path = get_cloud_fs({}, url=url, **(options or {}))
        fs = cls(**conf)
    except Exception as exc:
        raise KgitError(failure(exc, where, "open")) from None
    return HashFileDB(fs, fs.join(path, "files", "md5")), where


# -- kgit gc: listing, sizing and deleting objects; the records of what was collected -------------
COLLECTED_DIR = "kgit-collected"  # beside files/ at the root of a DVC remote: one JSON record per release


@dataclass
class GcStore:
    """One storage ``kgit gc`` collects: the local DVC cache, or a DVC remote."""

    odb: Any
    where: str
    remote: bool
    collect: bool = True  # False: only read (the listings of what gc keeps), never deleted from


@contextlib.contextmanager
def gc_stores(root: Path, remote: str | None) -> Iterator[list[GcStore]]:
    """The local DVC cache and, when ``remote`` is not None, that DVC remote ("": the default one),
    to collect. Without ``remote``, the default remote (if one is configured and can be opened) comes
    last, read only: the listings of kept releases and datasets not fetched here are read there."""
    from kgit.store.dvc_ops import open_repo

    with open_repo(root) as repo:
        stores = [GcStore(repo.cache.local, "the DVC cache", False)]
        default = repo.config["core"].get("remote")
        if remote is not None:
            name = remote or default
            if not name:
                raise KgitError("no default DVC remote is configured: name one with --remote NAME")
            if name not in repo.config["remote"]:
                raise KgitError(f"no DVC remote named {name!r} (dvc remote list shows them)")
            odb, where = _remote_odb(repo, name)
            stores.append(GcStore(odb, f"the DVC remote {where}", True))
        elif default and default in repo.config["remote"]:
            try:
                odb, where = _remote_odb(repo, default)
                stores.append(GcStore(odb, f"the DVC remote {where}", True, collect=False))
            except KgitError:
                pass  # unreachable: the listings must then all be here, or gc refuses
        yield stores


def listings(stores: list[GcStore], tops: list[str]) -> dict[str, list[str] | None]:
    """For each directory object of ``tops``, the file objects it lists, read from the first storage
    holding it; None where none does (file objects list nothing)."""
    found: dict[str, list[str] | None] = {}
    for top in tops:
        if not top.endswith(".dir"):
            found[top] = []
            continue
        found[top] = None
        for store in stores:
            try:
                entries = _guarded(store, lambda s=store, t=top: _dir_entries(s.odb, t) if s.odb.exists(t) else None)
            except KgitError:
                if store.collect:
                    raise
                entries = None  # a remote only read from, unreachable: as if it did not hold it
            if entries is not None:
                found[top] = entries
                break
    return found


def sizes(store: GcStore, oids: list[str]) -> dict[str, int]:
    """The size of each of ``oids`` that ``store`` holds."""

    def read() -> dict[str, int]:
        present = set(store.odb.oids_exist(oids)) if oids else set()
        return {oid: int(store.odb.fs.size(store.odb.oid_to_path(oid)) or 0) for oid in oids if oid in present}

    return _guarded(store, read)


def delete(store: GcStore, oids: list[str]) -> int:
    """Delete ``oids`` from ``store``; returns how many were deleted."""

    def run() -> int:
        for oid in oids:
            store.odb.fs.remove(store.odb.oid_to_path(oid))
        return len(oids)

    return _guarded(store, run)


def write_collected(store: GcStore, records: list[dict[str, Any]]) -> None:
    """Leave in the remote one record per collected release (before its objects go), so every clone
    reads "collected", not "missing"."""
    fs = store.odb.fs
    folder = fs.join(fs.parent(fs.parent(store.odb.path)), COLLECTED_DIR)

    def run() -> None:
        fs.makedirs(folder, exist_ok=True)
        for rec in records:
            fs.pipe_file(fs.join(folder, _record_name(str(rec["tag"]))), json.dumps(rec, sort_keys=True).encode())

    _guarded(store, run)


def read_collected(odb: Any, tags: list[str]) -> dict[str, dict[str, Any]]:
    """The records ``write_collected`` left in the remote of ``odb`` for these tags."""
    fs = odb.fs
    folder = fs.join(fs.parent(fs.parent(odb.path)), COLLECTED_DIR)
    found: dict[str, dict[str, Any]] = {}
    for tag in tags:
        path = fs.join(folder, _record_name(tag))
        try:
            with fs.open(path, mode="rb") as fh:
                raw = fh.read(64 << 10)
            rec = bounded_yaml.load_json(raw, path, max_bytes=64 << 10)
        except (OSError, KgitError):
            continue
        except Exception:  # a remote's filesystem raises its own errors: no record read is no record
            continue
        if isinstance(rec, dict) and rec.get("tag") == tag:
            found[tag] = rec
    return found


def collected_in_remote(root: Path, remote: str, tags: list[str]) -> dict[str, dict[str, Any]]:
    """``read_collected`` from the repository's DVC remote ``remote``."""
    from kgit.store.dvc_ops import open_repo

    with open_repo(root) as repo:
        odb, _where = _remote_odb(repo, remote)
        return read_collected(odb, tags)


def _record_name(tag: str) -> str:
    return hashlib.sha256(tag.encode("utf-8")).hexdigest()[:32] + ".json"


def _guarded(store: GcStore, fn: Any) -> Any:
    try:
        return fn()
    except KgitError:
        raise
    except Exception as exc:  # a remote's filesystem raises its own errors (network, auth)
        raise KgitError(f"{store.where}: {one_line_of(exc)}") from None
