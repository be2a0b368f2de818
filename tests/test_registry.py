"""Reading releases from git alone (fast tier): the tag is the identity, its message and the
`.dvc` file at its commit must agree, latest skips what is not valid, clones remember tags."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import synthetic
from support.synthetic import git

from kgit import registry
from kgit.errors import KgitError
from kgit.git_ops import Repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return synthetic.repo_at(tmp_path / "repo")


def test_releases_are_listed_in_version_order_and_latest_is_the_highest(repo: Path) -> None:
    for v in ("v1", "v2", "v10"):
        synthetic.release(repo, "m", v, ("keras", "h5"))
    synthetic.release(repo, "other", "v1")
    rels = registry.releases(Repo(repo), "m")
    assert [r.version for r in rels] == ["v1", "v2", "v10"]
    assert all(r.valid for r in rels) and list(rels[0].formats) == ["keras", "h5"]
    assert registry.resolve(Repo(repo), "m", "latest").version == "v10"
    assert registry.resolve(Repo(repo), "m", "v2").commit == git(repo, "rev-parse", "m@v2.0.0^{commit}")


def test_a_message_that_contradicts_the_tag_name_is_invalid_and_never_latest(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    synthetic.release(repo, "m", "v2", claims={"version": "v1"})
    v2 = next(r for r in registry.releases(Repo(repo), "m") if r.tag == "m@v2.0.0")
    assert not v2.valid and "its message says v1, its name says v2" in v2.status
    assert registry.resolve(Repo(repo), "m", "latest").version == "v1"
    with pytest.raises(KgitError, match="m@v2"):
        registry.resolve(Repo(repo), "m", "v2")


def test_a_lightweight_tag_named_like_a_release_is_not_a_release(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    git(repo, "tag", "m@v5.0.0")
    assert [r.version for r in registry.releases(Repo(repo), "m")] == ["v1"]


def test_a_dvc_file_that_disagrees_with_the_tag_is_a_problem(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    rel = registry.resolve(Repo(repo), "m", "v1")
    assert registry.release_problems(Repo(repo), rel) == []
    dvc = repo / "artifacts/m/keras/v1.dvc"
    dvc.write_text(synthetic.dvc_text("m", "v1", "keras", synthetic.md5_of("m", "v1", "keras", salt="swapped")))
    git(repo, "commit", "-qam", "swap the model")
    git(repo, "tag", "-f", "-a", "m@v1.0.0", "-m", git(repo, "tag", "-l", "--format=%(contents)", "m@v1.0.0"))
    moved = registry.read(Repo(repo), "m", remember=False).releases[0]
    problems = registry.release_problems(Repo(repo), moved)
    assert len(problems) == 1 and "has DVC hash" in problems[0] and "the tag recorded" in problems[0]


def test_a_clone_refuses_a_release_tag_that_moved_after_it_saw_it(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    assert registry.resolve(Repo(repo), "m", "v1").valid  # seen, and remembered in .git/kgit/seen.json
    message = git(repo, "tag", "-l", "--format=%(contents)", "m@v1.0.0")
    git(repo, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    git(repo, "tag", "-f", "-a", "m@v1.0.0", "-m", message)
    with pytest.raises(KgitError, match="changed since this clone first saw it"):
        registry.resolve(Repo(repo), "m", "v1")


def test_stages_resolve_to_the_promoted_version(repo: Path) -> None:
    for v in ("v1", "v2", "v3"):
        synthetic.release(repo, "m", v)
    synthetic.promote(repo, "m", "v2", "prod", 1)
    assert registry.resolve(Repo(repo), "m", "#prod").version == "v2"
    assert registry.resolve(Repo(repo), "m", "latest").version == "v3"
    assert [r.stages for r in registry.releases(Repo(repo), "m")] == [[], ["prod"], []]
    with pytest.raises(KgitError, match="staging"):
        registry.resolve(Repo(repo), "m", "#staging")


def test_an_unknown_model_or_version_is_one_clear_error(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    with pytest.raises(KgitError, match="kgit list"):
        registry.resolve(Repo(repo), "nope", "latest")
    with pytest.raises(KgitError, match="v7"):
        registry.resolve(Repo(repo), "m", "v7")
