"""Recovering from an interrupted release, from the journal alone (fast tier): a release that got
as far as its commit is finished, one that did not is undone, and what changed since is left."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from support import synthetic
from support.synthetic import git

from kgit.core.errors import KgitError
from kgit.store import txn
from kgit.store.git_ops import Repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = synthetic.repo_at(tmp_path / "repo")
    (repo / "dvc.yaml").write_text("stages: {}\n")
    git(repo, "add", "dvc.yaml")
    git(repo, "commit", "-qm", "dvc.yaml")
    return repo


def interrupted(repo: Path, tag: str = "m@v1.0.0") -> txn.Journal:
    """A release that wrote a .dvc file and changed dvc.yaml, then died before committing."""
    journal = txn.Journal(tag=tag, head_before=git(repo, "rev-parse", "HEAD"), tag_message="kgit release m v1\n")
    dvc = "artifacts/m/keras/v1.dvc"
    journal.created.append(dvc)
    journal.backups["dvc.yaml"] = (repo / "dvc.yaml").read_text()
    (repo / dvc).parent.mkdir(parents=True)
    for rel, text in ((dvc, "outs: []\n"), ("dvc.yaml", "stages: {changed: {}}\n")):
        journal.expect(rel, text.encode())
        (repo / rel).write_text(text)
    journal.save(Repo(repo))
    return journal


def test_a_release_killed_before_its_commit_is_undone(repo: Path) -> None:
    interrupted(repo)
    outcome = txn.recover(Repo(repo), log=lambda _m: None)
    assert outcome == "removed the traces of the interrupted release m@v1.0.0"
    assert not (repo / "artifacts/m/keras/v1.dvc").exists()
    assert (repo / "dvc.yaml").read_text() == "stages: {}\n"
    assert txn.Journal.load(Repo(repo)) is None and git(repo, "status", "--porcelain") == ""


def test_a_release_killed_after_its_commit_is_finished(repo: Path) -> None:
    journal = interrupted(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"kgit: release m v1\n\n{txn.TRAILER}: {journal.tag}")
    outcome = txn.recover(Repo(repo), log=lambda _m: None)
    assert outcome is not None and outcome.startswith("finished the interrupted release m@v1.0.0")
    assert git(repo, "rev-parse", "m@v1.0.0^{commit}") == git(repo, "rev-parse", "HEAD")
    assert txn.Journal.load(Repo(repo)) is None


def test_files_edited_after_the_release_wrote_them_are_left_and_named(repo: Path) -> None:
    interrupted(repo)
    (repo / "dvc.yaml").write_text("stages: {mine: {cmd: train}}\n")  # the user's edit since
    outcome = txn.recover(Repo(repo), log=lambda _m: None)
    assert outcome is not None and "left dvc.yaml as they are" in outcome
    assert (repo / "dvc.yaml").read_text() == "stages: {mine: {cmd: train}}\n"
    assert not (repo / "artifacts/m/keras/v1.dvc").exists()


def test_an_unreadable_journal_stops_everything_with_what_to_do(repo: Path) -> None:
    interrupted(repo)
    path = txn.Journal.path(Repo(repo))
    path.write_text("{not json")
    with pytest.raises(KgitError, match="unreadable .* kgit cannot tell what to undo"):
        txn.recover(Repo(repo))
    assert path.read_text() == "{not json"  # kept for the user to look at
    assert (repo / "artifacts/m/keras/v1.dvc").exists()


def test_the_journal_is_written_whole(repo: Path) -> None:
    journal = interrupted(repo)
    saved = txn.Journal.path(Repo(repo)).read_bytes()
    assert txn.Journal.load(Repo(repo)) == journal
    assert hashlib.sha256(b"outs: []\n").hexdigest() in journal.written["artifacts/m/keras/v1.dvc"]
    assert not [p for p in txn.Journal.path(Repo(repo)).parent.iterdir() if "tmp" in p.name], saved


DVC_POINTER = "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 12\n  nfiles: 1\n  hash: md5\n  path: v1\n"


def killed_inside_dvc_add(repo: Path, pointer: str, ignore: str) -> txn.Journal:
    """A release killed inside `dvc add`: DVC wrote the pointer and the .gitignore entry, kgit could
    not yet record their hashes (the journal only says DVC was writing them)."""
    folder, dvc, gitignore = "artifacts/m/keras/v1", "artifacts/m/keras/v1.dvc", "artifacts/m/keras/.gitignore"
    journal = txn.Journal(tag="m@v1.0.0", head_before=git(repo, "rev-parse", "HEAD"), tag_message="")
    journal.created += [folder, dvc]
    journal.folders[folder] = {}
    journal.backups[gitignore] = None
    journal.dvc_writing = [dvc, gitignore]
    journal.save(Repo(repo))
    (repo / folder).mkdir(parents=True)
    (repo / dvc).write_text(pointer)
    (repo / gitignore).write_text(ignore)
    return journal


@pytest.mark.parametrize(
    "pointer,ignore",
    [
        (DVC_POINTER, "/v1\n"),  # DVC finished writing both
        (DVC_POINTER[:57], "/v"),  # cut short mid-value
        ("", ""),  # truncated, nothing written yet
        ("outs:\n- md5: 01234", "\n/v1\n"),
    ],
)
def test_what_dvc_add_wrote_before_a_kill_is_undone(repo: Path, pointer: str, ignore: str) -> None:
    killed_inside_dvc_add(repo, pointer, ignore)
    outcome = txn.recover(Repo(repo), log=lambda _m: None)
    assert outcome == "removed the traces of the interrupted release m@v1.0.0"
    assert not (repo / "artifacts").exists() and git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    "pointer,ignore,kept",
    [
        (DVC_POINTER + "meta:\n  mine: 1\n", "/v1\n", "artifacts/m/keras/v1.dvc"),  # edited since: not what DVC writes
        (DVC_POINTER.replace("path: v1", "path: other"), "/v1\n", "artifacts/m/keras/v1.dvc"),
        (DVC_POINTER, "/v1\n/my-own-entry\n", "artifacts/m/keras/.gitignore"),
        ("a: &a [*a]\n", "/v1\n", "artifacts/m/keras/v1.dvc"),
    ],
)
def test_what_changed_after_a_kill_inside_dvc_add_is_left_and_named(
    repo: Path, pointer: str, ignore: str, kept: str
) -> None:
    killed_inside_dvc_add(repo, pointer, ignore)
    outcome = txn.recover(Repo(repo), log=lambda _m: None)
    assert outcome is not None and f"left {kept} as they are" in outcome
    assert (repo / kept).exists()
