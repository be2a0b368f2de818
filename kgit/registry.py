"""Reading releases from git alone: tags and ``.dvc`` files. No TensorFlow, no DVC, no download.

Each release tag's message carries a JSON summary (formats, their DVC hashes and sizes, created,
dataset, source commit), so listing thousands of releases is one ``git for-each-ref``. The full
metadata lives in each format's ``.dvc`` file (``meta.kgit``) at the tagged commit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from kgit.errors import KgitError, ReleaseNotFoundError
from kgit.git_ops import Repo
from kgit.metadata import Metadata
from kgit.versions import Version, check_name, parse_tag

SUMMARY_MARK = "kgit-release:"


@dataclass
class Release:
    name: str
    version: str
    tag: str
    commit: str  # the release commit the tag points to
    formats: dict[str, dict[str, Any]]  # format -> {path, md5, size, nfiles}
    created_at: str | None
    dataset_id: str | None
    source_commit: str | None
    tagger: str

    @property
    def key(self) -> tuple[int, int, int]:
        return Version.parse(self.version).key

    def dvc_file(self, fmt: str) -> str:
        return self.formats[fmt]["path"] + ".dvc"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tag_message(name: str, version: str, summary: dict[str, Any]) -> str:
    body = json.dumps({"name": name, "version": version, **summary})  # key order = format order
    return f"kgit release {name} {version}\n\n{SUMMARY_MARK} {body}\n"


def _parse_summary(message: str) -> dict[str, Any] | None:
    for line in message.splitlines():
        if line.startswith(SUMMARY_MARK):
            try:
                data = json.loads(line[len(SUMMARY_MARK):])
            except json.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


def releases(repo: Repo, name: str | None = None) -> list[Release]:
    """Every kgit release (optionally of one model), sorted by name then version."""
    if name is not None:
        check_name(name)
    found = []
    for tag in repo.tags(f"refs/tags/{name}@*" if name else "refs/tags"):
        parsed = parse_tag(tag.name)
        if parsed is None:
            continue
        summary = _parse_summary(tag.message)
        if summary is None:  # a GTO/other tool's version tag, not a kgit release
            continue
        model, _ = parsed
        if name is not None and model != name:
            continue
        found.append(
            Release(
                name=model,
                version=str(summary.get("version")),
                tag=tag.name,
                commit=tag.target,
                formats=summary.get("formats") or {},
                created_at=summary.get("created_at"),
                dataset_id=summary.get("dataset_id"),
                source_commit=summary.get("source_commit"),
                tagger=tag.tagger,
            )
        )
    found.sort(key=lambda r: (r.name, r.key))
    return found


def resolve(repo: Repo, name: str, version: str) -> Release:
    """The release ``name@version`` (``latest`` = highest version)."""
    check_name(name)
    candidates = releases(repo, name)
    if not candidates:
        raise ReleaseNotFoundError(f"no releases of model {name!r}: see `kgit list`")
    if version == "latest":
        return candidates[-1]
    wanted = Version.parse(version).key
    for r in candidates:
        if r.key == wanted:
            return r
    known = ", ".join(r.version for r in candidates[-5:])
    raise ReleaseNotFoundError(f"{name}@{version} is not released (latest: {known})")


def metadata(repo: Repo, release: Release, fmt: str | None = None) -> Metadata:
    """Full metadata of one format of a release, read from its ``.dvc`` file at the release commit."""
    from kgit.dvc_ops import read_dvc_file

    if not release.formats:
        raise KgitError(f"release tag {release.tag} carries no formats")
    fmt = fmt or next(iter(release.formats))
    if fmt not in release.formats:
        raise ReleaseNotFoundError(f"{release.name}@{release.version} has no {fmt} format (it has {', '.join(release.formats)})")
    dvc_path = release.dvc_file(fmt)
    text = repo.show_file(release.commit, dvc_path)
    if text is None:
        raise KgitError(f"{dvc_path} is missing at commit {release.commit[:8]} of release {release.tag}")
    data = read_dvc_file(text, dvc_path)
    meta = (data.get("meta") or {}).get("kgit")
    if not isinstance(meta, dict):
        raise KgitError(f"{dvc_path} carries no kgit metadata")
    return Metadata.from_dict(meta)


def existing_versions(repo: Repo, name: str) -> list[Version]:
    """Versions of ``name`` known from tags (any tool's) and from folders in the work tree."""
    versions = set()
    for tag in repo.tags(f"refs/tags/{name}@*"):
        parsed = parse_tag(tag.name)
        if parsed and parsed[0] == name:
            versions.add(parsed[1])
    model_dir = repo.root / "artifacts" / name
    if model_dir.is_dir():
        for fmt_dir in model_dir.iterdir():
            if fmt_dir.is_dir():
                for entry in fmt_dir.iterdir():
                    label = entry.name[:-4] if entry.name.endswith(".dvc") else entry.name
                    try:
                        versions.add(Version.parse(label))
                    except KgitError:
                        continue
    return sorted(versions)
