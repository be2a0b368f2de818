"""Two teammates attacking the guarded origin of support.sandbox with ordinary git, one push per step.

Each operation is a small frozen dataclass whose fields are small numbers and choices (what
hypothesis draws and shrinks); ``apply`` resolves them against the sandbox as it is then (its
branches, the recorded releases) and runs real git commands as ana or bob, ending with a real
``git push``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass

import kgit as api
from kgit.core.errors import KgitError
from support.invariant import refs
from support.sandbox import WHO, PushFlags, Sandbox


# -- the operations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """A plain commit of an unrelated file on a branch, pushed to it (or as a new branch)."""

    who: int
    branch: int
    as_new: bool = False
    push: PushFlags = PushFlags()
    local: bool = False

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        name = s.checkout(who, self.branch, self.local)
        s.write(who, "work.txt", f"step {s.clock}\n")
        s.git(who, "add", "work.txt")
        s.commit(who, "unrelated work")
        s.push_with(who, self.push, f"HEAD:refs/heads/{name + '-new' if self.as_new else name}")


TOUCH = ("modify", "edit-meta", "delete", "rename", "copy", "add-in-folder", "swap", "mode", "restore")


@dataclass(frozen=True)
class TouchReleased:
    """A commit that edits a released ``.dvc`` file (or creates it where the release is absent),
    deletes, renames, copies or swaps it with another release's, changes its mode, or adds a file
    inside the released folder."""

    who: int
    branch: int
    file: int
    how: str
    as_new: bool = False
    push: PushFlags = PushFlags()
    local: bool = False

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        name = s.checkout(who, self.branch, self.local)
        files = s.released_paths()
        rel, path, _blob = files[self.file % len(files)]
        here = (s.clone(who) / path).exists()
        if self.how == "restore":
            s.git(who, "checkout", rel.commit, "--", path)
            s.git(who, "rm", "-q", "--cached", "--ignore-unmatch", "--", path.replace(".dvc", "-old.dvc"))
        elif self.how == "modify" or not here:
            if here:
                s.write(
                    who,
                    path,
                    re.sub(r"md5: [0-9a-f]+", "md5: " + "0" * 32, (s.clone(who) / path).read_text(), count=1),
                    shown=f"sed -i -E '0,/md5: [0-9a-f]+/s//md5: {'0' * 32}/' {path}",
                )
            else:
                s.write(who, path, f"outs:\n- md5: {'0' * 32}.dir\n  path: v1\n")
            s.git(who, "add", "-f", path)
        elif self.how == "edit-meta":  # the DVC hash kept, the metadata beside it changed
            s.write(
                who,
                path,
                (s.clone(who) / path).read_text().replace("notes: null", "notes: edited"),
                shown=f"sed -i 's/notes: null/notes: edited/' {path}",
            )
            s.git(who, "add", "-f", path)
        elif self.how == "delete":
            s.git(who, "rm", "-q", path)
        elif self.how == "rename":
            s.git(who, "mv", path, path.replace(".dvc", "-old.dvc"))
        elif self.how == "copy":
            s.write(
                who, "artifacts/copied.dvc", (s.clone(who) / path).read_text(), shown=f"cp {path} artifacts/copied.dvc"
            )
            s.git(who, "add", "-f", "artifacts/copied.dvc")
        elif self.how == "add-in-folder":
            s.write(who, f"{path[: -len('.dvc')]}/extra.txt", "not from the release\n")
            s.git(who, "add", "-f", f"{path[: -len('.dvc')]}/extra.txt")
        elif self.how == "swap":
            _other, other_path, _ = files[(self.file + 1) % len(files)]
            s.write(
                who,
                path,
                s.ask(who, "show", f"{_other.commit}:{other_path}") + "\n",
                shown=f"git show {_other.tag}^{{commit}}:{other_path} > {path}",
            )
            s.git(who, "add", "-f", path)
        elif self.how == "mode":
            s.git(who, "update-index", "--chmod=+x", path)
        s.commit(who, f"{self.how} {path}")
        s.push_with(who, self.push, f"HEAD:refs/heads/{name + '-new' if self.as_new else name}")


MERGES = ("plain", "ours", "theirs", "octopus", "wrong-side", "drop-released")


@dataclass(frozen=True)
class Merge:
    """Merge other branches into one: plain, ``-s ours``, ``-X theirs``, an octopus of three, or
    resolving (with or without a conflict) by taking the wrong side of every released ``.dvc``
    file, or by dropping them; pushed to the branch or as a new one."""

    who: int
    branch: int
    other: int
    how: str
    third: int = 0
    as_new: bool = False
    push: PushFlags = PushFlags()
    local: bool = False

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        name = s.checkout(who, self.branch, self.local)
        names = s.branches() or ["main"]
        other = f"refs/remotes/origin/{names[self.other % len(names)]}"
        if not s.rev(who, other) or not s.rev(who, "HEAD"):
            return
        if self.how == "ours":
            s.git(who, "merge", "-q", "--no-edit", "--no-verify", "-s", "ours", other)
        elif self.how == "theirs":
            s.git(who, "merge", "-q", "--no-edit", "--no-verify", "-X", "theirs", other)
            self._finish(s, who)
        elif self.how == "octopus":
            third = f"refs/remotes/origin/{names[self.third % len(names)]}"
            s.git(who, "merge", "-q", "--no-edit", "--no-verify", other, third)
            if s.ask(who, "ls-files", "-u"):
                s.git(who, "merge", "--abort")
        elif self.how in ("wrong-side", "drop-released"):
            s.git(who, "merge", "-q", "--no-commit", "--no-ff", "--allow-unrelated-histories", other)
            for _rel, path, _blob in s.released_paths():
                on_other = self.how == "wrong-side" and bool(s.rev(who, f"{other}:{path}"))
                if on_other:
                    s.git(who, "checkout", other, "--", path)
                elif (s.clone(who) / path).exists() or s.ask(who, "ls-files", "--", path):
                    s.git(who, "rm", "-q", "-f", "--", path)
            s.commit(who, f"merge {other}, resolved by hand")
        else:
            s.git(who, "merge", "-q", "--no-edit", "--no-verify", other)
            self._finish(s, who)
        s.push_with(who, self.push, f"HEAD:refs/heads/{name + '-merged' if self.as_new else name}")

    @staticmethod
    def _finish(s: Sandbox, who: str) -> None:
        """Commit the merge in progress, resolving any conflict with the other side's files."""
        if not (s.clone(who) / ".git" / "MERGE_HEAD").exists():
            return
        if s.ask(who, "ls-files", "-u"):
            s.git(who, "checkout", "--theirs", "--", ".")
        s.git(who, "add", "-A", "-f", ".")
        s.git(who, "commit", "-q", "--no-verify", "--no-edit")


REWRITES = ("reset", "amend", "drop-release", "orphan")


@dataclass(frozen=True)
class Rewrite:
    """Rewrite a branch's history and force it back: ``reset --hard HEAD~k`` and a new commit,
    ``commit --amend``, a rebase that drops a release commit, or an orphan branch in its place."""

    who: int
    branch: int
    how: str
    k: int = 1
    push: PushFlags = PushFlags(force=True)
    local: bool = False

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        name = s.checkout(who, self.branch, self.local)
        if self.how == "reset":
            s.git(who, "reset", "-q", "--hard", f"HEAD~{self.k}")
            s.write(who, "work.txt", "rewritten\n")
            s.git(who, "add", "work.txt")
            s.commit(who, "rewritten")
        elif self.how == "amend":
            s.commit(who, "amended", "--amend")
        elif self.how == "drop-release":
            ours = [r for r in s.releases() if _is_ancestor(s, who, r.commit)]
            if not ours:
                return
            commit = ours[self.k % len(ours)].commit
            s.git(who, "rebase", "-q", "--no-verify", "-X", "theirs", "--onto", f"{commit}~1", commit)
            if (s.clone(who) / ".git" / "rebase-merge").exists() or (s.clone(who) / ".git" / "rebase-apply").exists():
                s.git(who, "rebase", "--abort")
                return
        elif self.how == "orphan":
            s.git(who, "checkout", "-q", "--orphan", "fresh")
            s.git(who, "rm", "-rq", "--cached", "artifacts", "--ignore-unmatch")
            s.commit(who, "start again")
        s.push_with(who, self.push, f"HEAD:refs/heads/{name}")


def _is_ancestor(s: Sandbox, who: str, commit: str) -> bool:
    return (
        subprocess.run(
            ["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=s.clone(who), capture_output=True
        ).returncode
        == 0
    )


BRANCH_OPS = ("create", "delete", "delete-two", "move", "delete-and-move")
TARGETS = ("release", "release-parent", "branch", "branch-parent", "root")


@dataclass(frozen=True)
class Branches:
    """Create, move or delete branches on origin by explicit refspecs; two deletions, or a
    deletion and a (forced) move, in one push."""

    who: int
    how: str
    branch: int
    target: str = "branch"
    pick: int = 0
    push: PushFlags = PushFlags()

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        s.checkout(who, 0)
        names = s.branches()
        if self.how in ("delete", "delete-two"):
            if not names:
                return
            gone = {names[self.branch % len(names)]}
            if self.how == "delete-two":
                gone.add(names[self.pick % len(names)])
            s.push_with(who, self.push, *(f":refs/heads/{n}" for n in sorted(gone)))
            return
        commit = _target_commit(s, who, self.target, self.pick)
        if not commit:
            return
        if self.how == "delete-and-move" and len(names) > 1:
            dropped = names[self.branch % len(names)]
            moved = [n for n in names if n != dropped][self.pick % (len(names) - 1)]
            s.push_with(who, self.push, f":refs/heads/{dropped}", f"{commit}:refs/heads/{moved}")
            return
        name = (names[self.branch % len(names)] if names else "main") if self.how == "move" else f"b{self.branch % 3}"
        s.push_with(who, self.push, f"{commit}:refs/heads/{name}")


def _target_commit(s: Sandbox, who: str, target: str, pick: int) -> str:
    releases = s.releases()
    if target == "release":
        return releases[pick % len(releases)].commit
    if target == "release-parent":
        return s.rev(who, f"{releases[pick % len(releases)].commit}~1")
    if target == "root":
        return s.ask(who, "rev-list", "--max-parents=0", "HEAD").split("\n")[-1] if s.rev(who, "HEAD") else ""
    names = s.branches()
    if not names:
        return ""
    return s.rev(who, f"refs/remotes/origin/{names[pick % len(names)]}{'~1' if target == 'branch-parent' else ''}")


TAG_NAMES = (
    "m@v1.0.0",
    "m@v2.0.0",
    "n@v1.0.0",
    "m#prod#1",  # recorded
    "m@v3.0.0",
    "n@v2.0.0",
    "z@v1.0.0",
    "m#prod#2",
    "m#staging#1",
    "m@v1.0.0!#2",
    "m@deprecated#2",  # new, canonical
    "m@v01.0.0",
    "m#prod#01",
    "m@v\u0661.0.0",
    "M@v1.0.0",
    "m@v1.0",
    "m@v1.0.0-rc1",
    "m@v\uff11.0.0",  # look-alikes
    "m#Prod#1",
    "m@v1.0.0!#01",
    "plain-tag",
)
TAG_TARGETS = ("release", "release-tag", "release-parent", "branch", "released-blob")
TAG_STYLES = ("lightweight", "annotated", "copied-message", "literal")
ODD_HEADERS = ("plain", "tz+9900", "no-tagger", "huge-tagger", "non-utf8", "other-name")


@dataclass(frozen=True)
class TagOp:
    """Create, move or delete a tag on origin: release and stage names, new ones and non-canonical
    look-alikes; lightweight, annotated, annotated with a release's own message, or a hand-made tag
    object (``git hash-object -t tag --literally``) with odd headers; pushed explicitly."""

    who: int
    name: int
    target: str = "release"
    style: str = "annotated"
    header: str = "plain"
    pick: int = 0
    delete: bool = False
    push: PushFlags = PushFlags()

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        s.checkout(who, 0)
        tag = TAG_NAMES[self.name % len(TAG_NAMES)]
        if self.delete:
            s.push_with(who, self.push, f":refs/tags/{tag}")
            return
        obj, otype = self._target(s, who)
        if not obj:
            return
        releases = s.releases()
        message = (
            s.tag_message(releases[(self.pick + 1) % len(releases)].tag)
            if self.style == "copied-message" or self.header != "plain"
            else b"made by hand\n"
        )
        if self.style == "lightweight":
            s.git(who, "update-ref", f"refs/tags/{tag}", obj)
        elif self.style == "literal" or otype == "blob":
            raw = literal_tag(obj, otype, tag, self.header, message)
            oid = s.git(
                who,
                "hash-object",
                "-t",
                "tag",
                "--literally",
                "-w",
                "--stdin",
                stdin=raw,
                shown=f"printf %s {shlex.quote(_shown(raw))} | git hash-object -t tag --literally -w --stdin",
            )
            s.git(who, "update-ref", f"refs/tags/{tag}", oid)
        else:
            msg = s.clone(who) / ".git" / "TAG_MESSAGE"
            msg.write_bytes(message)
            s.git(who, "tag", "-f", "-a", tag, obj, "-F", str(msg))
        s.push_with(who, self.push, f"refs/tags/{tag}")

    def _target(self, s: Sandbox, who: str) -> tuple[str, str]:
        releases = s.releases()
        rel = releases[self.pick % len(releases)]
        if self.target == "release-tag":
            return rel.tag_oid, "tag"
        if self.target == "released-blob":
            return rel.files[0][1], "blob"
        return _target_commit(s, who, self.target, self.pick), "commit"


def literal_tag(obj: str, otype: str, name: str, header: str, message: bytes) -> bytes:
    """A tag object written by hand, with one odd header."""
    tagger: bytes | None = b"Ana Lyst <ana@team.invalid> 1800000000 +0000"
    if header == "tz+9900":
        tagger = b"Ana Lyst <ana@team.invalid> 1800000000 +9900"
    elif header == "no-tagger":
        tagger = None
    elif header == "huge-tagger":
        tagger = b"A" * 100_000 + b" <ana@team.invalid> 1800000000 +0000"
    elif header == "non-utf8":
        tagger = b"Ana \xff\xfe <ana@team.invalid> 1800000000 +0000"
        message = message + b"\xff\xfe not UTF-8\n"
    if header == "other-name":
        name = "m@v1.0.0"
    head = f"object {obj}\ntype {otype}\ntag {name}\n".encode()
    return head + (b"tagger " + tagger + b"\n" if tagger is not None else b"") + b"\n" + message


def _shown(raw: bytes) -> str:
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) < 400 else f"{text[:200]}...({len(text)} characters)...{text[-100:]}"


OTHER_REFS = ("replace-blob", "replace-commit", "notes", "foo", "mirror", "all-refs")


@dataclass(frozen=True)
class OtherRefs:
    """Refs outside branches and tags: ``git replace`` of a released ``.dvc`` blob or release commit
    (pushed as ``refs/replace/*``), ``refs/notes/*``, ``refs/foo/bar``, ``git push --mirror``, or
    every local ref with ``refs/*:refs/*``."""

    who: int
    how: str
    pick: int = 0
    push: PushFlags = PushFlags()

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        s.checkout(who, self.pick)
        if not s.rev(who, "HEAD"):
            return
        releases = s.releases()
        rel = releases[self.pick % len(releases)]
        if self.how == "replace-blob":
            path, blob = rel.files[0]
            fake = s.git(
                who,
                "hash-object",
                "-w",
                "--stdin",
                stdin=b"outs:\n- md5: 0\n  path: v1\n",
                shown="printf 'outs:\\n- md5: 0\\n  path: v1\\n' | git hash-object -w --stdin",
            )
            s.git(who, "replace", "-f", blob, fake)
            s.push_with(who, self.push, "refs/replace/*:refs/replace/*")
        elif self.how == "replace-commit":
            s.git(who, "replace", "-f", rel.commit, "HEAD")
            s.push_with(who, self.push, "refs/replace/*:refs/replace/*")
        elif self.how == "notes":
            s.git(who, "notes", "add", "-f", "-m", "a note", rel.commit)
            s.push_with(who, self.push, "refs/notes/*:refs/notes/*")
        elif self.how == "foo":
            s.push_with(who, self.push, "HEAD:refs/foo/bar")
        elif self.how == "mirror":
            s.push(who, "--mirror", *self.push.args(), "origin")
        else:
            s.push_with(who, PushFlags(True, self.push.no_verify), "refs/*:refs/*")


@dataclass(frozen=True)
class NewRelease:
    """`kgit release` of a new version on a branch (expensive: a real release), pushed with the
    branch and its tag through the client hook; once origin has it, the invariant keeps it too."""

    who: int
    branch: int
    model: str = "m"

    def apply(self, s: Sandbox) -> None:
        who = WHO[self.who]
        name = s.checkout(who, self.branch)
        if not (s.clone(who) / "dvc.yaml").exists():
            return  # a branch from before `kgit init`: nothing to release on
        before = set(refs(s.clone(who), "refs/tags"))
        # kgit's API in this process, which has TensorFlow already: what `kgit release` runs
        failed = ""
        with s.acting_as(who):
            try:
                api.release(str(s.base / "model.keras"), self.model, formats=["keras"], repo=s.clone(who))
            except KgitError as exc:
                failed = f"   # refused: {exc}"
        s.transcript.append(f"{who}$ kgit release {self.model} --from model.keras --format keras{failed}")
        made = [r[len("refs/tags/") :] for r in set(refs(s.clone(who), "refs/tags")) - before]
        if failed or len(made) != 1:
            return
        tag = made[0]
        if s.push(who, "origin", f"HEAD:refs/heads/{name}", f"refs/tags/{tag}"):
            ours = refs(s.clone(who), f"refs/tags/{tag}")
            if refs(s.origin, f"refs/tags/{tag}") == ours:
                s.oracle.add(s.origin, tag)


OPERATIONS = (Work, TouchReleased, Merge, Rewrite, Branches, TagOp, OtherRefs, NewRelease)
