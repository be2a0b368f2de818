"""Per-clone state: the one folder, ``.git/kgit/`` (in the common git directory, so shared by every
worktree), where each clone keeps what is its own and never committed. Only this module builds
paths there; each store names its file with a constant of this module:

================== ============================== =====================================================
file               kept by                        what it holds
================== ============================== =====================================================
``lock``           ``repo_lock`` (here)           the repository's write lock (one writer at a time)
``journal.json``   kgit.store.txn                 the journal of a release in progress, for recovery
``staging/``       kgit.store.txn                 release folders being built, before they move in
``tagcache.json``  kgit.registry.tagcache         what kgit parsed from each tag object
``seen.db``        kgit.registry.seen             every release and stage tag as first seen
``seen.json``      kgit.registry.seen             the same record as earlier kgit kept it (imported)
``trust.json``     kgit.trust.keyring             the pinned trust root, keys and signing policy
``validated.json`` kgit.workflow.validating       the versions validated on this machine
``published.json`` kgit.guard.client_hooks        the DVC objects known to be on each remote
``collected.json`` kgit.store.collected           the releases ``kgit gc`` collected, as this clone learnt
================== ============================== =====================================================

The JSON files are written atomically (``write_json``: a temporary file, then a rename) and read
back through the bounded reader (``read_json``), so a damaged file is an error its store handles
(most start afresh), never a traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import BusyError, KgitError
from kgit.core.fsutil import exclusive, write_atomic
from kgit.store.git_ops import Repo

STATE = "kgit"  # the folder in the git directory every clone keeps its state in
LOCK = "lock"
JOURNAL = "journal.json"
STAGING = "staging"
TAG_CACHE = "tagcache.json"
SEEN_DB = "seen.db"
SEEN_LEGACY = "seen.json"
TRUST = "trust.json"
VALIDATED = "validated.json"
PUBLISHED = "published.json"
COLLECTED = "collected.json"
TRAINING = "training"  # one folder per training run of kgit.keras.ReleaseCallback
WORKTREES = "worktrees"  # the work trees training releases are made in (kgit.workflow.training_branch)

MAX_JSON_BYTES = 64 << 20  # the tag cache of 15,000 tags is about 8 MB


def state_dir(repo: Repo) -> Path:
    """The clone's state folder, created if missing."""
    d = _folder(repo)
    d.mkdir(parents=True, exist_ok=True)
    return d


def same_clone(a: Repo, b: Repo) -> bool:
    """Whether two work trees belong to one clone (they share its git directory and its state)."""
    return a.common_dir == b.common_dir


def path(repo: Repo, name: str) -> Path:
    """Where the clone keeps ``name`` (one of this module's constants); nothing is created, so a
    read-only git directory can still be read."""
    return _folder(repo) / name


def _folder(repo: Repo) -> Path:
    return repo.common_dir / STATE


def is_kgit_worktree(path: Path) -> bool:
    """Whether ``path`` is (or was) a work tree kgit made in some clone's state folder."""
    return path.parent.name == WORKTREES and path.parent.parent.name == STATE


def read_json(file: Path) -> Any:
    """The JSON document in a state file, through the bounded reader; None if there is no such
    file; a KgitError if it cannot be read, is not JSON or is larger than MAX_JSON_BYTES. Its
    stores check the shape of what they read and never recurse into it, so nesting is not walked
    (the tag cache of thousands of tags is read on every listing)."""
    try:
        raw = bounded_yaml.read_bytes(file, file.name, max_bytes=MAX_JSON_BYTES)
    except KgitError:
        if not file.exists():
            return None
        raise
    return bounded_yaml.load_json(raw, file.name, max_bytes=MAX_JSON_BYTES, max_depth=None)


def write_json(file: Path, data: Any, *, durable: bool = False, indent: int | None = None) -> None:
    """Write ``data`` to a state file atomically, as JSON with sorted keys (its folder is created);
    ``durable``: on disk (fsync) before returning."""
    import json

    file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(file, json.dumps(data, sort_keys=True, indent=indent) + ("\n" if indent else ""), durable=durable)


@contextlib.contextmanager
def repo_lock(repo: Repo, timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Serialise writers in one repository (processes, not threads); BusyError after ``timeout``."""
    if timeout is None:
        timeout = float(os.environ.get("KGIT_LOCK_TIMEOUT", "600"))
    busy = "another kgit command is writing to this repository (release in progress): wait for it to finish and retry"
    with exclusive(state_dir(repo) / LOCK, busy, timeout=timeout, on_wait=on_wait):
        yield


def writer_active(repo: Repo) -> bool:
    """Whether another kgit command holds the repository's write lock at this moment."""
    try:
        with exclusive(state_dir(repo) / LOCK, "busy", timeout=0):
            return False
    except BusyError:
        return True
