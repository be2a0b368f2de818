"""Which DVC remote a repository uses, read from DVC's config files without importing DVC, and what a
remote's failure means, in one line that names the fix (unreachable endpoint, refused credentials,
missing bucket, a storage plugin not installed)."""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError, describe
from kgit.core.layout import DVC_DIR


def remote_url(root: Path) -> tuple[str | None, str | None]:
    """(name, url) of the default DVC remote from the config files, without importing DVC."""
    return default_remote_in(_config_texts(root))


def remote_settings(root: Path) -> dict[str, str]:
    """The default DVC remote's settings (url, endpointurl, ...) from the config files, no DVC import."""
    return default_remote_config_in(_config_texts(root))[1]


def _config_texts(root: Path) -> list[str]:
    texts = []
    for fname in ("config", "config.local"):  # config.local overrides, like DVC
        try:
            texts.append((root / DVC_DIR / fname).read_text())
        except OSError:
            continue
    return texts


def default_remote_in(config_texts: list[str]) -> tuple[str | None, str | None]:
    """(name, url) of the default remote named by DVC config files' texts (later ones override, as
    ``.dvc/config.local`` overrides ``.dvc/config``); no DVC import."""
    name, settings = default_remote_config_in(config_texts)
    return name, settings.get("url") if name else None


MAX_CONFIG_BYTES = 1 << 20  # DVC config files are a few hundred bytes


def default_remote_config_in(config_texts: list[str]) -> tuple[str | None, dict[str, str]]:
    """(name, settings) of the default remote in DVC config files' texts, later files overriding
    earlier ones setting by setting (as DVC merges them); no DVC import."""

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
PERSONAL_OPTIONS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "sse_customer_key",
        "profile",
        "credentialpath",
        "configpath",
        "password",
        "ask_password",
        "passphrase",
        "ask_passphrase",
        "keyfile",
        "user",
        "account_key",
        "sas_token",
        "client_secret",
        "connection_string",
        "custom_auth_header",
        "gss_auth",
    }
)
# which of them are secrets: their values are never shown
SECRET_OPTIONS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "sse_customer_key",
        "password",
        "passphrase",
        "account_key",
        "sas_token",
        "client_secret",
        "connection_string",
        "custom_auth_header",
    }
)
# URL scheme -> (DVC's plugin module, what to install)
PLUGINS = {
    "s3": ("dvc_s3", "pip install 'kgit[s3]'"),
    "ssh": ("dvc_ssh", "pip install 'kgit[ssh]'"),
    "gs": ("dvc_gs", "pip install dvc-gs"),
    "azure": ("dvc_azure", "pip install dvc-azure"),
    "hdfs": ("dvc_hdfs", "pip install dvc-hdfs"),
    "webhdfs": ("dvc_webhdfs", "pip install dvc-webhdfs"),
    "oss": ("dvc_oss", "pip install dvc-oss"),
    "gdrive": ("dvc_gdrive", "pip install dvc-gdrive"),
    "webdav": ("dvc_webdav", "pip install dvc-webdav"),
    "webdavs": ("dvc_webdav", "pip install dvc-webdav"),
}


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
        raise KgitError(
            f"DVC remote {url} needs DVC's {scheme} plugin ({module.replace('_', '-')}), which is not "
            f"installed: {install}"
        ) from None


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


_UNREACHABLE = (
    "could not connect to the endpoint",
    "connection refused",
    "connect timeout",
    "connecttimeout",
    "timeout on endpoint url",
    "name or service not known",
    "temporary failure in name resolution",
    "endpointconnectionerror",
    "max retries exceeded",
    "cannot connect to host",
    "no route to host",
    "network is unreachable",
    "nodename nor servname",
)
_REFUSED = (
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "forbidden",
    "accessdenied",
    "access denied",
    "unable to locate credentials",
    "nocredentialserror",
    "expiredtoken",
    "invalidtoken",
    "invalidclienttokenid",
    "(403)",
    "partial credentials",
)
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
        fix = f"the endpoint URL (`dvc remote modify {name} endpointurl URL`)" if scheme == "s3" else "the URL"
        return f"cannot reach {where}: check that the server is up and reachable from here, and {fix}"
    if scheme != "s3":
        return None
    if any(s in low for s in _NO_BUCKET):
        return (
            f"{where}: the bucket does not exist: create it, or fix the URL "
            f"(`dvc remote modify {name} url s3://BUCKET/PREFIX`)"
        )
    if any(s in low for s in _REFUSED):
        reason = next(
            (
                r
                for r in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken")
                if r.lower() in low
            ),
            "403 Forbidden" if "forbidden" in low or "403" in low else "no credentials",
        )
        where_else = (
            f"`dvc remote modify --local {name} access_key_id|secret_access_key|profile`"
            if where.name
            else "~/.aws of the user this runs as"
        )
        return (
            f"{where} refused the credentials ({reason}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            f"(or AWS_PROFILE, or {where_else}) and that the key may read and write the bucket"
        )
    return None


def failure(exc: BaseException, where: Where, doing: str = "read") -> str:
    """One line for an exception raised while using a remote: explained if kgit knows it (the
    library's own exception often wraps the one that says why, e.g. S3's error code)."""
    return explain(chain_text(exc), where) or f"cannot {doing} {where}: {one_line_of(exc)}"


def chain_text(exc: BaseException) -> str:
    """An exception and its causes, as text to recognise a failure in."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 5:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def one_line_of(exc: BaseException) -> str:
    return f"{describe(exc, 200)}"
