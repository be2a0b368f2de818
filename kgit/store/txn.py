"""Making a release all-or-nothing: a repository lock, a journal, and recovery.

A release writes files, runs `dvc add`, commits, then tags. Before touching the work tree it
writes a journal (in the git directory) listing everything it is about to create or change.
If the process dies (error, Ctrl-C, kill -9), the next kgit command that writes finds the journal
and either finishes the release (the commit exists: only the tag is missing, and the data went
into the DVC cache before the commit) or removes every trace of it (no commit yet). The journal
also holds the sha256 of what the release wrote, so that undoing never overwrites or deletes a
file edited since: such a file is left as it is, and named.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from kgit.core import layout, progress
from kgit.core.errors import KgitError, one_line
from kgit.core.fsutil import remove_leftover_temporaries, write_atomic
from kgit.core.metadata import sha256_file
from kgit.store import clone_state
from kgit.store.git_ops import Repo

TRAILER = "Kgit-Release"


class JournalError(KgitError):
    """The journal of an interrupted release cannot be read, or what it records cannot be undone."""


def staging_dir(repo: Repo) -> Path:
    return clone_state.path(repo, clone_state.STAGING)


@contextlib.contextmanager
def writing(repo: Repo, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """How every command that commits or tags starts: hold the repository's write lock, then finish or
    undo a release that was interrupted before (``log`` hears about waiting and recovering)."""
    on_wait = (lambda: log("waiting for another kgit command in this repository")) if log else None
    with clone_state.repo_lock(repo, on_wait=on_wait):
        recover(repo, log=log)
        yield


@dataclass
class Journal:
    tag: str
    head_before: str | None
    tag_message: str
    created: list[str] = field(default_factory=list)  # repo-relative paths kgit creates
    backups: dict[str, str | None] = field(default_factory=dict)  # path -> content before (None: absent)
    commit: str | None = None
    # What the release wrote, so recovery never undoes a later edit: path -> sha256 of each content the
    # release wrote there, and for each version folder it placed, file -> sha256.
    written: dict[str, list[str]] = field(default_factory=dict)
    folders: dict[str, dict[str, str]] = field(default_factory=dict)
    # Files `dvc add` is writing (the .dvc pointers, DVC's .gitignore entries): killed inside DVC, the
    # release could not record their hashes, so recovery recognises what DVC writes there instead.
    dvc_writing: list[str] = field(default_factory=list)
    # The work tree the release wrote into: the clone's own, or another of its work trees (a training
    # run's branch, kgit.workflow.training_branch); recovery acts there, whichever work tree runs it.
    root: str | None = None

    @staticmethod
    def path(repo: Repo) -> Path:
        return clone_state.path(repo, clone_state.JOURNAL)

    def save(self, repo: Repo) -> None:
        clone_state.write_json(self.path(repo), asdict(self), durable=True)

    def expect(self, rel: str, content: bytes) -> None:
        """Record ``content`` as what the release is about to write to ``rel``."""
        digest = hashlib.sha256(content).hexdigest()
        if digest not in self.written.setdefault(rel, []):
            self.written[rel].append(digest)

    def note_written(self, root: Path, rels: list[str]) -> None:
        """Record what the release (or `dvc add` for it) just wrote to each of ``rels``."""
        for rel in rels:
            p = root / rel
            if p.is_file():
                digest = sha256_file(p)
                if digest not in self.written.setdefault(rel, []):
                    self.written[rel].append(digest)

    @classmethod
    def load(cls, repo: Repo) -> Journal | None:
        """The journal of an interrupted release, None if there is none; JournalError if it is unreadable
        (recovery cannot tell what to undo, so nothing may act as if there were no journal)."""
        p = cls.path(repo)
        try:
            data = clone_state.read_json(p)
            if data is None and not p.exists():
                return None
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            journal = cls(**data)
            journal._check()
        except (KgitError, ValueError, TypeError) as exc:
            reason = one_line(exc, 120)
            raise JournalError(
                f"the journal of an interrupted release, {p}, is unreadable ({reason}): kgit cannot tell what to undo; "
                f"check `git status` and `git tag` for a half-made release, remove what it left, then delete {p}"
            ) from None
        return journal

    def _check(self) -> None:
        """Types and paths, so a damaged journal is refused rather than acted on."""

        def strs(value: object) -> bool:
            return isinstance(value, list) and all(isinstance(v, str) for v in value)

        if not isinstance(self.tag, str) or not self.tag or not isinstance(self.tag_message, str):
            raise ValueError("no release tag")
        if self.root is not None and not (isinstance(self.root, str) and os.path.isabs(self.root)):
            raise ValueError("bad work tree")
        if not all(v is None or isinstance(v, str) for v in (self.head_before, self.commit)):
            raise ValueError("bad commit")
        if (
            not strs(self.created)
            or not isinstance(self.backups, dict)
            or not isinstance(self.written, dict)
            or not isinstance(self.folders, dict)
            or not strs(self.dvc_writing)
        ):
            raise ValueError("bad file lists")
        if not all(v is None or isinstance(v, str) for v in self.backups.values()):
            raise ValueError("bad backups")
        if not all(strs(v) for v in self.written.values()):
            raise ValueError("bad hashes")
        for manifest in self.folders.values():
            if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
                raise ValueError("bad folder listing")
            for rel in manifest:
                _check_rel(rel)
        for rel in [*self.created, *self.backups, *self.written, *self.folders, *self.dvc_writing]:
            _check_rel(rel)

    def clear(self, repo: Repo) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(repo).unlink()


def _check_rel(rel: object) -> None:
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ValueError(f"bad path {rel!r}")
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or ".." in parts or (parts and parts[0] == ".git"):
        raise ValueError(f"path {rel!r} outside the work tree")


def _commit_of_release(repo: Repo, journal: Journal) -> str | None:
    """The release commit if the interrupted release got as far as committing."""
    if journal.commit:
        return journal.commit
    head = repo.head()
    if not head or head == journal.head_before:
        return None
    message = repo.git("log", "-1", "--format=%B", head)
    parent = repo.git("rev-parse", "-q", "--verify", f"{head}^", check=False)
    if f"{TRAILER}: {journal.tag}" in message and (parent or None) == journal.head_before:
        return head
    return None


def read_backup(path: Path) -> str | None:
    """A file's exact bytes as text the journal can hold (None: absent); rollback writes them back."""
    return path.read_bytes().decode("utf-8", "surrogateescape") if path.exists() else None


def _backup_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def rollback(repo: Repo, journal: Journal, *, own: bool = False) -> list[str]:
    """Remove the files the release created and put back the files it changed, where each still holds
    what the release wrote (journal hashes): a file edited since is left as it is. Returns what was left.

    ``own``: the caller is the interrupted release itself, moments after writing, so every file counts as
    its own (some hashes are recorded only after the step that writes them). Raises JournalError, with
    the journal kept, when a file cannot be removed or restored."""
    root = repo.root
    left: list[str] = []
    errors: list[str] = []

    def ours(rel: str, content: bytes) -> bool:
        return (
            own
            or hashlib.sha256(content).hexdigest() in journal.written.get(rel, [])
            or _written_by_dvc_add(journal, rel, content)
        )

    for rel in journal.created:
        p = root / rel
        try:
            if rel in journal.folders or (p.is_dir() and not p.is_symlink()):
                left += [f"{rel}/{k}" if k != "." else rel for k in _remove_folder(p, journal.folders.get(rel), own)]
            elif p.is_symlink() or p.exists():
                if own or (p.is_file() and not p.is_symlink() and ours(rel, p.read_bytes())):
                    p.unlink()
                else:
                    left.append(rel)
        except OSError as exc:
            errors.append(f"{rel}: {exc.strerror or exc}")
    for rel, before in journal.backups.items():
        p = root / rel
        try:
            if (p.is_symlink() or (p.exists() and not p.is_file())) and not own:
                left.append(rel)  # something else stands there now
                continue
            current = p.read_bytes() if p.is_file() else None
            if before is None:
                if current is None:
                    continue
                if ours(rel, current):
                    p.unlink()
                else:
                    left.append(rel)
            elif current is None:
                if own:
                    write_atomic(p, _backup_bytes(before))
                else:
                    left.append(rel)  # deleted since: not by the release, which never deletes these
            elif current != _backup_bytes(before):
                if ours(rel, current):
                    write_atomic(p, _backup_bytes(before))
                else:
                    left.append(rel)
        except OSError as exc:
            errors.append(f"{rel}: {exc.strerror or exc}")
    for rel in [*journal.created, *journal.backups]:
        _remove_empty_parents(root, root / rel)
    if errors:
        more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
        raise JournalError(
            f"could not undo the interrupted release {journal.tag} ({errors[0]}{more}): fix that and rerun; "
            f"until then {Journal.path(repo)} keeps the record of what to undo"
        )
    paths = [p for p in [*journal.created, *journal.backups] if p]
    if paths and repo.head():
        # Unstage what the release staged (the work tree keeps any later edit); paths absent from HEAD
        # simply leave the index.
        repo.git("reset", "-q", "HEAD", "--", *paths)
    return left


def _written_by_dvc_add(journal: Journal, rel: str, content: bytes) -> bool:
    """Whether ``content`` is what `dvc add` of the release's folders writes into ``rel``, or part
    of it (DVC writes in place: a kill can cut it short): a pointer to one of those folders without
    kgit's metadata, or the folder's entry added to a ``.gitignore``. Anything else is someone's edit."""
    if rel not in journal.dvc_writing:
        return False
    path = PurePosixPath(rel)
    if layout.is_dvc_file(rel):
        if rel[:-4] not in journal.folders:
            return False
        from kgit.core import bounded_yaml

        try:
            data = bounded_yaml.load(content, rel, max_bytes=64 << 10, max_nodes=1_000)
        except bounded_yaml.SyntaxProblem:
            return True  # cut short while DVC wrote it
        except KgitError:
            return False
        if data is None or (isinstance(data, str) and "outs".startswith(data)):
            return True  # nothing yet, or cut short in its first word
        if not isinstance(data, dict) or set(data) - {"outs"}:
            return False  # DVC writes `outs:` alone (kgit adds `meta:` once it has recorded the file)
        outs = data.get("outs")
        if outs is None:
            return True
        if not isinstance(outs, list) or len(outs) > 1 or not all(isinstance(o, dict) for o in outs):
            return False
        found = outs[0].get("path") if outs else None
        return found is None or (isinstance(found, str) and bool(found) and path.name[:-4].startswith(found))
    if path.name != ".gitignore":
        return False
    before = _backup_bytes(journal.backups.get(rel) or "")
    if not content.startswith(before):
        return False
    entries = [f"/{PurePosixPath(f).name}" for f in journal.folders if PurePosixPath(f).parent == path.parent]
    added = content[len(before) :].decode("utf-8", "replace").splitlines()
    return all(not line.strip() or any(e.startswith(line.strip()) for e in entries) for line in added)


def _remove_folder(folder: Path, manifest: dict[str, str] | None, own: bool) -> list[str]:
    """Delete each file of a version folder the release placed that still holds what it placed (every
    file if ``own``), then the folders left empty. Returns the relative paths kept ("." for the folder)."""
    if not folder.exists() and not folder.is_symlink():
        return []
    if folder.is_symlink() or not folder.is_dir():
        if own:
            folder.unlink()
            return []
        return ["."]
    kept = []
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        here = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
            full = here / name
            rel = full.relative_to(folder).as_posix()
            want = (manifest or {}).get(rel)
            if own or (want is not None and full.is_file() and sha256_file(full) == want):
                full.unlink()
            else:
                kept.append(rel)
        try:
            here.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    return sorted(kept)


def _remove_empty_parents(root: Path, path: Path) -> None:
    """The release created artifacts/<name>/<format>/ if they did not exist: remove them if empty."""
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            return
        parent = parent.parent


def recover(repo: Repo, log: object = None, *, own: bool = False) -> str | None:
    """Finish or undo an interrupted release (call with the lock held). Returns what was done.

    ``own``: called by the interrupted release itself (see ``rollback``)."""
    journal = Journal.load(repo)
    outcome = None
    tree: Repo | None = repo
    if journal is not None:
        tree = _work_tree(repo, journal)
        if tree is not None:
            _remove_temporaries(tree.root, journal)
        commit = _commit_of_release(tree, journal) if tree is not None else journal.commit
        if commit:
            if not repo.tag_exists(journal.tag):
                repo.create_tag(journal.tag, commit, journal.tag_message)
            outcome = f"finished the interrupted release {journal.tag} (tagged {commit[:8]})"
        elif tree is None:
            outcome = (
                f"forgot the interrupted release {journal.tag}: the work tree it was made in, "
                f"{journal.root}, is gone, and what it wrote with it"
            )
        else:
            left = rollback(tree, journal, own=own)
            outcome = f"removed the traces of the interrupted release {journal.tag}"
            if left:
                shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
                outcome += (
                    f"; left {shown} as they are, since they changed after that release wrote them: "
                    "check them (git status, git diff)"
                )
        journal.clear(repo)
    shutil.rmtree(staging_dir(repo), ignore_errors=True)
    progress.tell(log, outcome)
    from kgit.store import dvc_locks

    progress.tell(log, dvc_locks.repair((tree or repo).root))  # what a process killed inside DVC left in .dvc/tmp
    return outcome


def _remove_temporaries(root: Path, journal: Journal) -> None:
    """A release killed inside ``write_atomic`` leaves its temporary file beside the file it was writing."""
    for rel in dict.fromkeys([*journal.created, *journal.backups, *journal.written]):
        remove_leftover_temporaries(root / rel)


def _work_tree(repo: Repo, journal: Journal) -> Repo | None:
    """The work tree of this clone the interrupted release wrote into; None if it was one kgit made
    for a training branch and it is gone (with the files the release wrote)."""
    root = Path(journal.root) if journal.root is not None else repo.root
    if root == repo.root:
        return repo
    try:
        tree: Repo | None = Repo(root)
    except KgitError:
        tree = None
    if tree is not None and clone_state.same_clone(tree, repo) and tree.root == root:
        return tree
    # not a work tree of this clone now: kgit's own, removed; or this one, moved since the release began
    return None if clone_state.is_kgit_worktree(root) else repo
