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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgit.errors import KgitError, describe


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
            raise KgitError(f"cannot read the DVC storage at {odb.path}: {_one_line(exc)}") from None
        raise KgitError(failure(exc, where)) from None
    return result


MAX_METADATA_BYTES = 16 << 20


Identity = tuple[str, str, str]  # (model, version, format) as a release tag names them


def identity_problems(odb: Any, wanted: list[tuple[str, Identity]],
                      where: Where | None = None) -> list[tuple[str, Identity, str]]:
    """For each (version folder's ``.dir`` object id, the release its tag says it is) in ``wanted``,
    what the ``metadata.json`` inside the data says if it names another release (a tag made by hand
    over another release's data). Only the listing and that one small file are read; objects
    ``odb`` lacks are skipped (``missing`` reports them)."""
    found: list[tuple[str, Identity, str]] = []
    try:
        for oid, want in wanted:
            if not oid.endswith(".dir") or not odb.exists(oid):
                continue
            with odb.fs.open(odb.oid_to_path(oid), mode="r") as fh:
                entries = json.load(fh)
            entry = next((e for e in entries if isinstance(e, dict) and e.get("relpath") == "metadata.json"), None) \
                if isinstance(entries, list) else None
            md5 = entry.get("md5") if entry is not None else None
            if not isinstance(md5, str) or not odb.exists(md5):
                found.append((oid, want, "its data holds no metadata.json"))
                continue
            with odb.fs.open(odb.oid_to_path(md5), mode="rb") as fh:
                raw = fh.read(MAX_METADATA_BYTES + 1)
            try:
                meta = json.loads(raw) if len(raw) <= MAX_METADATA_BYTES else None
            except (ValueError, RecursionError):
                meta = None
            said = tuple(str(meta.get(k))[:64] for k in ("name", "version", "format")) if isinstance(meta, dict) else None
            if said != want:
                what = ":".join(said) if said else "unreadable"
                found.append((oid, want, f"the metadata.json in its data is for {what}, not {':'.join(want)}"))
    except Exception as exc:  # a remote's filesystem raises its own errors (network, auth)
        if where is None:
            raise KgitError(f"cannot read the DVC storage at {odb.path}: {_one_line(exc)}") from None
        raise KgitError(failure(exc, where)) from None
    return found


def local_identity(root: Path, oid: str) -> Identity | None:
    """The (model, version, format) that the ``metadata.json`` of version folder ``oid`` names, read
    from the repository's local DVC cache (its default place, ``.dvc/cache``) without importing
    DVC; None when the cache does not hold it."""
    def read(md5: str, limit: int) -> bytes | None:
        path = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        try:
            with path.open("rb") as fh:
                data = fh.read(limit + 1)
        except OSError:
            return None
        return data if len(data) <= limit else None

    listing = read(oid, MAX_METADATA_BYTES) if oid.endswith(".dir") else None
    try:
        entries = json.loads(listing) if listing is not None else None
        entry = next((e for e in entries if isinstance(e, dict) and e.get("relpath") == "metadata.json"), None) \
            if isinstance(entries, list) else None
        md5 = entry.get("md5") if entry is not None else None
        raw = read(md5, MAX_METADATA_BYTES) if isinstance(md5, str) and len(md5) == 32 and md5.isalnum() else None
        meta = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(meta, dict):
        return None
    name, version, fmt = (meta.get(k) for k in ("name", "version", "format"))
    return (name, version, fmt) if all(isinstance(x, str) for x in (name, version, fmt)) else None  # type: ignore[return-value]


def missing_in_cache(root: Path, oids: Iterable[str]) -> dict[str, list[str]]:
    """What of ``oids`` the repository's local DVC cache lacks."""
    from kgit.dvc_ops import open_repo

    with open_repo(root) as repo:
        return missing(repo.cache.local, oids)


def missing_in_remote(root: Path, remote: str, oids: Iterable[str]) -> dict[str, list[str]]:
    """What of ``oids`` the repository's DVC remote ``remote`` lacks (its config, credentials included)."""
    return check_remote(root, remote, oids)[0]


def check_remote(root: Path, remote: str, oids: Iterable[str], wanted: list[tuple[str, Identity]] | None = None
                 ) -> tuple[dict[str, list[str]], list[tuple[str, Identity, str]]]:
    """``missing_in_remote`` and ``identity_problems`` of ``wanted``, in one opening of the remote."""
    from kgit.dvc_ops import open_repo

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
    from kgit.dvc_ops import open_repo

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


def default_remote_in(config_texts: list[str]) -> tuple[str | None, str | None]:
    """(name, url) of the default remote named by DVC config files' texts (later ones override, as
    ``.dvc/config.local`` overrides ``.dvc/config``); no DVC import."""
    name, settings = default_remote_config_in(config_texts)
    return name, settings.get("url") if name else None


MAX_CONFIG_BYTES = 1 << 20  # DVC config files are a few hundred bytes


def default_remote_config_in(config_texts: list[str]) -> tuple[str | None, dict[str, str]]:
    """(name, settings) of the default remote in DVC config files' texts, later files overriding
    earlier ones setting by setting (as DVC merges them); no DVC import."""
    import configparser

    name = None
    remotes: dict[str, dict[str, str]] = {}
    for text in config_texts:
        if len(text) > MAX_CONFIG_BYTES:  # not a DVC config file: read as one that does not parse
            continue
        cp = configparser.ConfigParser(interpolation=None)
        try:
            cp.read_string(text)
        except configparser.Error:
            continue
        if cp.has_option("core", "remote"):
            name = cp.get("core", "remote")
        for section in cp.sections():
            s = section.strip().strip("'")
            if s.startswith('remote "'):
                remotes.setdefault(s.split('"')[1], {}).update(cp.items(section))
    return name, dict(remotes.get(name) or {}) if name else {}


# -- remotes on other hosts: plugins, settings, and what a failure means ------------------------------
# DVC remote settings that are a person's (credentials, paths to their own files): kept in
# .dvc/config.local, never committed, never stored by the server hook, never printed.
PERSONAL_OPTIONS = frozenset({
    "access_key_id", "secret_access_key", "session_token", "sse_customer_key", "profile", "credentialpath",
    "configpath", "password", "ask_password", "passphrase", "ask_passphrase", "keyfile", "user",
    "account_key", "sas_token", "client_secret", "connection_string", "custom_auth_header", "gss_auth",
})
# which of them are secrets: their values are never shown
SECRET_OPTIONS = frozenset({"access_key_id", "secret_access_key", "session_token", "sse_customer_key", "password", "passphrase",
                            "account_key", "sas_token", "client_secret", "connection_string", "custom_auth_header"})
# URL scheme -> (DVC's plugin module, what to install)
PLUGINS = {"s3": ("dvc_s3", "pip install 'kgit[s3]'"), "ssh": ("dvc_ssh", "pip install 'kgit[ssh]'"),
           "gs": ("dvc_gs", "pip install dvc-gs"), "azure": ("dvc_azure", "pip install dvc-azure"),
           "hdfs": ("dvc_hdfs", "pip install dvc-hdfs"), "webhdfs": ("dvc_webhdfs", "pip install dvc-webhdfs"),
           "oss": ("dvc_oss", "pip install dvc-oss"), "gdrive": ("dvc_gdrive", "pip install dvc-gdrive"),
           "webdav": ("dvc_webdav", "pip install dvc-webdav"), "webdavs": ("dvc_webdav", "pip install dvc-webdav")}


def scheme_of(url: str) -> str | None:
    """``s3`` for ``s3://bucket/prefix``; None for a folder."""
    import re

    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return m.group(1).lower() if m else None


def require_plugin(url: str) -> None:
    """Refuse, with the command that fixes it, a remote URL whose DVC plugin is not installed."""
    import importlib

    scheme = scheme_of(url)
    if scheme not in PLUGINS:
        return
    module, install = PLUGINS[scheme]
    try:
        importlib.import_module(module)
    except ImportError:
        raise KgitError(f"DVC remote {url} needs DVC's {scheme} plugin ({module.replace('_', '-')}), which is not "
                        f"installed: {install}") from None


@dataclass(frozen=True)
class Where:
    """A DVC remote as messages name it: ``DVC remote kgit (s3://bucket/prefix at http://127.0.0.1:9000)``."""

    name: str | None
    url: str
    endpoint: str | None = None

    @classmethod
    def of(cls, name: str | None, url: str, options: dict[str, Any] | None) -> Where:
        endpoint = (options or {}).get("endpointurl")
        return cls(name, url, str(endpoint) if endpoint else None)

    def __str__(self) -> str:
        inner = f"{self.url} at {self.endpoint}" if self.endpoint else self.url
        return f"DVC remote {self.name} ({inner})" if self.name else f"DVC remote {inner}"


_UNREACHABLE = ("could not connect to the endpoint", "connection refused", "connect timeout", "connecttimeout",
                "timeout on endpoint url", "name or service not known", "temporary failure in name resolution",
                "endpointconnectionerror", "max retries exceeded", "cannot connect to host", "no route to host",
                "network is unreachable", "nodename nor servname")
_REFUSED = ("invalidaccesskeyid", "signaturedoesnotmatch", "forbidden", "accessdenied", "access denied",
            "unable to locate credentials", "nocredentialserror", "expiredtoken", "invalidtoken",
            "invalidclienttokenid", "(403)", "partial credentials")
_NO_BUCKET = ("nosuchbucket", "bucket does not exist")


def explain(text: str, where: Where) -> str | None:
    """What a remote's failure (an exception's or DVC's message) means and what to do, in one line;
    None if it is none of the failures kgit knows (then the caller shows the library's own words)."""
    low = text.lower()
    scheme = scheme_of(where.url)
    name = where.name or "NAME"
    if "to be installed" in low and scheme in PLUGINS:
        module, install = PLUGINS[scheme]
        return f"{where} needs DVC's {scheme} plugin ({module.replace('_', '-')}), which is not installed: {install}"
    if any(s in low for s in _UNREACHABLE):
        fix = (f"the endpoint URL (`dvc remote modify {name} endpointurl URL`)" if scheme == "s3" else "the URL")
        return f"cannot reach {where}: check that the server is up and reachable from here, and {fix}"
    if scheme != "s3":
        return None
    if any(s in low for s in _NO_BUCKET):
        return (f"{where}: the bucket does not exist: create it, or fix the URL "
                f"(`dvc remote modify {name} url s3://BUCKET/PREFIX`)")
    if any(s in low for s in _REFUSED):
        reason = next((r for r in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken")
                       if r.lower() in low), "403 Forbidden" if "forbidden" in low or "403" in low else "no credentials")
        where_else = (f"`dvc remote modify --local {name} access_key_id|secret_access_key|profile`" if where.name
                      else "~/.aws of the user this runs as")
        return (f"{where} refused the credentials ({reason}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                f"(or AWS_PROFILE, or {where_else}) and that the key may read and write the bucket")
    return None


def failure(exc: BaseException, where: Where, doing: str = "read") -> str:
    """One line for an exception raised while using a remote: explained if kgit knows it (the
    library's own exception often wraps the one that says why, e.g. S3's error code)."""
    return explain(chain_text(exc), where) or f"cannot {doing} {where}: {_one_line(exc)}"


def chain_text(exc: BaseException) -> str:
    """An exception and its causes, as text to recognise a failure in."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 5:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _one_line(exc: BaseException) -> str:
    return f"{describe(exc, 200)}"
