"""Every release intact wherever a branch reaches it, judged on the trees a push leaves, whatever
the commits look like: merges of any shape, renames, copies, rewrites, several branches at once;
refs outside branches and tags; tags that only look like kgit's; tag objects made by hand.

Fast tier: releases made by hand as `kgit release` leaves them in git (tests/support/synthetic.py),
a real bare repository, and the server's and pre-push's judgement of real pushes' ref updates
(``server.check_updates`` without the data check, ``client_hooks.plan_push``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import synthetic
from support.synthetic import git

from kgit.guard import client_hooks, invariants, server
from kgit.registry import catalog
from kgit.store import githooks
from kgit.store.git_ops import Repo

ZERO = invariants.ZERO


class Origin:
    """A bare repository that takes a push only if the server's checks find nothing (as kgit's
    pre-receive hook decides, without looking for the data in a DVC remote)."""

    def __init__(self, path: Path, clone: Path) -> None:
        self.path, self.clone = path, clone

    def push(self, *specs: str) -> list[str]:
        """Push ``specs`` (``SRC:DST``, ``:DST`` deletes; SRC a ref or commit of the clone), all or
        nothing; returns the problems (empty: accepted)."""
        lines = []
        for spec in specs:
            src, _, dst = spec.partition(":")
            old = git(self.path, "rev-parse", "-q", "--verify", dst) if self._has(dst) else ZERO
            new = git(self.clone, "rev-parse", src) if src else ZERO
            if new != ZERO:  # the objects arrive first, as in a real push
                git(self.path, "fetch", "-q", "--no-tags", str(self.clone), f"+{new}:refs/incoming/{new}")
            lines.append(f"{old} {new} {dst}")
        verdict = server.check_updates(
            Repo(self.path, bare=True), server.parse_updates("\n".join(lines) + "\n"), check_data=False
        )
        for ref in git(self.path, "for-each-ref", "--format=%(refname)", "refs/incoming/").split():
            git(self.path, "update-ref", "-d", ref)
        if not verdict.problems:
            for line in lines:
                old, new, dst = line.split()
                if new == ZERO:
                    git(self.path, "update-ref", "-d", dst)
                else:
                    git(self.path, "update-ref", dst, new)
        return verdict.problems

    def _has(self, ref: str) -> bool:
        return (
            subprocess.run(["git", "rev-parse", "-q", "--verify", ref], cwd=self.path, capture_output=True).returncode
            == 0
        )


@pytest.fixture(scope="module")
def setup_at_start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Origin]:
    """A clone with m@v1 and m@v2 released on main, pushed to a guarded origin."""
    tmp_path = tmp_path_factory.mktemp("released")
    repo = synthetic.repo_at(tmp_path / "repo")
    origin_path = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(origin_path))
    git(repo, "remote", "add", "origin", str(origin_path))
    synthetic.release(repo, "m", "v1")
    synthetic.release(repo, "m", "v2")
    origin = Origin(origin_path, repo)
    assert origin.push("main:refs/heads/main", "m@v1.0.0:refs/tags/m@v1.0.0", "m@v2.0.0:refs/tags/m@v2.0.0") == []
    git(repo, "fetch", "-q", "origin")
    return repo, origin


@pytest.fixture
def setup(setup_at_start: tuple[Path, Origin], tmp_path: Path) -> tuple[Path, Origin]:
    """A copy of ``setup_at_start`` of this test's own, origin included (built once, copied per test)."""
    shutil.copytree(setup_at_start[0].parent, tmp_path / "setup", symlinks=True)
    repo, origin = tmp_path / "setup" / "repo", tmp_path / "setup" / "origin.git"
    git(repo, "remote", "set-url", "origin", str(origin))
    return repo, Origin(origin, repo)


def commit(repo: Path, message: str, files: dict[str, str | None] | None = None) -> str:
    for path, text in (files or {}).items():
        target = repo / path
        if text is None:
            git(repo, "rm", "-q", str(target.relative_to(repo)))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            git(repo, "add", str(target.relative_to(repo)))
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def plan(repo: Path, *specs: str) -> client_hooks.PushPlan:
    """What pre-push decides for ``git push origin specs`` (remote tips as origin has them)."""
    lines = []
    for spec in specs:
        src, _, dst = spec.partition(":")
        remote = git(repo, "ls-remote", "origin", dst).split("\t")[0] or ZERO
        lines.append(f"{src} {git(repo, 'rev-parse', src)} {dst} {remote}")
    return client_hooks.plan_push(Repo(repo), client_hooks.parse_updates("\n".join(lines) + "\n"), "origin")


V1 = "artifacts/m/keras/v1.dvc"


def test_a_merge_that_keeps_our_side_drops_the_release_it_brings(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    git(repo, "checkout", "-q", "-b", "side", "main~2")  # before both releases
    commit(repo, "side work", {"notes.txt": "x\n"})
    git(repo, "merge", "-q", "-s", "ours", "-m", "merge main, keeping ours", "main")
    problems = origin.push("side:refs/heads/side")
    assert f"m@v1 (keras): branch side deletes {V1} (deleted or renamed, while it contains the release)" in problems
    assert any(p.startswith("m@v2 (keras)") for p in problems)
    assert any("m@v1 (keras)" in v for v in plan(repo, "side:refs/heads/side").violations)


def test_git_merge_itself_is_refused_by_the_merge_hook(setup: tuple[Path, Origin]) -> None:
    repo, _origin = setup
    githooks.install(Repo(repo))
    git(repo, "checkout", "-q", "-b", "side", "main~2")
    before = git(repo, "rev-parse", "HEAD")
    proc = subprocess.run(
        ["git", "merge", "-s", "ours", "-m", "keep ours", "main"], cwd=repo, capture_output=True, text=True
    )
    assert proc.returncode != 0, proc.stderr
    assert f"m@v1 (keras): the commit deletes {V1}" in proc.stderr
    assert git(repo, "rev-parse", "HEAD") == before
    git(repo, "merge", "--abort")
    assert subprocess.run(["git", "merge", "-q", "--no-edit", "main"], cwd=repo).returncode == 0  # a real merge


def test_a_rename_or_a_copy_over_a_released_file_is_refused(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    git(repo, "mv", V1, "artifacts/m/keras/v1-old.dvc")
    git(repo, "commit", "-qm", "rename")
    assert origin.push("main:refs/heads/main") == [
        f"m@v1 (keras): branch main deletes {V1} (deleted or renamed, while it contains the release)"
    ]
    git(repo, "reset", "-q", "--hard", "origin/main")
    (repo / "artifacts/m/keras/v2.dvc").write_text((repo / V1).read_text())  # copy v1 over v2
    git(repo, "commit", "-qam", "copy")
    problems = origin.push("main:refs/heads/main")
    assert len(problems) == 1 and problems[0].startswith("m@v2 (keras): branch main modifies artifacts/m/keras/v2.dvc")


def test_an_octopus_merge_resolved_with_other_content_is_refused(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    git(repo, "checkout", "-q", "-b", "a", "main")
    commit(repo, "a", {"a.txt": "a\n"})
    git(repo, "checkout", "-q", "-b", "b", "main")
    commit(repo, "b", {"b.txt": "b\n"})
    git(repo, "checkout", "-q", "main")
    commit(repo, "main", {"c.txt": "c\n"})
    git(repo, "merge", "-q", "--no-commit", "a", "b")
    (repo / V1).write_text(synthetic.dvc_text("m", "v1", "keras", synthetic.md5_of("m", "v1", "keras", salt="x")))
    git(repo, "add", V1)
    git(repo, "commit", "-qm", "octopus")
    assert len(git(repo, "log", "-1", "--format=%P").split()) == 3
    problems = origin.push("main:refs/heads/main")
    assert [p.split(" (blob")[0] for p in problems] == [f"m@v1 (keras): branch main modifies {V1}"]


def test_a_new_branch_at_a_commit_where_the_release_was_gone_is_refused(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    released = (repo / V1).read_text()
    bad = commit(repo, "drop v1", {V1: None})
    commit(repo, "restore v1", {V1: released})
    assert git(repo, "rev-parse", f"HEAD:{V1}") == git(repo, "rev-parse", f"m@v1.0.0:{V1}")
    assert origin.push("main:refs/heads/main") == []  # the tip is intact: the tree is what counts
    problems = origin.push(f"{bad}:refs/heads/old")
    assert problems == [f"m@v1 (keras): branch old deletes {V1} (deleted or renamed, while it contains the release)"]


def test_deleting_every_branch_that_holds_a_release_at_once_is_refused(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    git(repo, "branch", "copy", "main")
    git(repo, "checkout", "-q", "--orphan", "fresh")
    commit(repo, "unrelated", {"readme.txt": "hi\n"})
    assert origin.push("copy:refs/heads/copy", "fresh:refs/heads/fresh") == []
    problems = origin.push(":refs/heads/main", ":refs/heads/copy")
    assert len(problems) == 1 and "leaves no branch holding the release commit of m@v" in problems[0]
    assert origin.push(":refs/heads/copy") == []  # main still holds them


def test_a_release_tag_whose_commit_no_branch_holds_is_refused(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    git(repo, "checkout", "-q", "-b", "hidden")
    synthetic.release(repo, "m", "v3")
    problems = origin.push("m@v3.0.0:refs/tags/m@v3.0.0")
    assert len(problems) == 1 and problems[0].startswith("new tag m@v3.0.0: no branch holds its release commit")
    assert origin.push("hidden:refs/heads/hidden", "m@v3.0.0:refs/tags/m@v3.0.0") == []


def test_a_new_release_is_checked_on_every_branch_the_push_leaves_alone(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    git(repo, "checkout", "-q", "-b", "other", "main")
    commit(repo, "claims v3's path first", {"artifacts/m/keras/v3.dvc": "outs: []\n"})
    assert origin.push("other:refs/heads/other") == []
    git(repo, "checkout", "-q", "main")
    synthetic.release(repo, "m", "v3")
    problems = origin.push("main:refs/heads/main", "m@v3.0.0:refs/tags/m@v3.0.0")
    assert [p.split(" (blob")[0] for p in problems] == ["m@v3 (keras): branch other modifies artifacts/m/keras/v3.dvc"]


def test_files_in_git_inside_a_released_folder_are_refused(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    commit(repo, "data in git", {"artifacts/m/keras/v1/extra.bin": "bytes\n"})
    assert origin.push("main:refs/heads/main") == [
        "m@v1 (keras): branch main adds artifacts/m/keras/v1/extra.bin to git inside the released folder "
        "(release data lives in DVC)"
    ]


def test_a_plain_push_and_a_side_merge_that_keeps_releases_pass(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    git(repo, "checkout", "-q", "-b", "feature", "main~2")
    commit(repo, "feature", {"feature.txt": "f\n"})
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-edit", "feature")
    commit(repo, "more", {"notes.txt": "n\n"})
    assert origin.push("main:refs/heads/main", "feature:refs/heads/feature") == []
    assert plan(repo, "main:refs/heads/main").violations == []


def test_refs_outside_branches_and_tags_are_refused_unless_allowed(setup: tuple[Path, Origin]) -> None:
    repo, origin = setup
    blob = git(repo, "rev-parse", f"main:{V1}")
    fake = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=repo,
        input="outs: []\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    git(repo, "replace", blob, fake)
    for ref, what in (
        (f"refs/replace/{blob}", "a replace ref"),
        ("refs/notes/commits", "a notes ref"),
        ("refs/foo/bar", "outside refs/heads/ and refs/tags/"),
    ):
        problems = origin.push(f"main:{ref}")
        assert len(problems) == 1 and problems[0].startswith(f"{ref} is {what}"), problems
    assert (
        plan(repo, f"refs/replace/{blob}:refs/replace/{blob}")
        .violations[0]
        .startswith(f"refs/replace/{blob} is a replace ref")
    )
    git(origin.path, "config", "--add", invariants.ALLOW_REF_KEY, "refs/foo/*")
    assert origin.push("main:refs/foo/bar") == []
    # the clone's own replace ref changes nothing kgit reads: the released blob is judged as stored
    assert catalog.release_problems(Repo(repo), catalog.resolve(Repo(repo), "m", "v1")) == []
    assert plan(repo, "main:refs/heads/main").violations == []


@pytest.mark.parametrize("tag", ["m@v01.0.0", "M@v1.0.0", "m#prod#01", "m@v\u0661.0.0", "m#prod#0", "m@v1.0.0.0"])
def test_look_alike_tag_names_are_refused(setup: tuple[Path, Origin], tag: str) -> None:
    repo, origin = setup
    git(repo, "tag", "-a", tag, "-m", "looks like a release", "main")
    problems = origin.push(f"refs/tags/{tag}:refs/tags/{tag}")
    assert len(problems) == 1 and problems[0].startswith(f"new tag {tag!r} looks like a kgit release or stage tag")
    assert plan(repo, f"refs/tags/{tag}:refs/tags/{tag}").violations == problems


def hand_made_tag(repo: Path, name: str, header: bytes, message: bytes = b"made by hand\n") -> str:
    target = git(repo, "rev-parse", "main")
    raw = b"object " + target.encode() + b"\ntype commit\ntag " + name.encode() + b"\n" + header + b"\n" + message
    oid = (
        subprocess.run(
            ["git", "hash-object", "-t", "tag", "--literally", "-w", "--stdin"],
            cwd=repo,
            input=raw,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    git(repo, "update-ref", f"refs/tags/{name}", oid)
    return oid


HOSTILE = {
    "time zone out of range": b"tagger Eve <eve@x> 1700000000 +9900\n",
    "no tagger": b"",
    "huge tagger": b"tagger " + b"E" * 100_000 + b" <eve@x> 1700000000 +0000\n",
    "not UTF-8": b"tagger \xff\xfe <eve@x> 1700000000 +0000\n",
    "date past any calendar": b"tagger Eve <eve@x> 999999999999999999999 +0000\n",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_tag_header_is_that_tag_s_problem_only(setup: tuple[Path, Origin], kind: str) -> None:
    repo, origin = setup
    hand_made_tag(repo, "m#prod#3", HOSTILE[kind])
    hand_made_tag(repo, "m@v9.0.0", HOSTILE[kind], catalog.tag_message("m", "v9", {}).encode())
    # every command keeps working here: the other releases are read as before
    reg = catalog.read(Repo(repo), remember=False)
    assert [r.tag for r in reg.releases if r.valid] == ["m@v1.0.0", "m@v2.0.0"]
    assert catalog.resolve(Repo(repo), "m", "latest").tag == "m@v2.0.0"
    proc = subprocess.run(
        ["kgit", "list", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(__import__('sys').executable).parent}:{os.environ['PATH']}"},
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    # and the server refuses such a tag when it is pushed
    for tag in ("m#prod#3", "m@v9.0.0"):
        problems = origin.push(f"refs/tags/{tag}:refs/tags/{tag}")
        assert any(p.startswith(f"new tag {tag} is malformed: ") for p in problems), problems
