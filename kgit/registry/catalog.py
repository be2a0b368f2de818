"""Reading releases from git alone: tags and ``.dvc`` files. No TensorFlow, no DVC, no download.

Each release tag's message carries a JSON summary (formats, their DVC hashes and sizes, created,
dataset, source commit, metrics), so listing thousands of releases needs no other file: one ``git
for-each-ref`` for the tag names, and each tag object is parsed once per clone (kgit.registry.tagcache). The full
metadata lives in each format's ``.dvc`` file (``meta.kgit``) at the tagged commit.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

from kgit.core import bounded_yaml, layout, metrics
from kgit.core.errors import (
    InvalidReleaseError,
    KgitError,
    ReleaseNotFoundError,
    closest,
    did_you_mean,
)
from kgit.core.layout import METADATA_FILE
from kgit.core.metadata import FORMATS, Metadata, SourceInfo
from kgit.registry.compat_records import CompatRecord, attach, record_from_tag
from kgit.registry.seen import SeenRecord
from kgit.registry.tagcache import TagCache
from kgit.registry.versions import (
    Event,
    Version,
    check_name,
    parse_compat,
    parse_event,
    parse_tag,
    tag_version_key,
)
from kgit.store.dvc_ops import read_dvc_file
from kgit.store.git_ops import MAX_TAG_BYTES, Repo, TagInfo

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
    object: str = ""  # the tag object's id
    problems: list[str] = field(default_factory=list)  # why this tag is not a valid release (empty: valid)
    # how good the model is: flat dotted keys (val.accuracy) -> finite floats, from the tag's summary
    metrics: dict[str, float] = field(default_factory=dict)
    # the keys of ``metrics`` that `--evaluate` measured on the model reloaded from the artifact
    measured: tuple[str, ...] = ()
    # other releases whose tags name the same data (one of them is a tag made by hand; its problem says which)
    shares_with: tuple[str, ...] = ()
    # whether the code that made it was committed, in short (``source_summary``); None before kgit recorded it
    source: dict[str, Any] | None = None
    # where it was checked to load (kgit compat): the valid records of its compat tags, newest first
    compat: list[CompatRecord] = field(default_factory=list)

    @property
    def only_shares_data(self) -> bool:
        """Whether sharing its data with another release, undecided without the data, is its only problem."""
        return bool(self.shares_with) and len(self.problems) == 1

    @cached_property
    def key(self) -> tuple[int, int, int]:
        return Version.parse(self.version).key

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        return "valid" if self.valid else f"invalid: {self.problems[0]}"

    def dvc_file(self, fmt: str) -> str:
        return layout.dvc_file(self.formats[fmt]["path"])

    def to_dict(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict: its deep copy was most of `kgit list --json` at 15,000 releases
        return {
            "name": self.name,
            "version": self.version,
            "tag": self.tag,
            "commit": self.commit,
            "formats": {f: dict(i) for f, i in self.formats.items()},
            "created_at": self.created_at,
            "dataset_id": self.dataset_id,
            "source_commit": self.source_commit,
            "tagger": self.tagger,
            "date": self.date,
            "stages": list(self.stages),
            "deprecated": self.deprecated,
            "object": self.object,
            "problems": list(self.problems),
            "metrics": dict(self.metrics),
            "measured": list(self.measured),
            "source": dict(self.source) if self.source is not None else None,
            "status": self.status,
            "compat": [c.to_dict() for c in self.compat],
        }


def source_summary(source: SourceInfo) -> dict[str, Any]:
    """The metadata's source block as a release tag's summary carries it: the entry, whether the code
    was all committed, and how many files were not (the file names are in the metadata)."""
    return {"entry": source.entry, "dirty": source.dirty, "uncommitted": len(source.modified) + len(source.untracked)}


def _source_from_summary(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(the summary's source block, what is wrong with it)."""
    if value is None:
        return None, None
    ok = (
        isinstance(value, dict)
        and set(value) == {"entry", "dirty", "uncommitted"}
        and (value["entry"] is None or (isinstance(value["entry"], str) and len(value["entry"]) <= 4096))
        and isinstance(value["dirty"], bool)
        and isinstance(value["uncommitted"], int)
        and not isinstance(value["uncommitted"], bool)
        and value["uncommitted"] >= 0
    )
    return (dict(value), None) if ok else (None, "its message's source is malformed")


def tag_message(name: str, version: str, summary: dict[str, Any]) -> str:
    body = json.dumps({"name": name, "version": version, **summary})  # key order = format order
    return f"kgit release {name} {version}\n\n{SUMMARY_MARK} {body}\n"


def _parse_summary(message: str) -> dict[str, Any] | str | None:
    """The JSON summary of a kgit release tag's message; None if the message has none (another
    tool's tag); a string saying what is wrong if it is there but malformed."""
    for line in message.splitlines():
        if line.startswith(SUMMARY_MARK):
            try:
                data = bounded_yaml.load_json(
                    line[len(SUMMARY_MARK) :], "its message's summary", max_bytes=MAX_TAG_BYTES
                )
            except bounded_yaml.TooDeep:
                return "its message's summary is nested too deeply"
            except bounded_yaml.LimitError as exc:
                return str(exc)
            except bounded_yaml.SyntaxProblem:
                return "its message's summary is not valid JSON"
            if not isinstance(data, dict):
                return "its message's summary is not a JSON object"
            return data  # only known fields of known types are kept from it (release_from_tag)
    return None


_FORMAT_FIELDS = ("path", "md5", "size", "nfiles", "resumable", "new_bytes")
_MD5_RE = re.compile(r"^[0-9a-f]{32}(\.dir)?$")


def _summary_problems(name: str, tag_version: Version, summary: dict[str, Any]) -> tuple[str, list[str]]:
    """(the version label to show, what in the summary contradicts the tag or has the wrong type)."""
    problems = []
    if summary.get("name") != name:
        problems.append(f"its message names model {str(summary.get('name'))[:64]!r}")
    label = tag_version.semver
    said = summary.get("version")
    try:
        parsed = Version.parse(said) if isinstance(said, str) else None
    except KgitError:
        parsed = None
    if parsed is None:
        problems.append(f"its message gives no valid version ({str(said)[:32]!r})")
    elif parsed.key != tag_version.key:
        problems.append(f"its message says {parsed}, its name says {tag_version}")
    else:
        label = str(parsed)
    formats = summary.get("formats")
    if not isinstance(formats, dict) or not formats:
        problems.append("its message lists no formats")
        return label, problems
    for fmt, info in formats.items():
        want = layout.release_dir(name, fmt, label)
        if fmt not in FORMATS:
            problems.append(f"its message lists an unknown format {str(fmt)[:32]!r}")
        elif not isinstance(info, dict):
            problems.append(f"its message's {fmt} entry is not an object")
        elif info.get("path") != want:
            problems.append(f"its message puts {fmt} at {str(info.get('path'))[:80]!r}, not {want}")
        elif not isinstance(info.get("md5"), str) or not _MD5_RE.match(info["md5"]):
            problems.append(f"its message's {fmt} DVC hash is malformed")
        elif any(
            info.get(k) is not None and (not isinstance(info.get(k), int) or isinstance(info.get(k), bool))
            for k in ("size", "nfiles", "new_bytes")
        ):
            problems.append(f"its message's {fmt} size is not a whole number")
    for key in ("created_at", "dataset_id", "source_commit"):
        if summary.get(key) is not None and not isinstance(summary.get(key), str):
            problems.append(f"its message's {key} is not text")
    bad_metrics = metrics.from_summary(summary.get("metrics"), summary.get("measured"))[2]
    if bad_metrics:
        problems.append(bad_metrics)
    bad_source = _source_from_summary(summary.get("source"))[1]
    if bad_source:
        problems.append(bad_source)
    return label, problems


def release_from_tag(tag: TagInfo) -> Release | None:
    """The release a tag declares, with its problems; None for tags that are not kgit releases
    (another tool's tags, lightweight tags: kgit never makes those, and never reads them as releases)."""
    parsed = parse_tag(tag.name)
    if parsed is None or not tag.annotated:
        return None
    summary = _parse_summary(tag.message)
    if summary is None:
        return None
    model, tag_version = parsed
    if isinstance(summary, str):
        return Release(
            model,
            tag_version.semver,
            tag.name,
            tag.target,
            {},
            None,
            None,
            None,
            tag.tagger,
            tag.date,
            object=tag.object,
            problems=[summary],
        )
    label, problems = _summary_problems(model, tag_version, summary)
    formats = summary.get("formats")
    # keep the known fields of well-formed entries (an invalid release is still listed with the formats
    # it names); nothing else from the message survives, so nothing deeply nested reaches later code
    formats = (
        {
            f: {k: i.get(k) for k in _FORMAT_FIELDS if isinstance(i.get(k), (str, int)) or i.get(k) is None}
            for f, i in formats.items()
            if f in FORMATS and isinstance(i, dict)
        }
        if isinstance(formats, dict)
        else {}
    )
    text = {
        k: v if isinstance(v, str) else None
        for k, v in ((k, summary.get(k)) for k in ("created_at", "dataset_id", "source_commit"))
    }
    values, measured, _bad = metrics.from_summary(summary.get("metrics"), summary.get("measured"))
    return Release(
        name=model,
        version=label,
        tag=tag.name,
        commit=tag.target,
        formats=dict(formats or {}),
        created_at=text["created_at"],
        dataset_id=text["dataset_id"],
        source_commit=text["source_commit"],
        tagger=tag.tagger,
        date=tag.date,
        object=tag.object,
        problems=problems,
        metrics=values,
        measured=measured,
        source=_source_from_summary(summary.get("source"))[0],
    )


@dataclass
class HistoryEvent:
    """One line of a model's history, read from a tag."""

    event: str  # released, promoted (or "rolled back", as kgit history labels it), demoted, deprecated
    name: str
    version: str | None
    stage: str | None
    who: str
    when: str
    commit: str
    tag: str
    counter: int = 0
    note: str | None = None  # the --note of a stage or deprecation tag (kgit.registry.stage_checks.event_notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Registry:
    """Every kgit release and every stage/deprecation event, read from the tags."""

    releases: list[Release]
    events: list[HistoryEvent]
    max_counter: dict[str, int]  # per model: the highest #N of its event tags
    # (model, stage) -> why the stage cannot be trusted (its tag changed since this clone saw it)
    stage_problems: dict[tuple[str, str], str] = field(default_factory=dict)
    # (model, stage) -> the commit its last event put in it (None: demoted), whatever was read
    stage_commits: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # every compat record read (the valid ones are also in their release's ``compat``)
    compat: list[CompatRecord] = field(default_factory=list)


def read(repo: Repo, name: str | None = None, *, remember: bool = True, version: Version | None = None) -> Registry:
    """Every release and event tag (of one model if ``name``; with ``version`` too, only that
    version's tags and the model's stage tags, so resolving one version of a model with thousands
    does not read them all). With ``remember``, each tag is checked against (and added to) what this
    clone has seen before (kgit.registry.seen)."""
    if name is None:
        with _collector_paused():  # 15,000 releases are ~200,000 small objects, none in a cycle
            return _read(repo, ["refs/tags"], None, remember)
    check_name(name)
    if version is None:
        return _read(repo, [f"refs/tags/{name}@*", f"refs/tags/{name}#*"], name, remember)
    own = f"refs/tags/{name}@{version.semver}"
    return _read(repo, [own, f"{own}!*", f"{own}#*", f"refs/tags/{name}#*"], name, remember)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a large registry is built (its passes over the growing
    heap were a fifth of `kgit list` at 15,000 releases), back as it was after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _read(repo: Repo, patterns: list[str], name: str | None, remember: bool) -> Registry:
    found: list[Release] = []
    raw_events: list[tuple[Event, TagInfo]] = []
    max_counter: dict[str, int] = {}
    seen = SeenRecord(repo) if remember else None
    changed_events: dict[str, str] = {}
    compat: list[CompatRecord] = []
    tags = _tags(repo, patterns, name, compat)
    if seen is not None:
        seen.preload(len(tags) + len(compat))
        for rec in compat:
            problem = seen.check(TagInfo(rec.tag, rec.commit, rec.tagger, rec.date, "", rec.object))
            if problem:
                rec.problems.insert(0, problem)
    for tag, rel in tags:
        if rel is None:  # an event tag
            event = parse_event(tag.name)
            assert event is not None
            raw_events.append((event, tag))
            max_counter[event.name] = max(max_counter.get(event.name, 0), event.counter)
            problem = seen.check(tag) if seen is not None else None
            if problem:
                changed_events[tag.name] = problem
            continue
        problem = seen.check(tag, {f: i.get("md5") for f, i in rel.formats.items()}) if seen is not None else None
        if problem:
            rel.problems.insert(0, problem)
        found.append(rel)
    if seen is not None:
        seen.save()
    _flag_shared_data(repo, found)
    reg = _assemble(found, raw_events, max_counter, changed_events)
    if compat:
        attach(compat, reg.releases)
        reg.compat = compat
    return reg


def _flag_shared_data(repo: Repo, found: list[Release]) -> None:
    """Two releases never hold the same data (each version folder's metadata.json names its own
    model, version and format): a tag made by hand over another release's data shares its DVC
    hash. Which one is genuine, the data itself says when this clone's DVC cache holds it; without
    the data, each is listed invalid (``kgit check`` reads the remote and tells which)."""
    by_md5: dict[str, list[tuple[Release, str]]] = {}
    for rel in found:
        if rel.valid:
            for fmt, info in rel.formats.items():
                by_md5.setdefault(str(info.get("md5")), []).append((rel, fmt))
    for md5, holders in by_md5.items():
        if len(holders) < 2:
            continue
        from kgit.store.storage import local_identity

        said = local_identity(repo.root, md5) if not repo.bare else None
        for rel, fmt in holders:
            if said == (rel.name, rel.version, fmt):
                continue
            others = ", ".join(f"{r.name}@{r.version}" for r, _f in holders if r is not rel)
            rel.shares_with = tuple(r.tag for r, _f in holders if r is not rel)
            rel.problems.append(
                f"its {fmt} data (DVC hash {md5[:12]}) is also {others}'s: "
                + (
                    f"the data's {METADATA_FILE} names {':'.join(said)}"
                    if said
                    else "a tag made by hand over another release's data (`kgit check` reads the data and tells which)"
                )
            )


_FEW_TAGS = 64


def _tags(
    repo: Repo, patterns: list[str], name: str | None, compat: list[CompatRecord]
) -> list[tuple[TagInfo, Release | None]]:
    """The release tags (with their release) and event tags (with None) among ``patterns``, of
    model ``name`` if given, in git's order; the compat records among them are added to ``compat``.
    Tag objects already parsed in this clone come from kgit.registry.tagcache; the others are read
    in one ``git cat-file --batch`` and parsed once."""
    # (tag name, object type, object id, the version of a release tag or None for an event tag)
    wanted: list[tuple[str, str, str, Version | None]] = []
    compat_refs: list[tuple[str, str, str]] = []
    for tag_name_, otype, oid in repo.tag_refs(*patterns):
        parsed = parse_tag(tag_name_)
        if parsed is not None:
            if (name is None or parsed[0] == name) and otype == "tag":  # lightweight: never a release
                wanted.append((tag_name_, otype, oid, parsed[1]))
            continue
        event = parse_event(tag_name_)
        if event is not None:
            if name is None or event.name == name:
                wanted.append((tag_name_, otype, oid, None))
            continue
        record = parse_compat(tag_name_)
        if record is not None and (name is None or record[0] == name):
            compat_refs.append((tag_name_, otype, oid))
    known: dict[tuple[str, str], tuple[TagInfo, Release | None]] = {}
    missing = []
    # a few tags (one version's) are read faster than the cache file of thousands
    cache = TagCache(repo) if len(wanted) + len(compat_refs) > _FEW_TAGS else None
    for tag_name_, otype, oid, version in wanted:
        if otype != "tag":
            continue
        hit = _from_entry(tag_name_, oid, version, cache.get(tag_name_, oid)) if cache is not None else None
        if hit is None:
            missing.append((tag_name_, oid))
        else:
            known[(tag_name_, oid)] = hit
    for tag_name_, otype, oid in compat_refs:
        if otype != "tag":  # kgit writes records as annotated tags: a lightweight one is listed invalid
            compat.append(_compat_record(TagInfo(tag_name_, oid, "", "", "", oid, False)))
            continue
        entry = cache.get(tag_name_, oid) if cache is not None else None
        if entry is not None and isinstance(entry[4], dict) and isinstance(entry[4].get("message"), str):
            compat.append(_compat_record(TagInfo(tag_name_, entry[1], entry[2], entry[3], entry[4]["message"], oid)))
        else:
            missing.append((tag_name_, oid))
    for info in repo.annotated_tags(missing):
        if parse_compat(info.name) is not None:
            # a record is a few hundred bytes: its message is kept as it is and parsed on each read
            compat.append(_compat_record(info))
            if cache is not None:
                cache.put(info.object, [info.name, info.target, info.tagger, info.date, {"message": info.message}])
            continue
        rel = release_from_tag(info) if parse_tag(info.name) is not None else None
        if cache is not None:
            cache.put(
                info.object,
                [info.name, info.target, info.tagger, info.date, _release_record(rel) if rel is not None else None],
            )
        known[(info.name, info.object)] = (replace(info, message=""), rel)
    if cache is not None:
        cache.save(prune=patterns == ["refs/tags"])
    result: list[tuple[TagInfo, Release | None]] = []
    for tag_name_, otype, oid, version in wanted:
        if otype != "tag":  # a lightweight event tag counts, as GTO counts it
            result.append((TagInfo(tag_name_, oid, "", "", "", oid, False), None))
        elif (tag_name_, oid) in known:
            info, rel = known[(tag_name_, oid)]
            if version is None:
                result.append((info, None))
            elif rel is not None:
                result.append((info, rel))
    return result


def _compat_record(info: TagInfo) -> CompatRecord:
    rec = record_from_tag(info)
    assert rec is not None  # only tags whose names parse as compat records get here
    return rec


def _release_record(rel: Release) -> list[Any]:
    """What a tag's parse gives, less what the tag itself gives (name, target, tagger, date), as JSON."""
    return [
        rel.version,
        rel.formats,
        rel.created_at,
        rel.dataset_id,
        rel.source_commit,
        list(rel.problems),
        rel.metrics,
        list(rel.measured),
        rel.source,
    ]


def _from_entry(
    tag: str, oid: str, version: Version | None, entry: list[Any] | None
) -> tuple[TagInfo, Release | None] | None:
    """A cache entry as (TagInfo, its release or None); None if there is none or it is malformed."""
    if entry is None:
        return None
    info = TagInfo(tag, entry[1], entry[2], entry[3], "", oid, True)
    record = entry[4]
    if record is None or version is None:
        return (info, None) if record is None else None
    if not isinstance(record, list) or len(record) != 9:  # 8: written before releases recorded their source
        return None
    label, formats, created, dataset, source, problems, values, measured, code = record
    # the file is parsed afresh on each read: its lists and dicts are this release's own
    if (
        type(label) is not str
        or type(formats) is not dict
        or type(problems) is not list
        or type(values) is not dict
        or type(measured) is not list
        or (code is not None and type(code) is not dict)
    ):
        return None
    for entry_of_format in formats.values():  # a loop, not all(): this runs 15,000 times per listing
        if type(entry_of_format) is not dict:
            return None
    rel = Release(
        tag.split("@", 1)[0],
        label,
        tag,
        info.target,
        formats,
        created,
        dataset,
        source,
        info.tagger,
        info.date,
        object=oid,
        problems=problems,
        metrics=values,
        measured=tuple(measured),
        source=code,
    )
    rel.__dict__["key"] = version.key  # the tag's own version: a summary that disagrees is a problem
    return info, rel


def _assemble(
    found: list[Release],
    raw_events: list[tuple[Event, TagInfo]],
    max_counter: dict[str, int],
    changed_events: dict[str, str],
) -> Registry:
    """Apply the event tags (in GTO's order) to the releases: stages, deprecation, history."""
    found.sort(key=lambda r: (r.name, r.key))
    valid = [r for r in found if r.valid]
    by_commit = {(r.name, r.commit): r for r in valid}
    by_key = {(r.name, r.key): r for r in valid}
    events = [HistoryEvent("released", r.name, r.version, None, r.tagger, r.date, r.commit, r.tag) for r in found]
    stage_of: dict[tuple[str, str], Release | None] = {}
    stage_problems: dict[tuple[str, str], str] = {}
    stage_commits: dict[tuple[str, str], str | None] = {}
    for event, tag in sorted(raw_events, key=lambda et: (et[0].name, et[0].counter, et[1].date)):
        target = by_commit.get((event.name, tag.target))
        if event.kind == "deprecate" and event.version is not None:
            target = by_key.get((event.name, event.version.key))
            if target is not None:
                target.deprecated = True
        elif event.kind in ("promote", "demote") and event.stage:
            stage_of[(event.name, event.stage)] = target if event.kind == "promote" else None
            stage_commits[(event.name, event.stage)] = tag.target if event.kind == "promote" else None
            if tag.name in changed_events:
                stage_problems[(event.name, event.stage)] = changed_events[tag.name]
            else:
                stage_problems.pop((event.name, event.stage), None)
        label = {
            "promote": "promoted",
            "demote": "demoted",
            "deprecate": "deprecated",
            "deprecate-model": "deprecated",
        }[event.kind]
        events.append(
            HistoryEvent(
                label,
                event.name,
                target.version if target else None,
                event.stage,
                tag.tagger,
                tag.date,
                tag.target,
                tag.name,
                event.counter,
            )
        )
    for (_model, stage), rel in sorted(stage_of.items(), key=lambda kv: kv[0]):
        if rel is not None:
            rel.stages.append(stage)
    events.sort(key=lambda e: (e.name, e.when, e.counter))
    return Registry(found, events, max_counter, stage_problems, stage_commits)


def releases(repo: Repo, name: str | None = None) -> list[Release]:
    """Every kgit release (optionally of one model), sorted by name then version, with stages."""
    return read(repo, name).releases


def resolve(repo: Repo, name: str, version: str) -> Release:
    """The release ``name@version``; ``latest`` = highest valid version not deprecated; ``#stage`` =
    the version in that stage. A tag that is not a valid release (its message, ``.dvc`` files or
    metadata contradict its name, or it changed since this clone first saw it) is refused with
    InvalidReleaseError naming the mismatch. Reads only the tags it needs: the version's own and
    the model's stage tags (``latest`` first lists the names of the model's tags, a cheap call)."""
    check_name(name)
    if version.startswith("#"):
        return _resolve_stage(repo, name, version[1:])
    if version == "latest":
        keys = _version_keys(repo.tag_names(f"refs/tags/{name}@*"), name)
        for key in reversed(keys):  # highest first; a forged high tag never wins
            rel = _one(repo, name, Version(*key))
            if (
                rel is not None
                and not rel.deprecated
                and rel.valid
                and not release_problems(repo, rel)
                and not _data_identity(repo, rel)
            ):
                return rel
        if not keys:
            raise no_model(repo, name)
        raise ReleaseNotFoundError(
            f"every version of {name} is deprecated or invalid: name one explicitly "
            f"({name}@{Version(*keys[-1])}); see `kgit list {name}`"
        )
    wanted = Version.parse(version)
    rel = _one(repo, name, wanted)
    if rel is not None:
        return _checked(repo, rel)
    keys = _version_keys(repo.tag_names(f"refs/tags/{name}@*"), name)
    if not keys:
        raise no_model(repo, name)
    latest = f"latest: {', '.join(str(Version(*k)) for k in keys[-5:])}"
    # each version as one may type it: v2 for v2.0.0, and in full
    spelled = {
        text: Version(*k) for k in keys for text in ([f"v{k[0]}"] if k[1:] == (0, 0) else []) + [Version(*k).semver]
    }
    match = closest(version, spelled)
    if match is not None:
        raise ReleaseNotFoundError(f"{name}@{version} is not released: did you mean {name}@{match}? ({latest})")
    raise ReleaseNotFoundError(f"{name}@{version} is not released ({latest})")


def model_names(repo: Repo) -> list[str]:
    """The models that have release tags here, from the tags' names alone (cheap)."""
    return sorted({parsed[0] for tag in repo.tag_names("refs/tags/*@*") if (parsed := tag_version_key(tag))})


def no_model(repo: Repo, name: str) -> ReleaseNotFoundError:
    """The refusal of model ``name``, which has no releases here: suggests the model it was
    probably meant to be."""
    match = closest(name, model_names(repo))
    if match is not None:
        return ReleaseNotFoundError(f"no model {name!r}: did you mean {match!r}?")
    return ReleaseNotFoundError(f"no releases of model {name!r}: see `kgit list`")


def require_formats(rel: Release, formats: Sequence[str]) -> None:
    """Refuse (ReleaseNotFoundError) a format ``rel`` was not released in, naming the ones it was
    (or the format that was probably meant, for a name that is no format at all)."""
    for fmt in formats:
        if fmt in rel.formats:
            continue
        released = ", ".join(rel.formats) or "nothing"
        if fmt not in FORMATS:
            raise ReleaseNotFoundError(
                f"unknown format {fmt!r}: "
                + did_you_mean(fmt, FORMATS, f"{rel.name}@{rel.version} was released as {released}")
            )
        raise ReleaseNotFoundError(f"{rel.name}@{rel.version} has no {fmt} format: it was released as {released}")


def _version_keys(tags: list[str], name: str) -> list[tuple[int, int, int]]:
    """The (major, minor, patch) of ``name``'s version tags among ``tags``, lowest first: tuples,
    not Version objects, as a model may have thousands."""
    keys = set()
    for tag in tags:
        parsed = tag_version_key(tag)
        if parsed is not None and parsed[0] == name:
            keys.add(parsed[1])
    return sorted(keys)


def _one(repo: Repo, name: str, version: Version) -> Release | None:
    """The kgit release ``name@version`` with its stages and deprecation, from its own tags only."""
    found = read(repo, name, version=version).releases
    return found[0] if found else None


def _resolve_stage(repo: Repo, name: str, stage: str) -> Release:
    reg = _read(repo, [f"refs/tags/{name}#*"], name, remember=True)  # the model's stage tags only
    if (name, stage) in reg.stage_problems:
        raise InvalidReleaseError(f"stage {stage} of {name} cannot be trusted: {reg.stage_problems[(name, stage)]}")
    commit = reg.stage_commits.get((name, stage))
    assigned = {s for (_n, s), c in reg.stage_commits.items() if c is not None}
    for tag in repo.tag_names(f"refs/tags/{name}@*", points_at=commit) if commit else []:
        parsed = parse_tag(tag)
        rel = _one(repo, name, parsed[1]) if parsed and parsed[0] == name else None
        if rel is not None and stage in rel.stages:
            return _checked(repo, rel)
    if not reg.events and not repo.tag_names(f"refs/tags/{name}@*"):
        raise no_model(repo, name)
    match = closest(stage, assigned)
    raise ReleaseNotFoundError(
        f"no version of {name} is in stage {stage!r}"
        + (f": did you mean {name}#{match}?" if match is not None else "")
        + (f" (assigned stages: {', '.join(sorted(assigned))})" if assigned else " (no stage is assigned)")
    )


def _checked(repo: Repo, rel: Release) -> Release:
    problems = rel.problems or release_problems(repo, rel) or _data_identity(repo, rel)
    if problems:
        raise InvalidReleaseError(f"{rel.tag} is not a valid release: {problems[0]}")
    return rel


def _data_identity(repo: Repo, rel: Release) -> list[str]:
    """What the release's data, when this clone's DVC cache holds it, says against the tag: its
    metadata.json must name this model, version and format (two small files read, no DVC import)."""
    from kgit.store.storage import local_identity

    problems = []
    for fmt, info in rel.formats.items():
        said = local_identity(repo.root, str(info.get("md5"))) if not repo.bare else None
        if said is not None and said != (rel.name, rel.version, fmt):
            problems.append(
                f"the {METADATA_FILE} in its {fmt} data is for {':'.join(said)} (a tag made by hand over "
                "another release's data)"
            )
    return problems


def release_problems(
    repo: Repo,
    rel: Release,
    formats: list[str] | None = None,
    *,
    texts: dict[tuple[str, str], str | None] | None = None,
) -> list[str]:
    """Git only: what at the tagged commit contradicts the tag. Each format's ``.dvc`` file must be
    at the path the tag names, hold the hash the tag recorded, and carry kgit metadata naming this
    model, version and format, with the metrics the tag carries. ``texts``: the files already read,
    ``(commit, path) -> text`` (``Repo.show_files``), so checking many releases costs one git call."""
    problems = list(rel.problems)
    for _fmt, found, _meta in _dvc_checks(repo, rel, formats, texts):
        problems += found
    return problems


def checked_metadata(
    repo: Repo, rel: Release, texts: dict[tuple[str, str], str | None] | None = None
) -> tuple[list[str], Metadata | None]:
    """``release_problems`` and, when there are none, the metadata of the release's first format,
    from one reading of each ``.dvc`` file (parsing them is most of the cost at thousands of releases)."""
    problems = list(rel.problems)
    first = None
    for _fmt, found, meta in _dvc_checks(repo, rel, None, texts):
        problems += found
        first = meta if first is None else first
    if problems or first is None:
        return problems or [f"release tag {rel.tag} carries no formats"], None
    try:
        return [], Metadata.from_dict(first)
    except KgitError as exc:
        return [str(exc)], None


def _dvc_checks(
    repo: Repo, rel: Release, formats: list[str] | None, texts: dict[tuple[str, str], str | None] | None
) -> Iterator[tuple[str, list[str], dict[str, Any] | None]]:
    """Per format: (format, what contradicts the tag, its kgit metadata when it names this release)."""
    for fmt, info in rel.formats.items():
        if formats is not None and fmt not in formats:
            continue
        dvc_path = layout.dvc_file(info["path"])
        text = texts.get((rel.commit, dvc_path)) if texts is not None else repo.show_file(rel.commit, dvc_path)
        if text is None:
            yield fmt, [f"its commit {rel.commit[:8]} has no {dvc_path}"], None
            continue
        try:
            data = read_dvc_file(text, dvc_path)
        except KgitError as exc:
            yield fmt, [str(exc).split(": restore it")[0] + f" (at {rel.commit[:8]})"], None
            continue
        problems = []
        out = data["outs"][0] if isinstance(data["outs"][0], dict) else {}
        if out.get("md5") != info.get("md5"):
            problems.append(f"{dvc_path} has DVC hash {str(out.get('md5'))[:40]}, the tag recorded {info.get('md5')}")
        meta = (data.get("meta") or {}).get("kgit") if isinstance(data.get("meta"), dict) else None
        if not isinstance(meta, dict):
            yield fmt, [*problems, f"{dvc_path} carries no kgit metadata"], None
            continue
        said = (meta.get("name"), meta.get("version"), meta.get("format"))
        if said != (rel.name, rel.version, fmt):
            problems.append(
                f"{dvc_path}'s metadata says {':'.join(str(x)[:40] for x in said)}, "
                f"the tag says {rel.name}:{rel.version}:{fmt}"
            )
        elif (meta.get("metrics") or {}) != rel.metrics or list(meta.get("measured") or []) != list(rel.measured):
            problems.append(f"its message's metrics differ from those in {dvc_path}'s metadata")
        elif rel.source is not None and _recorded_source(meta) != rel.source:
            problems.append(f"its message's source differs from the one in {dvc_path}'s metadata")
        yield fmt, problems, meta


def _recorded_source(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the source block a ``.dvc`` file's metadata records (None: none, or malformed)."""
    try:
        source = SourceInfo.from_dict(meta.get("source"))
    except TypeError:
        return None
    return source_summary(source) if source is not None else None


def metadata(repo: Repo, release: Release, fmt: str | None = None) -> Metadata:
    """Full metadata of one format of a release, read from its ``.dvc`` file at the release commit."""
    if not release.formats:
        raise KgitError(f"release tag {release.tag} carries no formats")
    fmt = fmt or next(iter(release.formats))
    require_formats(release, [fmt])
    dvc_path = release.dvc_file(fmt)
    text = repo.show_file(release.commit, dvc_path)
    if text is None:
        raise KgitError(f"{dvc_path} is missing at commit {release.commit[:8]} of release {release.tag}")
    data = read_dvc_file(text, dvc_path)
    meta = (data.get("meta") or {}).get("kgit") if isinstance(data.get("meta"), dict) else None
    if not isinstance(meta, dict):
        raise KgitError(f"{dvc_path} carries no kgit metadata")
    return Metadata.from_dict(meta)


def existing_versions(repo: Repo, name: str) -> list[Version]:
    """Versions of ``name`` known from tags (any tool's) and from folders in the work tree."""
    versions = set()
    tags = repo.tag_names(f"refs/tags/{name}@*") + SeenRecord(repo).names(f"{name}@")
    for tag in tags:  # with tags this clone saw once and no longer has: a version is never reused
        parsed = parse_tag(tag)
        if parsed and parsed[0] == name:
            versions.add(parsed[1])
    model_dir = repo.root / layout.model_dir(name)
    if model_dir.is_dir():
        for fmt_dir in model_dir.iterdir():
            if fmt_dir.is_dir():
                for entry in fmt_dir.iterdir():
                    label = layout.tracked_path(entry.name)
                    try:
                        versions.add(Version.parse(label))
                    except KgitError:
                        continue
    return sorted(versions, key=lambda v: v.key)
