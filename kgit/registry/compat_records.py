"""Compatibility records: whether a release loads in another environment, kept in its history.

``kgit compat NAME@VERSION --with keras==3.12.*`` records each environment's result as one annotated
tag ``NAME@vX.Y.Z#compat#KEY`` on the release commit; no released file changes. ``KEY`` is the
environment's key (``env_key``): 16 hex digits of the sha256 of every package it resolved to, its
Python version and platform; the same key names the environment in kgit's cache. The message's line
``kgit-compat: {JSON}`` holds the record: ``name``, ``version``, ``key``, ``result`` (``loads``,
``loads-but-differs`` or ``fails``), ``max_diff``, ``error``, per format the same three, ``packages``
(name -> version, all of them), ``requested`` (the specifiers asked for), ``python``, ``platform``,
``env`` (the named environment, if one was used) and ``atol``.

A record is read only in that exact form: its name and message must agree (the key is recomputed from
the packages), it must be annotated and point at its release's commit. Like release and stage tags, a
shared record never moves and is never deleted; pre-push and the server refuse a malformed one
(``push_problem``). ``passes`` judges a record against a named environment's specifiers (the
``require_compat`` gate, kgit.registry.gates). Git only: no TensorFlow, no DVC.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError, one_line
from kgit.core.metadata import FORMATS
from kgit.registry.versions import Version, check_name, compat_tag, parse_compat
from kgit.store.git_ops import TagInfo

COMPAT_MARK_LINE = "kgit-compat:"
RESULTS = ("loads", "loads-but-differs", "fails")  # best first
MAX_PACKAGES = 500
_PACKAGE_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?", re.ASCII)
_PKG_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}", re.ASCII)
_TEXT_LIMIT = 500


def canonical(name: str) -> str:
    """A distribution name as the package index compares them (PEP 503): ``TF_Keras`` -> ``tf-keras``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def env_key(packages: Mapping[str, str], python: str, platform: str) -> str:
    """The key of an environment: the same packages at the same versions, on the same Python and
    platform, give the same key (names compared as the index compares them)."""
    body = {"packages": sorted((canonical(k), v) for k, v in packages.items()), "python": python, "platform": platform}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def verdict(result: str, max_diff: float | None, error: str | None) -> str:
    """One result as a person reads it: ``loads``, ``loads-but-differs (max diff 3e-04)``, ``fails (why)``."""
    if result == "loads-but-differs":
        return f"loads-but-differs (max diff {_diff_text(max_diff)})"
    if result == "fails":
        return f"fails ({one_line(error or 'no error given', 160)})"
    return result


def _diff_text(value: float | None) -> str:
    """``3e-4``, ``0.012``, ``inf`` (None: outputs of other shapes, or NaN)."""
    if value is None:
        return "inf"
    if 0 < value < 1e-3:
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{value:.0e}")
    return f"{value:.3g}"


def worst(results: Iterable[str]) -> str:
    """The result of several formats: the worst of theirs (``loads`` if there are none)."""
    return max(results, key=RESULTS.index, default="loads")


@dataclass
class CompatRecord:
    """One environment's result for one release, read from (or written as) its tag."""

    name: str
    version: str
    key: str
    result: str
    packages: dict[str, str]
    python: str
    platform: str
    max_diff: float | None = None
    error: str | None = None
    formats: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> {result, max_diff, error}
    requested: list[str] = field(default_factory=list)
    env: str | None = None
    atol: float | None = None
    tag: str = ""
    commit: str = ""
    object: str = ""  # the tag object's id
    tagger: str = ""
    date: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def text(self) -> str:
        return verdict(self.result, self.max_diff, self.error)

    def describe_env(self, names: Sequence[str] = ()) -> str:
        """The packages a person cares about (those asked for, else Keras and TensorFlow), with versions."""
        wanted = [canonical(n) for n in names] or ["keras", "tf-keras", "tensorflow", "tensorflow-cpu"]
        by_name = {canonical(k): (k, v) for k, v in self.packages.items()}
        shown = [f"{by_name[n][0]} {by_name[n][1]}" for n in dict.fromkeys(wanted) if n in by_name]
        return ", ".join(shown) or f"{len(self.packages)} packages"

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "key": self.key,
            "result": self.result,
            "max_diff": self.max_diff,
            "error": self.error,
            "formats": self.formats,
            "packages": self.packages,
            "requested": self.requested,
            "python": self.python,
            "platform": self.platform,
            "env": self.env,
            "atol": self.atol,
        }

    def message(self) -> str:
        return (
            f"kgit compat {self.name} {self.version}: {self.text}\n\n"
            f"{COMPAT_MARK_LINE} {json.dumps(self.body(), sort_keys=True)}\n"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.body(),
            "tag": self.tag,
            "commit": self.commit,
            "tagger": self.tagger,
            "date": self.date,
            "summary": self.text,
            "environment": self.describe_env(),
            "problems": list(self.problems),
        }

    def tag_name(self) -> str:
        return compat_tag(self.name, Version.parse(self.version), self.key)


def package_requirements(specs: Sequence[str]) -> list[str]:
    """The distribution names of requirement specifiers (``keras==3.12.*`` -> ``keras``), canonical."""
    return [canonical(parse_requirement(s)[0]) for s in specs]


def parse_requirement(spec: str, where: str = "--with") -> tuple[str, Any]:
    """(name, packaging SpecifierSet) of one requirement specifier; KgitError naming it if it is not one
    (a URL, a path or environment markers are not package versions from the index)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(spec) if isinstance(spec, str) else None
    except InvalidRequirement as exc:
        raise KgitError(
            f"{where} {str(spec)[:80]!r} is not a package requirement ({one_line(exc, 120)}): "
            "write NAME==VERSION, e.g. keras==3.12.* or tensorflow==2.18.*"
        ) from None
    if req is None or req.url or req.marker is not None:
        raise KgitError(
            f"{where} {str(spec)[:80]!r}: give a package from the index with a version specifier, "
            "e.g. keras==3.12.* (no URLs or markers)"
        )
    return req.name, req.specifier


def unmet(record: CompatRecord, specs: Sequence[str]) -> list[str]:
    """The specifiers of ``specs`` that ``record``'s packages do not satisfy (empty: all are met)."""
    by_name = {canonical(k): v for k, v in record.packages.items()}
    missing = []
    for spec in specs:
        try:
            name, specifier = parse_requirement(spec)
        except KgitError:
            missing.append(spec)
            continue
        have = by_name.get(canonical(name))
        if have is None or not specifier.contains(have, prereleases=True):
            missing.append(spec)
    return missing


def passes(record: CompatRecord, specs: Sequence[str]) -> bool:
    """Whether ``record`` is a valid record that loads, in an environment meeting every specifier."""
    return record.valid and record.result == "loads" and not unmet(record, specs)


# -- reading ----------------------------------------------------------------------------------------
def record_from_tag(tag: TagInfo) -> CompatRecord | None:
    """The record a compat tag declares, with its problems; None for any other tag (a lightweight tag
    with a compat name is read as a record with a problem: kgit never makes one)."""
    parsed = parse_compat(tag.name)
    if parsed is None:
        return None
    name, version, key = parsed
    rec = CompatRecord(
        name,
        version.semver,
        key,
        "fails",
        {},
        "",
        "",
        tag=tag.name,
        commit=tag.target,
        object=tag.object,
        tagger=tag.tagger,
        date=tag.date,
    )
    if not tag.annotated:
        rec.problems.append("it is a lightweight tag (kgit writes compat records as annotated tags)")
        return rec
    lines = [line for line in tag.message.splitlines() if line.startswith(COMPAT_MARK_LINE)]
    try:
        body = bounded_yaml.load_json(lines[-1][len(COMPAT_MARK_LINE) :], "the record") if lines else None
    except KgitError:
        body = None
    if not isinstance(body, dict):
        rec.problems.append(f"its message has no `{COMPAT_MARK_LINE}` JSON object")
        return rec
    rec.problems += _fill(rec, body, version)
    return rec


def _fill(rec: CompatRecord, body: dict[str, Any], version: Version) -> list[str]:
    """Copy ``body``'s well-formed fields into ``rec``; what contradicts the tag or is malformed."""
    problems = []
    said = (body.get("name"), body.get("version"), body.get("key"))
    try:
        same_version = isinstance(said[1], str) and Version.parse(said[1]).key == version.key
    except KgitError:
        same_version = False
    if said[0] != rec.name or not same_version or said[2] != rec.key:
        problems.append(
            f"its message says {':'.join(str(x)[:40] for x in said)}, its name says {rec.name}:{rec.version}:{rec.key}"
        )
    packages = body.get("packages")
    if (
        not isinstance(packages, dict)
        or not packages
        or len(packages) > MAX_PACKAGES
        or not all(
            isinstance(k, str) and _PACKAGE_RE.fullmatch(k) and isinstance(v, str) and _PKG_VERSION_RE.fullmatch(v)
            for k, v in packages.items()
        )
    ):
        problems.append("its message's packages are not a list of package names and versions")
    else:
        rec.packages = dict(packages)
    for attr in ("python", "platform"):
        value = body.get(attr)
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            problems.append(f"its message's {attr} is not text")
        else:
            setattr(rec, attr, value)
    if rec.packages and rec.python and rec.platform and env_key(rec.packages, rec.python, rec.platform) != rec.key:
        problems.append(
            f"its key {rec.key} is not the key of the environment its message describes "
            f"({env_key(rec.packages, rec.python, rec.platform)})"
        )
    result, max_diff, error, bad = _outcome(body, "its message")
    problems += bad
    rec.result, rec.max_diff, rec.error = result, max_diff, error
    formats = body.get("formats")
    if not isinstance(formats, dict) or not formats or not all(f in FORMATS for f in formats):
        problems.append("its message lists no known formats")
    else:
        for fmt, entry in formats.items():
            f_result, f_diff, f_error, f_bad = _outcome(entry, f"its message's {fmt} entry")
            problems += f_bad
            rec.formats[fmt] = {"result": f_result, "max_diff": f_diff, "error": f_error}
        if not problems and worst(e["result"] for e in rec.formats.values()) != rec.result:
            problems.append(
                f"its message says {rec.result}, its formats say {worst(e['result'] for e in rec.formats.values())}"
            )
    requested = body.get("requested")
    if (
        not isinstance(requested, list)
        or len(requested) > 50
        or not all(isinstance(s, str) and len(s) <= 200 for s in requested)
    ):
        problems.append("its message's requested packages are not a list of specifiers")
    else:
        rec.requested = list(requested)
    env = body.get("env")
    if env is not None:
        try:
            rec.env = check_name(env)
        except KgitError:
            problems.append(f"its message names environment {str(env)[:40]!r}, not an environment name")
    atol = body.get("atol")
    if atol is not None and not _number(atol):
        problems.append("its message's atol is not a number")
    else:
        rec.atol = atol
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _outcome(entry: Any, where: str) -> tuple[str, float | None, str | None, list[str]]:
    """(result, max_diff, error, problems) of a record's or a format's result fields."""
    if not isinstance(entry, dict):
        return "fails", None, None, [f"{where} is not an object"]
    problems = []
    result = entry.get("result")
    if result not in RESULTS:
        problems.append(f"{where} has result {str(result)[:30]!r} (one of {', '.join(RESULTS)})")
        result = "fails"
    max_diff = entry.get("max_diff")
    if max_diff is not None and not _number(max_diff):
        problems.append(f"{where} has a max_diff that is not a number")
        max_diff = None
    error = entry.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > _TEXT_LIMIT):
        problems.append(f"{where} has an error that is not a line of text")
        error = None
    return str(result), max_diff, error, problems


def _release_of(rec: CompatRecord, by_key: Mapping[tuple[str, tuple[int, int, int]], Any]) -> tuple[Any, str | None]:
    """(the valid release ``rec`` is about, None) or (None, why it has none)."""
    rel = by_key.get((rec.name, Version.parse(rec.version).key))
    if rel is None:
        return None, f"{rec.name}@{rec.version} is not a valid release here"
    if rec.commit != rel.commit:
        return None, f"it points at {rec.commit[:8]}, not at {rel.tag}'s release commit {rel.commit[:8]}"
    return rel, None


def attach(records: Iterable[CompatRecord], releases: Iterable[Any]) -> None:
    """Give each valid release (kgit.registry.catalog.Release) its valid records, newest first; a
    record whose release is not a valid release, or that points at another commit, gets a problem."""
    by_key = {(r.name, r.key): r for r in releases if r.valid}
    touched = set()
    for rec in records:
        rel, problem = _release_of(rec, by_key)
        if problem is not None:
            rec.problems.append(problem)
        if rec.valid and rel is not None:
            rel.compat.append(rec)
            touched.add(rel.tag)
    for rel in by_key.values():
        if rel.tag in touched:
            rel.compat.sort(key=lambda r: r.date, reverse=True)


def push_problem(tag: TagInfo | None, name: str, releases: Iterable[Any]) -> tuple[CompatRecord | None, str | None]:
    """For pre-push and the server: a compat tag arriving as ``name`` (``tag``: its object read, None
    if it is no tag object) as (its record, None), or (None, why it must not be shared). ``releases``:
    the valid releases known (those the push brings included)."""
    if tag is None or not tag.annotated:
        return None, (
            f"new tag {name} is a lightweight tag with a compat record's name: record results with "
            "`kgit compat`, which writes annotated tags"
        )
    rec = record_from_tag(tag)
    assert rec is not None
    if rec.valid:
        _rel, problem = _release_of(rec, {(r.name, r.key): r for r in releases if r.valid})
        if problem is not None:
            rec.problems.append(problem)
    if not rec.valid:
        return None, f"new compat record {name} is not valid: {rec.problems[0]}"
    return rec, None
