"""Names, versions and tag names (pure functions), checked against GTO's own grammar."""

from __future__ import annotations

import pytest
from gto.constants import tag_re as gto_tag_re

from kgit.core.errors import InvalidNameError, InvalidVersionError, KgitError
from kgit.registry.versions import (
    Version,
    check_name,
    next_version,
    parse_ref,
    parse_tag,
    release_ref,
    tag_name,
)


@pytest.mark.parametrize("name", ["mnist", "a", "m1", "my-model", "my_model", "x9-y_z", "0abc"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "../x", "a/b", "has space", "Mnist", "a.b", "-a", "a-", "_a", "a\nb", "x;rm -rf /", "$(id)", "a" * 65, "é"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        check_name(name)


@pytest.mark.parametrize(
    "text,key,shown",
    [
        ("v1", (1, 0, 0), "v1"),
        ("v12", (12, 0, 0), "v12"),
        ("v1.2.3", (1, 2, 3), "v1.2.3"),
        ("1.2.3", (1, 2, 3), "v1.2.3"),
        ("v2.0.0", (2, 0, 0), "v2.0.0"),
    ],
)
def test_parse_versions(text: str, key: tuple[int, int, int], shown: str) -> None:
    v = Version.parse(text)
    assert v.key == key and str(v) == shown


@pytest.mark.parametrize(
    "text", ["", "1", "v", "v01", "v1.2", "v1.2.3.4", "latest", "v-1", "v1.2.3-rc1", "../v1", "v1 "]
)
def test_invalid_versions(text: str) -> None:
    if text == "v1 ":  # surrounding blanks are forgiven
        assert str(Version.parse(text)) == "v1"
        return
    with pytest.raises(InvalidVersionError):
        Version.parse(text)


def test_short_and_semantic_spellings_are_the_same_version() -> None:
    assert Version.parse("v2") == Version.parse("v2.0.0")
    assert Version.parse("v2") < Version.parse("v2.0.1") < Version.parse("v10")


def test_next_version() -> None:
    vs = [Version.parse(x) for x in ("v1", "v2")]
    assert str(next_version([], None, None)) == "v1"
    assert str(next_version(vs, None, None)) == "v3"
    assert str(next_version(vs, None, "minor")) == "v2.1.0"
    assert str(next_version(vs, None, "patch")) == "v2.0.1"
    assert str(next_version(vs, None, "major")) == "v3.0.0"
    assert str(next_version([Version.parse("v1.4.2")], None, None)) == "v2"
    assert str(next_version(vs, "v7", None)) == "v7"
    with pytest.raises(InvalidVersionError):
        next_version(vs, "v7", "minor")
    with pytest.raises(InvalidVersionError):
        next_version(vs, None, "huge")
    with pytest.raises(InvalidVersionError):
        next_version(vs, "v0.0.0", None)


@pytest.mark.parametrize("name,version", [("mnist", "v1"), ("my-model_2", "v1.2.3"), ("a", "v10")])
def test_tags_follow_gto_grammar_and_round_trip(name: str, version: str) -> None:
    v = Version.parse(version)
    tag = tag_name(name, v)
    m = gto_tag_re.match(tag)
    assert m is not None, tag
    assert m.group("artifact") == name
    assert m.group("version") == v.semver
    assert parse_tag(tag) == (name, v)


def test_foreign_tags_are_not_releases() -> None:
    for tag in ("v1.0.0", "mnist#prod#1", "mnist@v1", "release-1", "mnist@deprecated"):
        assert parse_tag(tag) is None


def test_parse_ref() -> None:
    assert parse_ref("mnist@v2") == ("mnist", "v2")
    assert parse_ref("mnist@latest") == ("mnist", "latest")
    for bad in ("mnist", "../x@v1", "mnist@2.x"):
        with pytest.raises((InvalidNameError, InvalidVersionError)):
            parse_ref(bad)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("mnist@v2",), ("mnist", "v2")),
        (("mnist#prod",), ("mnist", "#prod")),
        (("mnist",), ("mnist", "latest")),
        (("mnist", "v3"), ("mnist", "v3")),
        (("mnist", "#staging"), ("mnist", "#staging")),
        (("mnist", None, "prod"), ("mnist", "#prod")),
    ],
)
def test_every_way_of_naming_a_release_resolves_to_one_selector(args: tuple, expected: tuple) -> None:
    assert release_ref(*args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ("mnist@v2", "v3"),
        ("mnist#prod", None, "prod"),
        ("mnist", "v2", "prod"),
        ("mnist", "2"),
        ("Bad Name",),
        ("mnist", None, "Prod"),
    ],
)
def test_conflicting_or_malformed_release_names_are_refused(args: tuple) -> None:
    with pytest.raises(KgitError):
        release_ref(*args)
