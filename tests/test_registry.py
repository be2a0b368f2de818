"""Reading releases from git alone (fast tier): the tag is the identity, its message and the
`.dvc` file at its commit must agree, latest skips what is not valid, clones remember tags."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import synthetic
from support.synthetic import git

from kgit.core.errors import KgitError
from kgit.registry import catalog
from kgit.store import clone_state
from kgit.store.git_ops import Repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return synthetic.repo_at(tmp_path / "repo")


def test_releases_are_listed_in_version_order_and_latest_is_the_highest(repo: Path) -> None:
    for v in ("v1", "v2", "v10"):
        synthetic.release(repo, "m", v, ("keras", "h5"))
    synthetic.release(repo, "other", "v1")
    rels = catalog.releases(Repo(repo), "m")
    assert [r.version for r in rels] == ["v1", "v2", "v10"]
    assert all(r.valid for r in rels) and list(rels[0].formats) == ["keras", "h5"]
    assert catalog.resolve(Repo(repo), "m", "latest").version == "v10"
    assert catalog.resolve(Repo(repo), "m", "v2").commit == git(repo, "rev-parse", "m@v2.0.0^{commit}")


def test_a_message_that_contradicts_the_tag_name_is_invalid_and_never_latest(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    synthetic.release(repo, "m", "v2", claims={"version": "v1"})
    v2 = next(r for r in catalog.releases(Repo(repo), "m") if r.tag == "m@v2.0.0")
    assert not v2.valid and "its message says v1, its name says v2" in v2.status
    assert catalog.resolve(Repo(repo), "m", "latest").version == "v1"
    with pytest.raises(KgitError, match="m@v2"):
        catalog.resolve(Repo(repo), "m", "v2")


def test_a_lightweight_tag_named_like_a_release_is_not_a_release(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    git(repo, "tag", "m@v5.0.0")
    assert [r.version for r in catalog.releases(Repo(repo), "m")] == ["v1"]


def test_a_dvc_file_that_disagrees_with_the_tag_is_a_problem(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    rel = catalog.resolve(Repo(repo), "m", "v1")
    assert catalog.release_problems(Repo(repo), rel) == []
    dvc = repo / "artifacts/m/keras/v1.dvc"
    dvc.write_text(synthetic.dvc_text("m", "v1", "keras", synthetic.md5_of("m", "v1", "keras", salt="swapped")))
    git(repo, "commit", "-qam", "swap the model")
    git(repo, "tag", "-f", "-a", "m@v1.0.0", "-m", git(repo, "tag", "-l", "--format=%(contents)", "m@v1.0.0"))
    moved = catalog.read(Repo(repo), "m", remember=False).releases[0]
    problems = catalog.release_problems(Repo(repo), moved)
    assert len(problems) == 1 and "has DVC hash" in problems[0] and "the tag recorded" in problems[0]


def test_a_clone_refuses_a_release_tag_that_moved_after_it_saw_it(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    assert catalog.resolve(Repo(repo), "m", "v1").valid  # seen, and remembered in .git/kgit/seen.json
    message = git(repo, "tag", "-l", "--format=%(contents)", "m@v1.0.0")
    git(repo, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    git(repo, "tag", "-f", "-a", "m@v1.0.0", "-m", message)
    with pytest.raises(KgitError, match="changed since this clone first saw it"):
        catalog.resolve(Repo(repo), "m", "v1")


def test_stages_resolve_to_the_promoted_version(repo: Path) -> None:
    for v in ("v1", "v2", "v3"):
        synthetic.release(repo, "m", v)
    synthetic.promote(repo, "m", "v2", "prod", 1)
    assert catalog.resolve(Repo(repo), "m", "#prod").version == "v2"
    assert catalog.resolve(Repo(repo), "m", "latest").version == "v3"
    assert [r.stages for r in catalog.releases(Repo(repo), "m")] == [[], ["prod"], []]
    with pytest.raises(KgitError, match="staging"):
        catalog.resolve(Repo(repo), "m", "#staging")


def test_an_unknown_model_or_version_is_one_clear_error(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    with pytest.raises(KgitError, match="kgit list"):
        catalog.resolve(Repo(repo), "nope", "latest")
    with pytest.raises(KgitError, match="v7"):
        catalog.resolve(Repo(repo), "m", "v7")


# -- the tag cache (.git/kgit/tagcache.json) ------------------------------------------------------
@pytest.fixture
def cached(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``repo`` with the cache used for every read, not only for reads of more than a few tags."""
    monkeypatch.setattr(catalog, "_FEW_TAGS", 0)
    return repo


def _cache(repo: Path) -> Path:
    return repo / ".git" / "kgit" / clone_state.TAG_CACHE


def _everything(repo: Path) -> list[dict[str, Any]]:
    reg = catalog.read(Repo(repo), remember=False)
    return [r.to_dict() for r in reg.releases] + [e.to_dict() for e in reg.events]


def _mixed(repo: Path) -> None:
    """Valid releases, a lying one, a lightweight one, stage tags (one lightweight), another tool's tag."""
    for v in ("v1", "v2", "v3"):
        synthetic.release(repo, "m", v, ("keras", "h5"))
    synthetic.release(repo, "m", "v4", claims={"version": "v1"})
    synthetic.release(repo, "other", "v1")
    synthetic.promote(repo, "m", "v2", "prod", 1)
    git(repo, "tag", "m#staging#2", "m@v3.0.0^{commit}")
    git(repo, "tag", "m@v9.0.0")
    git(repo, "tag", "-a", "build-7", "-m", "not kgit's")


def test_the_cache_gives_what_parsing_the_tags_gives(cached: Path) -> None:
    _mixed(cached)
    assert not _cache(cached).exists()
    fresh = _everything(cached)
    assert _cache(cached).exists()
    assert _everything(cached) == fresh  # from the cache
    assert len(json.loads(_cache(cached).read_text())["tags"]) == 6  # kgit's annotated tags only
    assert [r["version"] for r in fresh if "status" in r] == ["v1", "v2", "v3", "v4.0.0", "v1"]
    assert (
        next(r for r in fresh if r.get("tag") == "m@v4.0.0")["problems"][0]
        == "its message says v1, its name says v4.0.0"
    )
    assert next(r for r in fresh if r.get("tag") == "m@v2.0.0")["stages"] == ["prod"]


def test_a_moved_tag_is_read_anew_and_still_refused_by_the_clone(cached: Path) -> None:
    _mixed(cached)
    assert catalog.resolve(Repo(cached), "m", "v1").valid  # cached, and seen
    old = git(cached, "rev-parse", "m@v1.0.0")
    message = git(cached, "tag", "-l", "--format=%(contents)", "m@v1.0.0")
    git(cached, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    git(cached, "tag", "-f", "-a", "m@v1.0.0", "-m", message.replace("data-1", "data-2"))
    moved = catalog.read(Repo(cached), "m", remember=False).releases[0]
    assert moved.object == git(cached, "rev-parse", "m@v1.0.0") != old
    assert moved.commit == git(cached, "rev-parse", "HEAD") and moved.dataset_id == "data-2"
    with pytest.raises(KgitError, match="changed since this clone first saw it"):
        catalog.resolve(Repo(cached), "m", "v1")
    catalog.read(Repo(cached), remember=False)  # a read of every tag forgets the objects no tag names
    assert old not in json.loads(_cache(cached).read_text())["tags"]


def test_a_tag_object_behind_another_name_is_parsed_for_that_name(cached: Path) -> None:
    synthetic.release(cached, "m", "v1")
    catalog.read(Repo(cached), remember=False)
    git(cached, "update-ref", "refs/tags/m@v2.0.0", git(cached, "rev-parse", "m@v1.0.0"))
    v2 = catalog.read(Repo(cached), "m", remember=False).releases[1]
    assert v2.tag == "m@v2.0.0" and v2.problems[0] == "its message says v1, its name says v2.0.0"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"stamp": 1, "tags": []}',
        # well-formed JSON, malformed entries: each is parsed again from git
        "MALFORMED",
    ],
)
def test_a_corrupt_cache_is_ignored_and_rewritten(cached: Path, content: str) -> None:
    _mixed(cached)
    fresh = _everything(cached)
    good = json.loads(_cache(cached).read_text())["tags"]
    if content == "MALFORMED":
        entries = json.loads(_cache(cached).read_text())
        tags = entries["tags"]
        oids = sorted(tags)
        tags[oids[0]] = ["wrong length"]
        tags[oids[1]] = [tags[oids[1]][0], 7, "", "", None]
        for oid in oids[2:]:
            if tags[oid][4] is not None:
                tags[oid][4] = ["v1", "not formats", None, None, None, [], {}, []]
        content = json.dumps(entries)
    _cache(cached).write_text(content)
    assert _everything(cached) == fresh
    assert json.loads(_cache(cached).read_text())["tags"] == good


def test_a_cache_of_another_kgit_version_is_not_used(cached: Path) -> None:
    synthetic.release(cached, "m", "v1")
    fresh = _everything(cached)
    data = json.loads(_cache(cached).read_text())
    for entry in data["tags"].values():
        entry[4][5] = ["a check of another kgit version"]
    _cache(cached).write_text(json.dumps({**data, "stamp": "1/0.0.0-old"}))
    assert _everything(cached) == fresh


def test_an_unwritable_cache_only_means_parsing_again(cached: Path) -> None:
    """A cache that cannot be written (here a folder stands where the file goes; as root, a read-only
    folder would still be writable) only means the tags are parsed again, with the same results."""
    _mixed(cached)
    fresh = _everything(cached)
    _cache(cached).unlink()
    _cache(cached).mkdir()
    assert _everything(cached) == fresh
    assert _everything(cached) == fresh
    assert _cache(cached).is_dir()
    assert catalog.resolve(Repo(cached), "m", "latest").version == "v3"


def test_the_seen_record_is_read_again_when_another_process_changes_it(repo: Path) -> None:
    """Each command reads the record afresh: what another process recorded (here: another tag
    seen under that name) counts at once."""
    synthetic.release(repo, "m", "v1")
    assert catalog.resolve(Repo(repo), "m", "v1").valid
    db = sqlite3.connect(repo / ".git" / "kgit" / "seen.db")
    with db:
        assert db.execute("UPDATE tags SET object = ? WHERE name = 'm@v1.0.0'", ("0" * 40,)).rowcount == 1
    db.close()
    with pytest.raises(KgitError, match="changed since this clone first saw it"):
        catalog.resolve(Repo(repo), "m", "v1")


def test_a_seen_json_record_of_earlier_kgit_is_imported_and_still_refuses_a_moved_tag(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    legacy = repo / ".git" / "kgit" / "seen.json"
    legacy.parent.mkdir(exist_ok=True)
    (repo / ".git" / "kgit" / "seen.db").unlink(missing_ok=True)
    legacy.write_text(
        json.dumps({"tags": {"m@v1.0.0": {"object": "1" * 40, "commit": "2" * 40, "md5": {"keras": "3" * 32}}}})
    )
    with pytest.raises(
        KgitError,
        match=r"changed since this clone first saw it \(was commit 22222222.*"
        r"DVC hashes were keras 33333333",
    ):
        catalog.resolve(Repo(repo), "m", "v1")
    assert not legacy.exists() and (repo / ".git" / "kgit" / "seen.db").is_file()
    with pytest.raises(KgitError, match="changed since this clone first saw it"):  # the import was kept
        catalog.resolve(Repo(repo), "m", "v1")


def test_versions_seen_once_are_never_reused_even_after_their_tags_are_deleted(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    synthetic.release(repo, "m", "v2")
    assert [r.version for r in catalog.releases(Repo(repo), "m")] == ["v1", "v2"]  # both seen now
    git(repo, "tag", "-d", "m@v2.0.0")
    assert [str(v) for v in catalog.existing_versions(Repo(repo), "m")] == ["v1.0.0", "v2.0.0"]


def test_tags_found_by_name_are_those_git_for_each_ref_finds(repo: Path) -> None:
    """Resolving one version lists tag names from the ref files themselves (git for-each-ref reads
    every loose tag): loose, packed, packed then deleted, re-created over a packed one, and a
    half-written `.lock` all come out as git says."""
    git(repo, "commit", "-q", "--allow-empty", "-m", "c")
    commit = git(repo, "rev-parse", "HEAD")
    for tag in ("m@v1.0.0", "m@v2.0.0", "m#prod#1", "m#prod#2", "mm@v1.0.0", "other#prod#1"):
        git(repo, "tag", "-a", tag, "-m", tag)
    git(repo, "pack-refs", "--all")
    git(repo, "tag", "-d", "m@v2.0.0")  # packed, then deleted
    git(repo, "tag", "-f", "-a", "m#prod#1", "-m", "again", commit)  # loose over packed
    git(repo, "tag", "m@v3.0.0")  # loose, lightweight
    git(repo, "tag", "-a", "m@v3.0.0!#1", "-m", "deprecated")
    (repo / ".git/refs/tags/m@v4.0.0.lock").write_text("0" * 40 + "\n")  # another process writing
    r = Repo(repo)
    cases = [
        ["refs/tags/m@v1.0.0"],
        ["refs/tags/m@v2.0.0"],
        ["refs/tags/m#*"],
        ["refs/tags/m@*", "refs/tags/m#*"],
        ["refs/tags/m@v3.0.0", "refs/tags/m@v3.0.0!*", "refs/tags/m#*"],
        ["refs/tags/m?v1.0.0"],
    ]
    for patterns in cases:
        by_git = git(repo, "for-each-ref", "--format=%(refname:strip=2) %(objecttype) %(objectname)", *patterns)
        assert r._tag_names_matching(patterns) is not None
        assert [" ".join(t) for t in r.tag_refs(*patterns)] == [
            " ".join((n, t, o)) for n, t, o in (line.split() for line in by_git.splitlines())
        ], patterns
        assert r.tag_names(patterns[0]) == [
            line.split()[0]
            for line in git(repo, "for-each-ref", "--format=%(refname:strip=2) x", patterns[0]).splitlines()
        ]
    git(repo, "tag", "-a", "team/m@v1.0.0", "-m", "x")  # a folder of tags no pattern reaches: no matter
    assert r._tag_names_matching(["refs/tags/m#*"]) == ["m#prod#1", "m#prod#2"]
    git(repo, "tag", "-a", "m#prod#3/x", "-m", "x")  # a folder named like a match: git is asked instead
    assert r._tag_names_matching(["refs/tags/m#*"]) is None
    assert [t[0] for t in r.tag_refs("refs/tags/m#*")] == ["m#prod#1", "m#prod#2"]


def test_a_repository_git_refuses_to_open_is_refused_in_gits_words(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")  # git's own switch: as if another user owned it
    with pytest.raises(KgitError, match=r"git cannot open .*dubious ownership.*safe\.directory"):
        Repo(repo)
    monkeypatch.delenv("GIT_TEST_ASSUME_DIFFERENT_OWNER")
    with pytest.raises(KgitError, match="is not inside a git repository: run `git init` first"):
        Repo(repo.parent)
    (repo / "deep" / "er").mkdir(parents=True)
    assert Repo(repo / "deep" / "er").root == repo.resolve()  # found from a folder inside, as git finds it
