"""The invariant kgit's server guard keeps, checked from the outside with plain git.

**Every release stays exactly as released wherever it is reachable.** A release is an annotated tag
``NAME@vX.Y.Z`` pointing at a release commit whose tree holds ``artifacts/NAME/FORMAT/vN.dvc``. Once
a bare repository guarded by kgit's pre-receive hook has accepted it, no push (accepted or refused,
``--force``, ``--no-verify``, ``--mirror``, hand-made objects) may leave the bare repository in a
state where any of these is false:

(a) every recorded release tag still exists, with the same tag object id;
(b) every branch whose tip has a release commit as ancestor (or is it) holds each of that
    release's ``.dvc`` paths with exactly the recorded blob;
(c) no branch tip holds a released ``.dvc`` path with a different blob, ancestor or not;
(d) every release commit is reachable from at least one branch;
(e) there are no refs outside ``refs/heads/`` and ``refs/tags/`` (``refs/replace/*`` would change
    what git shows for any object; notes and other namespaces are not the team's history);
(f) every tag whose name looks like a kgit name (``NAME@v...``, ``NAME#...``) is canonical: the
    model/stage grammar, ASCII digits, no leading zeros (``m@v01.0.0``, ``m@v١.0.0``, ``M@v1.0.0``,
    ``m#prod#01`` are not);
(g) in a fresh clone, ``kgit list --json`` and ``kgit check --no-data`` end without a traceback
    (exit 0, or 1 naming problems), whatever tags were pushed.

Only the resulting state matters, not whether a push was accepted. Everything here is plain git
run with ``GIT_NO_REPLACE_OBJECTS=1`` and this module's own grammar: no kgit code, so a bug in kgit
cannot hide itself. (g) runs the ``kgit`` command line, as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PLAIN_GIT_ENV = {"GIT_NO_REPLACE_OBJECTS": "1", "GIT_TERMINAL_PROMPT": "0"}

# kgit's canonical tag grammar, written out again: model and stage names are lowercase ASCII
# letters, digits, '-' and '_' (alphanumeric at both ends, at most 64); numbers are ASCII digits
# without zeros in front (at most nine); event counters start at 1.
_NAME = r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?"
_NUM = r"(?:0|[1-9][0-9]{0,8})"
_COUNTER = r"[1-9][0-9]{0,8}"
RELEASE_TAG = re.compile(rf"(?P<name>{_NAME})@v{_NUM}\.{_NUM}\.{_NUM}", re.ASCII)
EVENT_TAG = re.compile(rf"{_NAME}(?:#{_NAME}!?|@v{_NUM}\.{_NUM}\.{_NUM}!|@deprecated)#{_COUNTER}", re.ASCII)
# what a reader would take for a kgit name: a version after '@', or a '#'
KGIT_LOOKALIKE = re.compile(r"#|@[vV0-9]|@deprecated", re.IGNORECASE)


def plain_git(repo: Path, *args: str, check: bool = True) -> str:
    """``git ARGS`` in ``repo`` with replace objects off; stdout (bytes that are not UTF-8 kept as
    surrogate escapes, so odd names survive the round trip)."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, env={**os.environ, **PLAIN_GIT_ENV})
    out = proc.stdout.decode("utf-8", "surrogateescape")
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return out


def refs(repo: Path, *patterns: str) -> dict[str, str]:
    """refname -> object id, for every ref (or those under ``patterns``)."""
    out = plain_git(repo, "for-each-ref", "--format=%(objectname) %(refname)", *patterns)
    return {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in out.splitlines() if line}


def is_canonical_kgit_tag(name: str) -> bool:
    return bool(RELEASE_TAG.fullmatch(name) or EVENT_TAG.fullmatch(name))


@dataclass(frozen=True)
class Release:
    """A release as the bare repository accepted it."""

    tag: str
    tag_oid: str  # the annotated tag object
    commit: str
    files: tuple[tuple[str, str], ...]  # (released .dvc path, its blob id at the release commit)


def read_release(repo: Path, tag: str) -> Release:
    """The release ``tag`` in ``repo``: its tag object, commit, and the ``.dvc`` files of
    ``artifacts/NAME/`` that its commit added (compared with its first parent, renames off)."""
    m = RELEASE_TAG.fullmatch(tag)
    assert m, f"{tag} is not a release tag name"
    tag_oid = refs(repo, f"refs/tags/{tag}")[f"refs/tags/{tag}"]
    commit = plain_git(repo, "rev-parse", "--verify", f"{tag_oid}^{{commit}}").strip()
    added = plain_git(
        repo,
        "diff-tree",
        "-r",
        "--root",
        "--no-renames",
        "--no-commit-id",
        "--diff-filter=A",
        "--name-only",
        "-m",
        "--first-parent",
        commit,
        "--",
        f"artifacts/{m['name']}/",
    )
    paths = sorted({p for p in added.splitlines() if p.endswith(".dvc")})
    assert paths, f"{tag}'s commit {commit} adds no .dvc file under artifacts/{m['name']}/"
    return Release(tag, tag_oid, commit, tuple((p, blob_at(repo, commit, p) or "") for p in paths))


def blob_at(repo: Path, commit: str, path: str) -> str | None:
    out = plain_git(repo, "ls-tree", commit, "--", path)
    fields = out.split()
    return fields[2] if out and fields[1] == "blob" else None


@dataclass
class Oracle:
    """The accepted state (recorded right after the releases were pushed) and the clauses above."""

    releases: dict[str, Release] = field(default_factory=dict)

    @classmethod
    def record(cls, bare: Path) -> Oracle:
        tags = [r[len("refs/tags/") :] for r in refs(bare, "refs/tags")]
        return cls({t: read_release(bare, t) for t in tags if RELEASE_TAG.fullmatch(t)})

    def add(self, bare: Path, tag: str) -> None:
        """A release made later by `kgit release` and accepted: it is kept from now on."""
        self.releases[tag] = read_release(bare, tag)

    def problems(self, bare: Path) -> list[tuple[str, str]]:
        """(clause, what is wrong) for clauses (a) to (f); empty when the invariant holds."""
        found: list[tuple[str, str]] = []
        all_refs = refs(bare)
        for tag, rel in sorted(self.releases.items()):
            now = all_refs.get(f"refs/tags/{tag}")
            if now != rel.tag_oid:
                found.append(
                    ("a", f"release tag {tag} is {'gone' if now is None else f'now {now}'}, was {rel.tag_oid}")
                )
        branches = {r[len("refs/heads/") :]: oid for r, oid in all_refs.items() if r.startswith("refs/heads/")}
        reachable: set[str] = set()
        released = {path: (rel, blob) for rel in self.releases.values() for path, blob in rel.files}
        for branch, tip in sorted(branches.items()):
            tree = self._released_blobs(bare, tip, sorted(released))
            for rel in self.releases.values():
                if not self._is_ancestor(bare, rel.commit, tip):
                    continue
                reachable.add(rel.tag)
                for path, blob in rel.files:
                    if tree.get(path) != blob:
                        found.append(
                            (
                                "b",
                                f"branch {branch} contains {rel.tag}'s commit but has "
                                f"{path} {'missing' if path not in tree else 'as ' + tree[path]}, "
                                f"released as {blob}",
                            )
                        )
            for path, got in sorted(tree.items()):
                rel, blob = released[path]
                if got != blob:
                    found.append(("c", f"branch {branch} has {rel.tag}'s {path} as {got}, released as {blob}"))
        found += [
            ("d", f"{tag}'s release commit {rel.commit} is on no branch")
            for tag, rel in sorted(self.releases.items())
            if tag not in reachable
        ]
        found += [
            ("e", f"ref {ref} is outside refs/heads/ and refs/tags/")
            for ref in sorted(all_refs)
            if not ref.startswith(("refs/heads/", "refs/tags/"))
        ]
        for ref in sorted(all_refs):
            name = ref[len("refs/tags/") :]
            if ref.startswith("refs/tags/") and KGIT_LOOKALIKE.search(name) and not is_canonical_kgit_tag(name):
                found.append(("f", f"tag {name!r} looks like a kgit tag but is not canonical"))
        return found

    @staticmethod
    def _released_blobs(bare: Path, tip: str, paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        out = plain_git(bare, "ls-tree", "-r", "--full-tree", tip, "--", *paths)
        blobs = {}
        for line in out.splitlines():
            meta, _, path = line.partition("\t")
            blobs[path] = meta.split()[2]
        return blobs

    @staticmethod
    def _is_ancestor(bare: Path, commit: str, tip: str) -> bool:
        proc = subprocess.run(
            ["git", "merge-base", "--is-ancestor", commit, tip],
            cwd=bare,
            capture_output=True,
            env={**os.environ, **PLAIN_GIT_ENV},
        )
        return proc.returncode == 0


def cli_problems(bare: Path, probe: Path) -> list[tuple[str, str]]:
    """Clause (g): clone ``bare`` fresh into ``probe``, run `kgit list --json` and `kgit check
    --no-data` there; each must exit 0, or 1 with one-line problems, never 2+ or a traceback."""
    found: list[tuple[str, str]] = []
    proc = subprocess.run(
        ["git", "clone", "-q", str(bare), str(probe)],
        capture_output=True,
        text=True,
        env={**os.environ, **PLAIN_GIT_ENV},
    )
    if proc.returncode != 0:
        return [("g", f"git clone failed: {proc.stderr.strip()}")]
    for args in (("list", "--json"), ("check", "--no-data")):
        run = subprocess.run(
            [sys.executable, "-m", "kgit", *args], cwd=probe, capture_output=True, stdin=subprocess.DEVNULL
        )
        err = run.stderr.decode("utf-8", "replace")
        if run.returncode not in (0, 1) or "Traceback" in err:
            found.append(("g", f"kgit {' '.join(args)} exited {run.returncode}: {err.strip()[-600:]}"))
    return found


class InvariantBroken(AssertionError):
    """The bare repository broke the invariant; one subclass per clause, so each kind of hole is
    a distinct failure (hypothesis reports and shrinks each one separately)."""


CLAUSE_ERRORS = {c: type(f"Clause{c.upper()}Broken", (InvariantBroken,), {}) for c in "abcdefg"}


def raise_first(problems: list[tuple[str, str]], transcript: list[str] | None = None) -> None:
    """Raise the first broken clause's error (all problems in its message), or nothing."""
    if not problems:
        return
    clause = problems[0][0]
    text = "\n".join(f"({c}) {p}" for c, p in problems)
    if transcript:
        text += "\nafter:\n" + "\n".join(f"  {line}" for line in transcript)
    raise CLAUSE_ERRORS[clause](text)


def check(oracle: Oracle, bare: Path, probe: Path, transcript: list[str] | None = None) -> None:
    """Every clause, (g) included (``probe``: where the fresh clone goes); raises the first broken
    clause's error, listing every problem and the commands that led there."""
    raise_first(oracle.problems(bare) + cli_problems(bare, probe), transcript)
