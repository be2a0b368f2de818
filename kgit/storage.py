"""Are a release's bytes where they must be? Object presence in the DVC cache and in a DVC remote.

``dvc push`` exits 0 when objects are missing from the local cache (it only warns), so kgit checks
for itself: before uploading, that the cache holds every object of each version; after uploading,
that the remote does, before anything is recorded as published. The server-side hook asks the same
of a remote given by URL. Each version folder is one DVC directory object (``<md5>.dir``, a JSON
list of its files) plus one object per file; all of them must be present.

DVC (its object database and filesystems) is imported lazily, only here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kgit.errors import KgitError, one_line


def _dir_entries(odb: Any, oid: str) -> list[str] | None:
    """File object ids listed by the directory object ``oid``; None if it cannot be read."""
    try:
        with odb.fs.open(odb.oid_to_path(oid), mode="r") as fh:
            entries = json.load(fh)
    except (OSError, ValueError, RecursionError):
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


def missing(odb: Any, oids: Iterable[str]) -> dict[str, list[str]]:
    """For each top-level object id (a version folder's ``.dir`` hash, or a file hash), the objects
    of it that ``odb`` lacks (the id itself if its listing is absent or unreadable). Empty: all there."""
    result: dict[str, list[str]] = {}
    for oid in dict.fromkeys(oids):
        try:
            if not odb.exists(oid):
                result[oid] = [oid]
                continue
            if not oid.endswith(".dir"):
                continue
            files = _dir_entries(odb, oid)
            if files is None:
                result[oid] = [oid]
                continue
            present = set(odb.oids_exist(sorted(set(files))))
        except Exception as exc:  # a remote's filesystem raises its own errors (network, auth)
            raise KgitError(f"cannot read the DVC storage at {odb.path}: {_one_line(exc)}") from None
        absent = sorted(set(files) - present)
        if absent:
            result[oid] = absent
    return result


def missing_in_cache(root: Path, oids: Iterable[str]) -> dict[str, list[str]]:
    """What of ``oids`` the repository's local DVC cache lacks."""
    from kgit.dvc_ops import open_repo

    with open_repo(root) as repo:
        return missing(repo.cache.local, oids)


def missing_in_remote(root: Path, remote: str, oids: Iterable[str]) -> dict[str, list[str]]:
    """What of ``oids`` the repository's DVC remote ``remote`` lacks (its config, credentials included)."""
    from kgit.dvc_ops import open_repo

    with open_repo(root) as repo:
        try:
            odb = repo.cloud.get_remote_odb(remote)
        except Exception as exc:
            raise KgitError(f"cannot open DVC remote {remote}: {_one_line(exc)}") from None
        return missing(odb, oids)


def missing_at_url(url: str, oids: Iterable[str], options: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """What of ``oids`` the DVC remote at ``url`` lacks (no repository needed: the server hook)."""
    from dvc.fs import get_cloud_fs
    from dvc_data.hashfile.db import HashFileDB

    try:
        cls, conf, path = get_cloud_fs({}, url=url, **(options or {}))
        fs = cls(**conf)
    except Exception as exc:
        raise KgitError(f"cannot open DVC remote {url}: {_one_line(exc)}") from None
    return missing(HashFileDB(fs, fs.join(path, "files", "md5")), oids)


def default_remote_in(config_texts: list[str]) -> tuple[str | None, str | None]:
    """(name, url) of the default remote named by DVC config files' texts (later ones override, as
    ``.dvc/config.local`` overrides ``.dvc/config``); no DVC import."""
    import configparser

    name = None
    remotes: dict[str, str] = {}
    for text in config_texts:
        cp = configparser.ConfigParser()
        try:
            cp.read_string(text)
        except configparser.Error:
            continue
        if cp.has_option("core", "remote"):
            name = cp.get("core", "remote")
        for section in cp.sections():
            s = section.strip().strip("'")
            if s.startswith('remote "') and cp.has_option(section, "url"):
                remotes[s.split('"')[1]] = cp.get(section, "url")
    return name, remotes.get(name) if name else None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line(exc, 200)}"
