"""What the pre-push hook decides from git alone (fast tier): which releases a push brings, which
released versions it changes, which release and stage tags it moves or deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import synthetic
from support.synthetic import git

from kgit.guard import client_hooks, invariants, server
from kgit.registry import catalog
from kgit.store.git_ops import Repo

ZERO = client_hooks.ZERO


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = synthetic.repo_at(tmp_path / "repo")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    return repo


def updates_for(repo: Path, *refs: str) -> list[client_hooks.RefUpdate]:
    """The pre-push lines git would give for pushing ``refs`` to origin (remote sha: what origin has)."""
    lines = []
    for ref in refs:
        local = git(repo, "rev-parse", ref)
        remote = git(repo, "ls-remote", "origin", ref).split("\t")[0] or ZERO
        lines.append(f"{ref} {local} {ref} {remote}")
    return client_hooks.parse_updates("\n".join(lines) + "\n")


def test_a_push_brings_the_releases_its_commits_and_tags_carry(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    synthetic.release(repo, "m", "v2")
    plan = client_hooks.plan_push(Repo(repo), updates_for(repo, "refs/heads/main", "refs/tags/m@v2.0.0"), "origin")
    assert sorted(plan.tags) == ["m@v1.0.0", "m@v2.0.0"] and plan.violations == [] and plan.tag_changes == []


def test_a_commit_that_changes_a_released_dvc_file_is_a_violation(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    git(repo, "push", "-q", "origin", "main", "m@v1.0.0")
    (repo / "artifacts/m/keras/v1.dvc").write_text(
        synthetic.dvc_text("m", "v1", "keras", synthetic.md5_of("m", "v1", "keras", salt="swapped"))
    )
    git(repo, "commit", "-qam", "a quiet swap")
    plan = client_hooks.plan_push(Repo(repo), updates_for(repo, "refs/heads/main"), "origin")
    assert len(plan.violations) == 1
    assert plan.violations[0].startswith("m@v1 (keras): branch main modifies artifacts/m/keras/v1.dvc (blob")
    git(repo, "rm", "-q", "artifacts/m/keras/v1.dvc")
    git(repo, "commit", "-qm", "and then deleted")
    plan = client_hooks.plan_push(Repo(repo), updates_for(repo, "refs/heads/main"), "origin")
    assert plan.violations == [
        "m@v1 (keras): branch main deletes artifacts/m/keras/v1.dvc (deleted or renamed, while it contains the release)"
    ]


def test_a_commit_that_leaves_released_files_alone_is_fine(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    git(repo, "push", "-q", "origin", "main", "m@v1.0.0")
    (repo / "train.py").write_text("print('more training')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-qm", "training code")
    plan = client_hooks.plan_push(Repo(repo), updates_for(repo, "refs/heads/main"), "origin")
    assert (plan.tags, plan.violations, plan.tag_changes) == ([], [], [])


@pytest.mark.parametrize(
    ("ref", "old", "new", "expected"),
    [
        ("refs/tags/m@v1.0.0", "a" * 40, "b" * 40, "moving the release tag m@v1.0.0 from aaaaaaaa to bbbbbbbb"),
        ("refs/tags/m@v1.0.0", "a" * 40, ZERO, "deleting the release tag m@v1.0.0"),
        ("refs/tags/m#prod#1", "a" * 40, "b" * 40, "moving the stage/deprecation tag m#prod#1"),
        ("refs/tags/m@v1.0.0", ZERO, "b" * 40, None),  # a new release tag
        ("refs/tags/m@v1.0.0", "a" * 40, "a" * 40, None),  # unchanged
        ("refs/tags/nightly", "a" * 40, "b" * 40, None),  # not kgit's
        ("refs/heads/m@v1.0.0", "a" * 40, "b" * 40, None),  # a branch, whatever its name
    ],
)
def test_protected_tag_changes(ref: str, old: str, new: str, expected: str | None) -> None:
    change = invariants.protected_tag_change(ref, old, new)
    assert (change is None) if expected is None else (change is not None and change.startswith(expected)), change


def test_moving_a_shared_release_tag_is_planned_as_a_tag_change(repo: Path) -> None:
    synthetic.release(repo, "m", "v1")
    git(repo, "push", "-q", "origin", "main", "m@v1.0.0")
    message = git(repo, "tag", "-l", "--format=%(contents)", "m@v1.0.0")
    git(repo, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    git(repo, "tag", "-f", "-a", "m@v1.0.0", "-m", message)
    plan = client_hooks.plan_push(Repo(repo), updates_for(repo, "refs/tags/m@v1.0.0"), "origin")
    assert len(plan.tag_changes) == 1 and plan.tag_changes[0].startswith("moving the release tag m@v1.0.0")


def _count_tag_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every catalog.read from here on adds to the returned list (the real read still runs)."""
    reads: list[int] = []
    real = catalog.read

    def counted(*args: Any, **kwargs: Any) -> catalog.Registry:
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "read", counted)
    return reads


def test_plain_pushes_read_no_tag_on_either_side_but_a_changed_release_is_still_caught(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synthetic.release(repo, "m", "v1")
    git(repo, "push", "-q", "origin", "main", "m@v1.0.0")
    origin = Repo(repo.parent / "origin.git", bare=True)
    (repo / "notes.txt").write_text("work\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "notes")
    old, new = git(repo, "rev-parse", "origin/main"), git(repo, "rev-parse", "main")
    git(repo, "push", "-q", "--no-verify", "origin", f"{new}:refs/heads/incoming")  # the objects, as a push sends them
    reads = _count_tag_reads(monkeypatch)
    plan = client_hooks.plan_push(Repo(repo), updates_for(repo, "refs/heads/main"), "origin")
    verdict = server.check_updates(origin, server.parse_updates(f"{old} {new} refs/heads/main\n"))
    assert (plan.tags, plan.violations, verdict.problems, reads) == ([], [], [], [])

    (repo / "artifacts/m/keras/v1.dvc").write_text(
        synthetic.dvc_text("m", "v1", "keras", synthetic.md5_of("m", "v1", "keras", salt="swapped"))
    )
    git(repo, "commit", "-qam", "a quiet swap")
    swapped = git(repo, "rev-parse", "main")
    git(repo, "push", "-q", "--no-verify", "origin", f"{swapped}:refs/heads/incoming")
    plan = client_hooks.plan_push(Repo(repo), updates_for(repo, "refs/heads/main"), "origin")
    verdict = server.check_updates(origin, server.parse_updates(f"{old} {swapped} refs/heads/main\n"))
    assert len(reads) == 2
    swap = "m@v1 (keras): branch main modifies artifacts/m/keras/v1.dvc"
    assert [p[: len(swap)] for p in plan.violations] == [swap]
    assert [p[: len(swap)] for p in verdict.problems] == [swap]
