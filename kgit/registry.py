"""Reading releases from git alone: tags and ``.dvc`` files. No TensorFlow, no DVC, no download.

Each release tag's message carries a JSON summary (formats, their DVC hashes and sizes, created,
dataset, source commit), so listing thousands of releases is one ``git for-each-ref``. The full
metadata lives in each format's ``.dvc`` file (``meta.kgit``) at the tagged commit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from kgit.errors import KgitError, ReleaseNotFoundError
from kgit.git_ops import Repo
from kgit.metadata import Metadata
from kgit.versions import Event, Version, check_name, parse_event, parse_tag

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
    date: str = ""
    stages: list[str] = field(default_factory=list)  # stages this version is in now
    deprecated: bool = False

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


@dataclass
class HistoryEvent:
    """One line of a model's history, read from a tag."""

    event: str  # released, promoted, demoted, deprecated
    name: str
    version: str | None
    stage: str | None
    who: str
    when: str
    commit: str
    tag: str
    counter: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Registry:
    """Every kgit release and every stage/deprecation event, from one ``git for-each-ref``."""

    releases: list[Release]
    events: list[HistoryEvent]
    max_counter: dict[str, int]  # per model: the highest #N of its event tags


def read(repo: Repo, name: str | None = None) -> Registry:
    if name is not None:
        check_name(name)
    found: list[Release] = []
    raw_events: list[tuple[Event, Any]] = []
    max_counter: dict[str, int] = {}
    pattern = [f"refs/tags/{name}@*", f"refs/tags/{name}#*"] if name else ["refs/tags"]
    for p in pattern:
        for tag in repo.tags(p):
            parsed = parse_tag(tag.name)
            if parsed is None:
                event = parse_event(tag.name)
                if event is not None and (name is None or event.name == name):
                    raw_events.append((event, tag))
                    max_counter[event.name] = max(max_counter.get(event.name, 0), event.counter)
                continue
            summary = _parse_summary(tag.message)
            if summary is None:  # a GTO/other tool's version tag, not a kgit release
                continue
            model, _ = parsed
            if name is not None and model != name:
                continue
            found.append(Release(
                name=model, version=str(summary.get("version")), tag=tag.name, commit=tag.target,
                formats=summary.get("formats") or {}, created_at=summary.get("created_at"),
                dataset_id=summary.get("dataset_id"), source_commit=summary.get("source_commit"),
                tagger=tag.tagger, date=tag.date,
            ))
    found.sort(key=lambda r: (r.name, r.key))
    by_commit = {(r.name, r.commit): r for r in found}
    by_key = {(r.name, r.key): r for r in found}
    events = [HistoryEvent("released", r.name, r.version, None, r.tagger, r.date, r.commit, r.tag) for r in found]
    stage_of: dict[tuple[str, str], Release | None] = {}
    for event, tag in sorted(raw_events, key=lambda et: (et[0].name, et[0].counter, et[1].date)):
        target = by_commit.get((event.name, tag.target))
        if event.kind == "deprecate" and event.version is not None:
            target = by_key.get((event.name, event.version.key))
            if target is not None:
                target.deprecated = True
        elif event.kind == "promote" and event.stage:
            stage_of[(event.name, event.stage)] = target
        elif event.kind == "demote" and event.stage:
            stage_of[(event.name, event.stage)] = None
        label = {"promote": "promoted", "demote": "demoted", "deprecate": "deprecated",
                 "deprecate-model": "deprecated"}[event.kind]
        events.append(HistoryEvent(label, event.name, target.version if target else None, event.stage,
                                   tag.tagger, tag.date, tag.target, tag.name, event.counter))
    for (_model, stage), rel in sorted(stage_of.items(), key=lambda kv: kv[0]):
        if rel is not None:
            rel.stages.append(stage)
    events.sort(key=lambda e: (e.name, e.when, e.counter))
    return Registry(found, events, max_counter)


def releases(repo: Repo, name: str | None = None) -> list[Release]:
    """Every kgit release (optionally of one model), sorted by name then version, with stages."""
    return read(repo, name).releases


def resolve(repo: Repo, name: str, version: str) -> Release:
    """The release ``name@version``; ``latest`` = highest version not deprecated; ``#stage`` = the
    version in that stage."""
    check_name(name)
    candidates = releases(repo, name)
    if not candidates:
        raise ReleaseNotFoundError(f"no releases of model {name!r}: see `kgit list`")
    if version.startswith("#"):
        stage = version[1:]
        for r in candidates:
            if stage in r.stages:
                return r
        assigned = sorted({s for r in candidates for s in r.stages})
        raise ReleaseNotFoundError(
            f"no version of {name} is in stage {stage!r}"
            + (f" (assigned stages: {', '.join(assigned)})" if assigned else " (no stage is assigned)")
        )
    if version == "latest":
        live = [r for r in candidates if not r.deprecated]
        if not live:
            raise ReleaseNotFoundError(f"every version of {name} is deprecated: name one explicitly ({name}@{candidates[-1].version})")
        return live[-1]
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
