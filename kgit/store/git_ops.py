"""The git adapter: everything kgit asks of git goes through here.

git runs as a subprocess with fixed plumbing formats; the repository is found as git finds it
(``git rev-parse``, so GIT_DIR, worktrees and safe.directory behave as in git). Nothing heavier is
imported: read-only commands (list, show, the hooks' nothing-to-do path) must answer fast."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kgit.core.errors import CommandError, NotAGitRepoError
from kgit.store.git_batch import GitObject, read_objects

_FIELD = "%00"
_RECORD = "%01"


@dataclass(frozen=True)
class TagInfo:
    name: str
    target: str  # the commit the tag points to
    tagger: str
    date: str
    message: str
    object: str = ""  # the tag object's id (annotated) or the commit's (lightweight)
    annotated: bool = True


class Repo:
    """A git working tree, opened from any folder inside it."""

    def __init__(self, path: str | os.PathLike[str] = ".", *, bare: bool = False) -> None:
        """Open the repository at (or above) ``path``, as git itself finds it (``git rev-parse``).
        With ``bare``, a bare repository (a server's) is accepted too; its ``root`` is then the git
        directory, which has no work tree."""
        start = Path(path)
        where = start if start.is_dir() else start.parent
        try:
            proc = subprocess.run(
                [
                    "git",
                    "rev-parse",
                    "--path-format=absolute",
                    "--git-dir",
                    "--git-common-dir",
                    "--is-bare-repository",
                    "--show-toplevel",
                ],
                cwd=where,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                env=_git_env(),
                check=False,
            )
        except OSError:
            proc = None
        lines = proc.stdout.decode(errors="surrogateescape").splitlines() if proc is not None else []
        if len(lines) < 3:
            said = _text(proc.stderr).strip().splitlines() if proc is not None else []
            if said and "not a git repository" not in said[0]:  # e.g. git's "dubious ownership": its own words
                raise NotAGitRepoError(
                    f"git cannot open {start.resolve()}: {said[0].removeprefix('fatal: ')}"
                    + (f" ({said[-1].strip()})" if len(said) > 1 else "")
                )
            raise NotAGitRepoError(
                f"{start.resolve()} is not inside a git repository: run `git init` first, or cd into one"
            )
        self.git_dir = Path(lines[0]).resolve()
        self.common_dir = Path(lines[1]).resolve()
        self.bare = lines[2] == "true" or len(lines) < 4
        if self.bare and not bare:
            raise NotAGitRepoError(f"{path} is a bare git repository: kgit needs a working tree")
        self.root = self.git_dir if self.bare else Path(lines[3]).resolve()
        self._shown: dict[tuple[str, str], str | None] = {}

    # -- plumbing -------------------------------------------------------------------------
    def git(self, *args: str, check: bool = True, raw: bool = False) -> str:
        """Run ``git args`` in the repository root and return stdout (stripped unless ``raw``; raw
        output loses only its last newline)."""
        code, out, err = self.try_git(*args)
        if code != 0:
            if not check:
                return ""
            raise CommandError(["git", *args], code, f"{err}{out}")
        return out if raw else out.strip()

    def try_git(
        self, *args: str, timeout: float | None = None, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """(exit status, stdout less its last newline, stderr less its last newline) of ``git args``
        run in the repository root, in git's own English (LC_ALL=C: kgit reads some of its messages)."""
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=self.root,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                env=_git_env(env),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return 124, "", f"git {args[0]} gave no answer within {exc.timeout:.0f} s"
        return proc.returncode, _text(proc.stdout), _text(proc.stderr)

    # -- state ------------------------------------------------------------------------------
    def head(self) -> str | None:
        code, out, _ = self.try_git("rev-parse", "--verify", "-q", "HEAD")
        return out.strip() if code == 0 else None

    def branch(self) -> str | None:
        code, out, _ = self.try_git("symbolic-ref", "--short", "-q", "HEAD")
        return out.strip() if code == 0 else None

    def dirty_paths(self, exclude_prefix: str | None = None) -> list[str]:
        """Tracked files with uncommitted changes (staged or not), optionally ignoring a folder."""
        out = self.git("status", "--porcelain=v1", "-z", "--untracked-files=no", raw=True)
        paths = []
        entries = out.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if not entry:
                continue
            status, path = entry[:2], entry[3:]
            if status[0] in "RC":  # rename/copy: the next field is the source path
                i += 1
            if exclude_prefix and (path + "/").startswith(exclude_prefix.rstrip("/") + "/"):
                continue
            paths.append(path)
        return paths

    def show_file(self, rev: str, relpath: str) -> str | None:
        """The file ``relpath`` at ``rev`` (None if it has none). A full commit id names content
        that never changes: those are read from git once per Repo."""
        fixed = len(rev) == 40 and all(c in "0123456789abcdef" for c in rev)
        if fixed and (rev, relpath) in self._shown:
            return self._shown[(rev, relpath)]
        code, out, _ = self.try_git("show", f"{rev}:{relpath}")
        text = out if code == 0 else None
        if fixed:
            self._shown[(rev, relpath)] = text
        return text

    def show_file_at_git_dir(self, name: str) -> str | None:
        """A file of the git directory (``MERGE_HEAD``...), None if there is none."""
        try:
            return (self.git_dir / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def show_files(
        self, specs: list[tuple[str, str]], *, max_bytes: int | None = None
    ) -> dict[tuple[str, str], str | None]:
        """The text of many files at many revisions, ``(rev, relpath) -> text`` (None where it is
        missing or not a file), read in one ``git cat-file --batch``: one process, however many
        files (one ``git show`` each costs a few milliseconds). With ``max_bytes``, a larger file's
        text is cut after max_bytes + 1 bytes, for a bounded reader to refuse."""
        wanted = list(dict.fromkeys(specs))
        for rev, relpath in wanted:  # one request per line: a newline would split it in two
            if "\n" in rev or "\n" in relpath:
                raise ValueError(f"cannot read {rev}:{relpath!r}: a newline in the name")
        objects = self._objects([f"{rev}:{relpath}" for rev, relpath in wanted], max_bytes=max_bytes)
        return {
            spec: (obj.data.decode("utf-8", errors="replace") if obj.type == "blob" and obj.data is not None else None)
            for obj, spec in zip(objects, wanted)
        }

    def read_blobs(self, oids: list[str], max_bytes: int) -> dict[str, str | None]:
        """The text of each blob of ``oids`` (None: not a blob here, or larger than ``max_bytes``), in
        one ``git cat-file --batch``."""
        found: dict[str, str | None] = {}
        for obj in self._objects(list(dict.fromkeys(oids)), max_bytes=max_bytes):
            whole = obj.type == "blob" and obj.data is not None and len(obj.data) <= max_bytes
            found[obj.name] = obj.data.decode("utf-8", errors="replace") if whole and obj.data is not None else None
        return found

    def object_ids(self, specs: list[str]) -> dict[str, str | None]:
        """The object id each of ``specs`` names (``REV:PATH``, a ref, an id), None where it names
        nothing, in one ``git cat-file --batch-check`` however many there are."""
        wanted = list(dict.fromkeys(specs))
        return {obj.name: obj.oid or None for obj in self._objects(wanted, content=False)}

    def _objects(self, names: list[str], *, content: bool = True, max_bytes: int | None = None) -> Iterator[GitObject]:
        """``kgit.store.git_batch.read_objects`` in this repository, in git's environment."""
        return read_objects(names, cwd=self.root, env=_git_env(), content=content, max_bytes=max_bytes)

    def ls_tree(self, tree_ish: str, folder: str) -> dict[str, str]:
        """Every file (blob or link) under ``folder`` in ``tree_ish``: path -> object id. Paths as
        stored, no rename detection: a tree is compared as it is."""
        code, out, _ = self.try_git("ls-tree", "-r", "-z", "--full-tree", tree_ish, "--", folder)
        files: dict[str, str] = {}
        if code != 0:
            return files
        for entry in out.split("\0"):
            info, _, path = entry.partition("\t")
            parts = info.split()
            if len(parts) == 3 and parts[1] == "blob":
                files[path] = parts[2]
        return files

    def reachable_from(self, commits: list[str], tips: list[str]) -> set[str]:
        """Those of ``commits`` that are one of ``tips`` or an ancestor of one."""
        wanted = set(commits)
        if not wanted or not tips:
            return set()
        if len(wanted) <= 8:  # a few questions: git answers each from the commit graph
            return {
                c for c in wanted if any(self.try_git("merge-base", "--is-ancestor", c, tip)[0] == 0 for tip in tips)
            }
        out = self.git("rev-list", *tips)  # many: one walk of the history
        return wanted & set(out.split())

    # -- tags -------------------------------------------------------------------------------
    def tag_exists(self, tag: str) -> bool:
        code, _, _ = self.try_git("rev-parse", "--verify", "-q", f"refs/tags/{tag}")
        return code == 0

    def tag_names(self, pattern: str = "refs/tags", points_at: str | None = None) -> list[str]:
        """Names of the tags matching ``pattern`` (optionally only those pointing at a commit): cheap."""
        if not points_at:
            names = self._tag_names_matching([pattern])
            if names is not None:
                return names
        extra = [f"--points-at={points_at}"] if points_at else []
        return self.git("for-each-ref", "--format=%(refname:strip=2)", *extra, pattern).split()

    def tags(self, *patterns: str) -> Iterator[TagInfo]:
        """All tags matching ``patterns`` (default: every tag) with their message, in one git call."""
        fmt = (
            _FIELD.join(
                [
                    "%(refname:strip=2)",
                    "%(objecttype)",
                    "%(objectname)",
                    "%(*objectname)",
                    "%(taggername) %(taggeremail)",
                    "%(taggerdate:iso-strict)",
                    "%(contents)",
                ]
            )
            + _RECORD
        )
        out = self.git("for-each-ref", f"--format={fmt}", *(patterns or ("refs/tags",)))
        for record in out.split("\x01"):
            record = record.lstrip("\n")
            if not record:
                continue
            parts = record.split("\x00")
            if len(parts) != 7:
                continue
            name, otype, oid, peeled, tagger, date, message = parts
            annotated = otype == "tag"
            yield TagInfo(
                name, peeled if annotated else oid, tagger.strip(), date, message if annotated else "", oid, annotated
            )

    def tag_refs(self, *patterns: str) -> list[tuple[str, str, str]]:
        """(name, object type, object id) of the tags matching ``patterns`` (default: every tag),
        without reading any tag's message: cheap even with thousands of tags."""
        names = self._tag_names_matching(list(patterns)) if patterns else None
        if names is not None:
            return self._refs_of(names)
        out = self.git(
            "for-each-ref", "--format=%(objectname) %(objecttype) %(refname:strip=2)", *(patterns or ("refs/tags",))
        )
        refs = []
        for line in out.splitlines():
            oid, otype, name = (line.split(" ", 2) + ["", ""])[:3]
            if name:
                refs.append((name, otype, oid))
        return refs

    def _tag_names_matching(self, patterns: list[str]) -> list[str] | None:
        """The tag names matching ``patterns`` (each ``refs/tags/NAME`` or a glob of one, as
        for-each-ref takes them), sorted, from the names alone: the loose tag files' names and the
        packed-refs file, whose values git reads later. ``git for-each-ref`` with any pattern reads
        every loose tag file (0.1 s at 15,000, as a repository has them after fetching many tags
        until ``git gc``). None where the files backend's simple layout does not hold (reftable, a
        folder of tags where a match could be): then ask git."""
        wanted = [p[len("refs/tags/") :] for p in patterns if p.startswith("refs/tags/")]
        if len(wanted) != len(patterns) or any("/" in w or not w for w in wanted):
            return None
        if (self.common_dir / "reftable").exists():
            return None
        # the literal start of each pattern: only names that begin so can match (a tag in a folder
        # never matches a pattern without "/", but a folder named like a match would: ask git)
        heads = tuple(w[: min((w.index(c) for c in "*?[" if c in w), default=len(w))] for w in wanted)
        names: set[str] = set()
        try:
            with os.scandir(self.common_dir / "refs" / "tags") as entries:
                for entry in entries:
                    if entry.name.startswith(heads):
                        if entry.is_dir(follow_symlinks=False):
                            return None
                        if not entry.name.endswith(".lock"):
                            names.add(entry.name)
        except FileNotFoundError:
            pass
        except OSError:
            return None
        try:
            packed = (self.common_dir / "packed-refs").read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            packed = ""
        except OSError:
            return None
        for line in packed.splitlines():
            ref = line.partition(" ")[2]
            if ref.startswith("refs/tags/") and not line.startswith(("#", "^")):
                name = ref[len("refs/tags/") :]
                if name.startswith(heads):
                    if "/" in name:
                        return None
                    names.add(name)
        found = {w for w in wanted if w in names and not _is_glob(w)}
        for glob in filter(_is_glob, wanted):
            match = re.compile(fnmatch.translate(glob)).match
            found.update(n for n in names if match(n))
        return sorted(found)

    def _refs_of(self, names: list[str]) -> list[tuple[str, str, str]]:
        """(name, object type, object id) of each tag in ``names`` that exists, in one ``git
        cat-file --batch-check`` (each a lookup of its own, not a scan of every tag)."""
        names = [n for n in names if "\n" not in n]  # not a ref git could hold: nothing to look up
        return [
            (name, obj.type, obj.oid)
            for obj, name in zip(self._objects([f"refs/tags/{n}" for n in names], content=False), names)
            if obj.found
        ]

    def annotated_tags(self, refs: list[tuple[str, str]]) -> Iterator[TagInfo]:
        """TagInfo of each (name, tag object id) in ``refs``, read in one ``git cat-file --batch``;
        the target is the object the tag names (one level, as for-each-ref's ``%(*objectname)``).
        Objects that are missing or not tags are skipped."""
        for obj, (name, _oid) in zip(self._objects([oid for _name, oid in refs]), refs):
            if obj.type == "tag" and obj.data is not None:
                info = _tag_info(name, obj.oid, obj.data.decode("utf-8", errors="replace"))
                if info is not None:
                    yield info

    def tag_object(self, oid: str, name: str) -> TagInfo | None:
        """The tag object ``oid`` (not yet behind a ref, e.g. in a push being received) as TagInfo;
        a commit id gives a lightweight TagInfo; None if ``oid`` is neither."""
        code, otype, _ = self.try_git("cat-file", "-t", oid)
        otype = otype.strip()
        if code != 0:
            return None
        if otype == "commit":
            return TagInfo(name, oid, "", "", "", oid, False)
        if otype != "tag":
            return None
        target = self.git("rev-parse", "--verify", "-q", f"{oid}^{{commit}}", check=False)
        if not target:
            return None
        # for-each-ref cannot read an object outside refs: parse the raw tag object instead
        raw = self.git("cat-file", "tag", oid, raw=True)
        head, _, message = raw.partition("\n\n")
        tagger, date = "", ""
        for line in head.splitlines():
            if line.startswith("tagger "):
                tagger, date = _parse_ident(line[len("tagger ") :])
        return TagInfo(name, target, tagger, date, message, oid, True)

    def tag_header_problem(self, oid: str, name: str) -> str | None:
        """What is wrong with the header of tag object ``oid`` pushed as ``name`` (None: nothing):
        the fields git writes, each well formed, in UTF-8 and of a sane size, naming ``name``. A tag
        made by hand (``git hash-object -t tag --literally``) can carry anything; kgit reads every
        tag on every listing, so such a tag is refused where it arrives."""
        if "\n" in oid:
            return "it is not a tag object"
        [obj] = self._objects([oid], max_bytes=MAX_TAG_BYTES)
        if obj.type != "tag" or obj.data is None:
            return "it is not a tag object"
        if not obj.whole:  # only the start of it was read
            return _too_large(obj.size)
        return tag_header_problem(obj.data, name)

    def create_tag(self, tag: str, target: str, message: str) -> None:
        with _message_file(message) as path:
            self.git("tag", "-a", tag, target, "-F", path)

    def remote_has_tag(self, remote: str, tag: str, timeout: float = 15.0) -> bool | None:
        """True/False if ``remote`` answered, None if it has no such remote or is unreachable."""
        code, out, _ = self.try_git("remote")
        if code != 0 or remote not in out.split():
            return None
        status, out, _ = self.try_git(
            "ls-remote",
            "--tags",
            remote,
            f"refs/tags/{tag}",
            timeout=timeout,
            env={"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"},
        )
        if status != 0:
            return None
        return bool(str(out).strip())

    # -- writing ----------------------------------------------------------------------------
    def add(self, paths: list[str]) -> None:
        self.git("add", "--", *paths)

    def commit_paths(self, message: str, paths: list[str]) -> str:
        """Commit exactly ``paths`` (other staged changes stay staged) and return the new commit."""
        with _message_file(message) as path:
            self.git("commit", "-q", "--no-verify", "-F", path, "--only", "--", *paths)
        head = self.head()
        assert head is not None
        return head

    def config_get(self, key: str) -> str | None:
        code, out, _ = self.try_git("config", "--get", key)
        return out.strip() if code == 0 else None

    def config_set(self, key: str, value: str) -> None:
        self.git("config", key, value)


def _tag_info(name: str, oid: str, raw: str) -> TagInfo | None:
    """An annotated tag object's text (headers, blank line, message) as TagInfo."""
    head, _, message = raw.partition("\n\n")
    target, tagger, date = "", "", ""
    for line in head.splitlines():
        if line.startswith("object ") and not target:
            target = line[len("object ") :].strip()
        elif line.startswith("tagger "):
            tagger, date = _parse_ident(line[len("tagger ") :])
    return TagInfo(name, target, tagger, date, message, oid, True) if target else None


MAX_TAG_BYTES = 1 << 20  # a kgit tag's message is a few kilobytes
MAX_HEADER_LINE = 4096
_IDENT_RE = re.compile(rb"[^<>\n]*<[^<>\n]*> (0|[1-9][0-9]{0,11}) [+-]([0-9]{2})([0-9]{2})")


def tag_header_problem(raw: bytes, name: str) -> str | None:
    """``Repo.tag_header_problem`` on the raw object."""
    if len(raw) > MAX_TAG_BYTES:
        return _too_large(len(raw))
    head, sep, body = raw.partition(b"\n\n")
    fields: dict[bytes, bytes] = {}
    for line in head.split(b"\n"):
        key, _, value = line.partition(b" ")
        if len(line) > MAX_HEADER_LINE:
            return f"its {key[:20].decode(errors='replace')} line is {len(line):,} bytes long"
        if key in fields:
            return f"it has two {key.decode(errors='replace')} lines"
        fields[key] = value
    try:
        head.decode("utf-8")
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    for key in (b"object", b"type", b"tag", b"tagger"):
        if key not in fields:
            return f"it has no {key.decode()} line"
    if fields[b"tag"].decode() != name:
        return f"its header names tag {fields[b'tag'].decode()[:80]!r}, not {name}"
    ident = _IDENT_RE.fullmatch(fields[b"tagger"])
    if ident is None:
        return "its tagger line is not `Name <email> SECONDS +HHMM`"
    hours, minutes = int(ident.group(2)), int(ident.group(3))
    if hours > 14 or minutes > 59 or (hours == 14 and minutes):
        return f"its tagger's time zone {ident.group(2).decode()}{ident.group(3).decode()} is out of range"
    if not sep:
        return "it has no message"
    return None


def _too_large(size: int) -> str:
    return f"it is {size:,} bytes (at most {MAX_TAG_BYTES:,})"


def hook_records(text: str, width: int) -> list[list[str]]:
    """The records git gives a hook on stdin (pre-push: 4 fields a line, pre-receive: 3); lines of
    any other shape are not git's and are skipped."""
    return [parts for parts in (line.split() for line in text.splitlines()) if len(parts) == width]


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment git runs in: the caller's, with git's own English whatever the locale (kgit
    reads some of its messages), replace objects and grafts off (``refs/replace/*`` would let anyone
    who can push a ref show kgit other content under a released object's id), plus ``extra``."""
    return {**os.environ, "LANGUAGE": "C", "LC_ALL": "C", "GIT_NO_REPLACE_OBJECTS": "1", **(extra or {})}


def _text(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _parse_ident(ident: str) -> tuple[str, str]:
    """``Name <email> 1700000000 +0100`` -> ("Name <email>", ISO-8601 date). A date git would not
    write (a time zone of 99 hours, a year past 9999, no date at all) reads as no date: a tag
    made by hand stays that tag's problem, never every command's."""
    from datetime import datetime, timedelta, timezone

    who, _, when = ident.rpartition("> ")
    parts = when.split()
    date = ""
    if len(parts) == 2 and parts[0].isascii() and parts[0].isdigit() and re.fullmatch(r"[+-][0-9]{4}", parts[1]):
        sign = -1 if parts[1][0] == "-" else 1
        try:
            offset = timedelta(hours=int(parts[1][1:3]), minutes=int(parts[1][3:5])) * sign
            date = datetime.fromtimestamp(int(parts[0]), timezone(offset)).isoformat()
        except (ValueError, OverflowError, OSError):
            date = ""
    return (who + ">" if who else ident).strip(), date


@contextlib.contextmanager
def _message_file(message: str) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="kgit-msg-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(message)
        yield path
    finally:
        os.unlink(path)
