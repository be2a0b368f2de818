"""Model names, versions, and the git tag names that carry them.

Tags follow GTO's grammar so `gto show` and `dvc artifacts get --rev` understand kgit releases:
a release of model ``NAME`` at version ``vX.Y.Z`` is the annotated tag ``NAME@vX.Y.Z``.
kgit's default versions ``v1, v2, ...`` are major versions: ``v3`` is tagged ``NAME@v3.0.0``.
kgit's own record of where a release loads, ``NAME@vX.Y.Z#compat#KEY``, is outside GTO's grammar
(GTO ignores it); kgit.registry.compat_records reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from kgit.core.errors import InvalidNameError, InvalidVersionError

# The intersection of what the user asked for ([a-z0-9][a-z0-9._-]*) and GTO's artifact-name
# grammar (alphanumeric at both ends, no dots), so every name is also a valid tag and folder.
_MODEL = r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?"
_NAME_RE = re.compile(_MODEL, re.ASCII)
# Numbers as kgit writes them: ASCII digits only (``\d`` would also take Arabic-Indic or fullwidth
# digits, look-alikes that int() accepts), no leading zeros, at most nine digits.
_NUM = r"(?:0|[1-9][0-9]{0,8})"
_SHORT_RE = re.compile(rf"v({_NUM})", re.ASCII)
_SEMVER_RE = re.compile(rf"v?({_NUM})\.({_NUM})\.({_NUM})", re.ASCII)
_TAG_RE = re.compile(rf"(?P<name>{_MODEL})@v(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})", re.ASCII)

_STAGE_RE = re.compile(_MODEL, re.ASCII)  # stage names follow the model-name grammar
# GTO's event tags: stage assigned / unassigned, version deregistered, artifact deprecated; #N counts
# the artifact's events (1 + the highest counter of any of its tags), from 1, written without zeros
# in front.
_EVENT_RE = re.compile(
    rf"(?P<name>{_MODEL})"
    rf"(?:#(?P<stage>{_MODEL})(?P<stage_cancel>!?)"
    rf"|@v(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})!"
    r"|@(?P<deprecated>deprecated))"
    r"#(?P<counter>[1-9][0-9]{0,8})",
    re.ASCII,
)

# A compatibility record (kgit.registry.compat_records): whether NAME@vX.Y.Z loads in one environment,
# named by the environment's key (16 lowercase hex digits of the hash of its resolved packages).
COMPAT_MARK = "compat"
_COMPAT_RE = re.compile(
    rf"(?P<name>{_MODEL})@v(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})#{COMPAT_MARK}#(?P<key>[0-9a-f]{{16}})",
    re.ASCII,
)

BUMPS = ("major", "minor", "patch")


def check_stage(stage: str) -> str:
    """Return ``stage`` if it is a valid stage name (e.g. prod, staging), else raise InvalidNameError."""
    if not isinstance(stage, str) or not _STAGE_RE.fullmatch(stage):
        raise InvalidNameError(
            f"invalid stage name {stage!r}: use lowercase letters, digits, '-' and '_', "
            "starting and ending with a letter or digit (e.g. prod, staging)"
        )
    return stage


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidNameError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid model name {name!r}: use lowercase letters, digits, '-' and '_', "
            "starting and ending with a letter or digit (at most 64 characters)"
        )
    return name


@total_ordering
@dataclass(frozen=True)
class Version:
    """A release version. ``short`` versions print as ``v3``; semantic ones as ``v1.2.0``."""

    major: int
    minor: int = 0
    patch: int = 0
    short: bool = False

    @classmethod
    def parse(cls, text: str) -> Version:
        text = text.strip() if isinstance(text, str) else text
        if not isinstance(text, str):
            raise InvalidVersionError(f"invalid version {text!r}")
        m = _SHORT_RE.fullmatch(text)
        if m:
            return cls(int(m.group(1)), short=True)
        m = _SEMVER_RE.fullmatch(text)
        if m:
            return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        raise InvalidVersionError(
            f"invalid version {text!r}: use vN (e.g. v3) or a semantic version vMAJOR.MINOR.PATCH (e.g. v1.2.0)"
        )

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def semver(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    def __str__(self) -> str:
        if self.short and self.minor == 0 and self.patch == 0:
            return f"v{self.major}"
        return self.semver

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def bump(self, part: str) -> Version:
        if part == "major":
            return Version(self.major + 1)
        if part == "minor":
            return Version(self.major, self.minor + 1)
        if part == "patch":
            return Version(self.major, self.minor, self.patch + 1)
        raise InvalidVersionError(f"invalid bump {part!r}: use one of {', '.join(BUMPS)}")


def next_version(existing: list[Version], explicit: str | None, bump: str | None) -> Version:
    """The version a new release gets: explicit, bumped from the highest, or the next ``vN``."""
    if explicit and bump:
        raise InvalidVersionError("give either --version or --bump, not both")
    if explicit:
        v = Version.parse(explicit)
        if v.key == (0, 0, 0):
            raise InvalidVersionError("invalid version v0.0.0: versions start above zero")
        return v
    highest = max(existing) if existing else None
    if bump:
        if bump not in BUMPS:
            raise InvalidVersionError(f"invalid bump {bump!r}: use one of {', '.join(BUMPS)}")
        return (highest or Version(0)).bump(bump)
    return Version((highest.major if highest else 0) + 1, short=True)


def tag_name(name: str, version: Version) -> str:
    return f"{name}@{version.semver}"


def parse_tag(tag: str) -> tuple[str, Version] | None:
    """Inverse of tag_name; None for tags that are not kgit/GTO version tags."""
    parsed = tag_version_key(tag)
    return (parsed[0], Version(*parsed[1])) if parsed is not None else None


def tag_version_key(tag: str) -> tuple[str, tuple[int, int, int]] | None:
    """parse_tag's (name, (major, minor, patch)), without building a Version."""
    m = _TAG_RE.fullmatch(tag)
    if not m:
        return None
    name, major, minor, patch = m.groups()
    return name, (int(major), int(minor), int(patch))


@dataclass(frozen=True)
class Event:
    """A GTO event tag: kind is "promote", "demote", "deprecate" (a version) or "deprecate-model"."""

    kind: str
    name: str
    counter: int
    stage: str | None = None
    version: Version | None = None


def stage_tag(name: str, stage: str, counter: int, cancel: bool = False) -> str:
    return f"{name}#{stage}{'!' if cancel else ''}#{counter}"


def deprecate_tag(name: str, version: Version, counter: int) -> str:
    return f"{name}@{version.semver}!#{counter}"


def parse_event(tag: str) -> Event | None:
    m = _EVENT_RE.fullmatch(tag)
    if not m:
        return None
    counter = int(m.group("counter"))
    if m.group("stage"):
        kind = "demote" if m.group("stage_cancel") else "promote"
        return Event(kind, m.group("name"), counter, stage=m.group("stage"))
    if m.group("deprecated"):
        return Event("deprecate-model", m.group("name"), counter)
    version = Version(int(m.group("major")), int(m.group("minor")), int(m.group("patch")))
    return Event("deprecate", m.group("name"), counter, version=version)


def compat_tag(name: str, version: Version, key: str) -> str:
    return f"{name}@{version.semver}#{COMPAT_MARK}#{key}"


def parse_compat(tag: str) -> tuple[str, Version, str] | None:
    """Inverse of compat_tag: (name, version, environment key); None for any other tag."""
    m = _COMPAT_RE.fullmatch(tag)
    if not m:
        return None
    return m["name"], Version(int(m["major"]), int(m["minor"]), int(m["patch"])), m["key"]


# Anything a person or another tool could take for a kgit tag: NAME@v<digit...>, NAME@deprecated,
# NAME#... with any letters and any script's digits (``\d`` here on purpose).
_LOOKALIKE_RE = re.compile(r"[^@#]+(?:@v?\d|@deprecated|#)", re.IGNORECASE)


def is_lookalike(tag: str) -> bool:
    """Whether ``tag`` looks like a release or event tag without being one in kgit's exact form
    (``m@v01.0.0``, ``M@v1.0.0``, ``m#prod#01``, ``m@v\u0661.0.0``, ``m@v1.0.0#compat#XYZ``): kgit ignores such a tag, but a
    person, GTO or ``dvc artifacts get`` may read it as a version or a stage."""
    return (
        parse_tag(tag) is None
        and parse_event(tag) is None
        and parse_compat(tag) is None
        and _LOOKALIKE_RE.match(tag) is not None
    )


def parse_ref(ref: str) -> tuple[str, str]:
    """Split a release reference into (name, selector).

    ``NAME@VERSION`` -> (name, "v2"), ``NAME@latest`` -> (name, "latest"),
    ``NAME#STAGE`` -> (name, "#prod")."""
    if "#" in ref and "@" not in ref:
        name, _, stage = ref.partition("#")
        check_name(name)
        check_stage(stage)
        return name, f"#{stage}"
    if "@" not in ref:
        raise InvalidVersionError(
            f"expected NAME@VERSION or NAME#STAGE (e.g. mnist@v2, mnist@latest, mnist#prod), got {ref!r}"
        )
    name, _, version = ref.partition("@")
    check_name(name)
    if version != "latest":
        Version.parse(version)
    return name, version


def release_ref(ref: str, version: str | None = None, stage: str | None = None) -> tuple[str, str]:
    """(name, selector) from any way the Python API lets a caller name a release: a reference
    (``mnist@v2``, ``mnist@latest``, ``mnist#prod``), or a bare model name with ``version=`` or
    ``stage=`` (neither: the latest version)."""
    if "@" in ref or "#" in ref:
        if version is not None or stage is not None:
            raise InvalidVersionError(
                f"{ref!r} already names a version: give version= or stage= only with a bare model name"
            )
        return parse_ref(ref)
    check_name(ref)
    if version is not None and stage is not None:
        raise InvalidVersionError("give version= or stage=, not both")
    if stage is not None:
        return ref, f"#{check_stage(stage)}"
    if version is None or version == "latest":
        return ref, "latest"
    if version.startswith("#"):
        return ref, f"#{check_stage(version[1:])}"
    Version.parse(version)
    return ref, version
