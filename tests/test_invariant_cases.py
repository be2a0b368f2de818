"""Each distinct way the generated attacks (test_generated_attacks.py) broke the invariant of
tests/support/invariant.py against the server hook, shrunk to the git commands that do it.

Every case starts from the same guarded origin (m@v1 in keras and h5, m@v2, n@v1, m@v1 in prod;
branches main, dev and old) and ana's and bob's clones, and ends with the whole invariant checked
on origin: what the push left there, whether or not git reported it accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.attacks import literal_tag
from support.invariant import check
from support.sandbox import Sandbox

pytestmark = pytest.mark.slow

M1_KERAS = "artifacts/m/keras/v1.dvc"
M1_H5 = "artifacts/m/h5/v1.dvc"


@pytest.fixture
def box(attack_world, tmp_path: Path) -> Sandbox:  # type: ignore[no-untyped-def]
    base, oracle = attack_world
    return Sandbox.copy_of(base, tmp_path / "w", oracle)


def holds(box: Sandbox) -> None:
    check(box.oracle, box.origin, box.base / "probe", box.transcript)


def edit(box: Sandbox, who: str, path: str, old: str, new: str) -> None:
    text = (box.clone(who) / path).read_text()
    assert old in text
    box.write(who, path, text.replace(old, new, 1), shown=f"sed -i 's/{old}/{new}/' {path}")


# -- (b) a branch that holds a release loses or changes its .dvc files ----------------------------
def test_merge_commit_dropping_released_files(box: Sandbox) -> None:
    box.git("ana", "checkout", "-q", "-B", "main", "origin/main")
    box.git("ana", "merge", "-q", "--no-commit", "--no-ff", "origin/dev")
    box.git("ana", "rm", "-q", M1_KERAS, M1_H5)
    box.git("ana", "commit", "-q", "--no-verify", "-m", "merge dev")
    box.push("ana", "--no-verify", "origin", "HEAD:refs/heads/main")
    holds(box)


def test_ours_merge_pushed_as_a_new_branch(box: Sandbox) -> None:
    box.git("bob", "checkout", "-q", "-B", "old", "origin/old")
    box.git("bob", "merge", "-q", "--no-edit", "-s", "ours", "origin/main")
    box.push("bob", "--no-verify", "origin", "HEAD:refs/heads/old-merged")
    holds(box)


def test_renamed_released_file(box: Sandbox) -> None:
    box.git("ana", "checkout", "-q", "-B", "main", "origin/main")
    box.git("ana", "mv", M1_KERAS, "artifacts/m/keras/v1-old.dvc")
    box.git("ana", "commit", "-q", "--no-verify", "-m", "rename")
    box.push("ana", "--no-verify", "origin", "HEAD:refs/heads/main")
    holds(box)


def test_released_metadata_edited_beside_the_same_hash(box: Sandbox) -> None:
    box.git("bob", "checkout", "-q", "-B", "main", "origin/main")
    edit(box, "bob", M1_H5, "notes: null", "notes: edited")
    box.git("bob", "commit", "-q", "--no-verify", "-am", "better notes")
    box.push("bob", "--no-verify", "origin", "HEAD:refs/heads/main")
    holds(box)


def test_new_branch_at_an_already_pushed_commit_with_a_changed_release(box: Sandbox) -> None:
    box.git("ana", "checkout", "-q", "-B", "main", "origin/main")
    edit(box, "ana", M1_KERAS, "md5: ", "md5: 0")
    box.git("ana", "commit", "-q", "--no-verify", "-am", "swap the model")
    box.git("ana", "checkout", "m@v1.0.0", "--", M1_KERAS)
    box.git("ana", "commit", "-q", "--no-verify", "-am", "put it back")
    box.push("ana", "--no-verify", "origin", "HEAD:refs/heads/main")  # the tip is as released
    box.push("ana", "--no-verify", "origin", "HEAD~1:refs/heads/b0")
    holds(box)


# -- (d) a release commit on no branch ------------------------------------------------------------
def test_deleting_one_branch_and_rewinding_the_other_in_one_push(box: Sandbox) -> None:
    box.push("ana", "--no-verify", "origin", "origin/main:refs/heads/b0")
    box.push("ana", "--force", "--no-verify", "origin", ":refs/heads/b0", "origin/old:refs/heads/main")
    holds(box)


# -- (e) refs outside refs/heads/ and refs/tags/ ----------------------------------------------------
def _replace_blob(box: Sandbox) -> None:
    fake = box.git("ana", "hash-object", "-w", "--stdin", stdin=b"outs:\n- md5: 0\n  path: v1\n")
    box.git("ana", "replace", "-f", box.ask("ana", "rev-parse", f"m@v1.0.0:{M1_KERAS}"), fake)
    box.push("ana", "--no-verify", "origin", "refs/replace/*:refs/replace/*")


def _replace_commit(box: Sandbox) -> None:
    box.git("ana", "replace", "-f", box.ask("ana", "rev-parse", "m@v1.0.0^{commit}"), "origin/dev")
    box.push("ana", "--no-verify", "origin", "refs/replace/*:refs/replace/*")


def _notes(box: Sandbox) -> None:
    box.git("bob", "notes", "add", "-m", "a note", "m@v1.0.0^{commit}")
    box.push("bob", "--no-verify", "origin", "refs/notes/*:refs/notes/*")


def _other_namespace(box: Sandbox) -> None:
    box.push("bob", "--no-verify", "origin", "origin/main:refs/foo/bar")


def _mirror(box: Sandbox) -> None:
    box.push("bob", "--mirror", "--no-verify", "origin")  # bob's refs/remotes/origin/* too


@pytest.mark.parametrize(
    "attack",
    [_replace_blob, _replace_commit, _notes, _other_namespace, _mirror],
    ids=["replace-released-blob", "replace-release-commit", "notes", "refs-foo-bar", "mirror"],
)
def test_refs_outside_branches_and_tags(box: Sandbox, attack) -> None:  # type: ignore[no-untyped-def]
    attack(box)
    holds(box)


# -- (f) look-alike tag names ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "m@v01.0.0",
        "m@v\u0661.0.0",
        "m@v\uff11.0.0",
        "M@v1.0.0",
        "m@v1.0",
        "m@v1.0.0-rc1",
        "m#prod#01",
        "m#Prod#1",
        "m@v1.0.0!#01",
    ],
)
def test_lookalike_tag_names(box: Sandbox, name: str) -> None:
    box.git("ana", "tag", "-a", "-m", "made by hand", name, "m@v1.0.0^{commit}")
    box.push("ana", "--no-verify", "origin", f"refs/tags/{name}")
    holds(box)


# -- (g) kgit list / check in a fresh clone -------------------------------------------------------------
@pytest.mark.parametrize("name", ["m#prod#2", "m@v1.0.0!#2", "m@deprecated#2"])
def test_event_tag_with_a_tagger_timezone_of_99_hours(box: Sandbox, name: str) -> None:
    commit = box.ask("ana", "rev-parse", "m@v1.0.0^{commit}")
    raw = literal_tag(commit, "commit", name, "tz+9900", b"promote\n")
    oid = box.git("ana", "hash-object", "-t", "tag", "--literally", "-w", "--stdin", stdin=raw)
    box.git("ana", "update-ref", f"refs/tags/{name}", oid)
    box.push("ana", "--no-verify", "origin", f"refs/tags/{name}")
    holds(box)
