"""Making a release all-or-nothing: a repository lock, a journal, and recovery.

A release writes files, runs `dvc add`, commits, then tags. Before touching the work tree it
writes a journal (in the git directory) listing everything it is about to create or change.
If the process dies (error, Ctrl-C, kill -9), the next kgit command that writes finds the journal
and either finishes the release (the commit exists: only the tag is missing, and the data went
into the DVC cache before the commit) or removes every trace of it (no commit yet).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kgit.errors import BusyError
from kgit.git_ops import Repo

TRAILER = "Kgit-Release"
FAILPOINT_ENV = "KGIT_FAILPOINT"


def failpoint(name: str) -> None:
    """Crash-test hook: ``KGIT_FAILPOINT=<name>`` kills the process with SIGKILL at that point;
    ``<name>:INT`` / ``<name>:TERM`` send SIGINT (Ctrl-C) / SIGTERM instead."""
    point, _, sig = os.environ.get(FAILPOINT_ENV, "").partition(":")
    if point == name:
        os.kill(os.getpid(), {"INT": signal.SIGINT, "TERM": signal.SIGTERM}.get(sig, signal.SIGKILL))


def state_dir(repo: Repo) -> Path:
    d = repo.common_dir / "kgit"
    d.mkdir(parents=True, exist_ok=True)
    return d


def staging_dir(repo: Repo) -> Path:
    return state_dir(repo) / "staging"


@contextlib.contextmanager
def repo_lock(repo: Repo, timeout: float | None = None, on_wait: object = None) -> Iterator[None]:
    """Serialise writers in one repository (processes, not threads); BusyError after ``timeout``."""
    if timeout is None:
        timeout = float(os.environ.get("KGIT_LOCK_TIMEOUT", "600"))
    path = state_dir(repo) / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(
                        "another kgit command is writing to this repository (release in progress): "
                        "wait for it to finish and retry"
                    ) from None
                if not waited and callable(on_wait):
                    on_wait()
                waited = True
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass
class Journal:
    tag: str
    head_before: str | None
    tag_message: str
    created: list[str] = field(default_factory=list)  # repo-relative paths kgit creates
    backups: dict[str, str | None] = field(default_factory=dict)  # path -> content before (None: absent)
    commit: str | None = None

    @staticmethod
    def path(repo: Repo) -> Path:
        return state_dir(repo) / "journal.json"

    def save(self, repo: Repo) -> None:
        p = self.path(repo)
        tmp = p.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)

    @classmethod
    def load(cls, repo: Repo) -> Journal | None:
        p = cls.path(repo)
        if not p.exists():
            return None
        try:
            return cls(**json.loads(p.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None

    def clear(self, repo: Repo) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(repo).unlink()


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


def rollback(repo: Repo, journal: Journal) -> None:
    """Remove every file the release created and put back every file it changed."""
    root = repo.root
    for rel in journal.created:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    for rel, content in journal.backups.items():
        p = root / rel
        if content is None:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        else:
            p.write_text(content)
    for rel in [*journal.created, *journal.backups]:
        _remove_empty_parents(root, root / rel)
    paths = [p for p in [*journal.created, *journal.backups] if p]
    if paths and repo.head():
        # Unstage what the release staged; paths absent from HEAD simply leave the index.
        repo.git("reset", "-q", "HEAD", "--", *paths, check=False)


def _remove_empty_parents(root: Path, path: Path) -> None:
    """The release created artifacts/<name>/<format>/ if they did not exist: remove them if empty."""
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            return
        parent = parent.parent


def recover(repo: Repo, log: object = None) -> str | None:
    """Finish or undo an interrupted release (call with the lock held). Returns what was done."""
    journal = Journal.load(repo)
    outcome = None
    if journal is not None:
        commit = _commit_of_release(repo, journal)
        if commit:
            if not repo.tag_exists(journal.tag):
                repo.create_tag(journal.tag, commit, journal.tag_message)
            outcome = f"finished the interrupted release {journal.tag} (tagged {commit[:8]})"
        else:
            rollback(repo, journal)
            outcome = f"removed the traces of the interrupted release {journal.tag}"
        journal.clear(repo)
    shutil.rmtree(staging_dir(repo), ignore_errors=True)
    if outcome and callable(log):
        log(outcome)
    elif outcome:
        print(f"kgit: {outcome}", file=sys.stderr)
    return outcome
