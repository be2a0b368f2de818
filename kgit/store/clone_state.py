"""Per-clone state: the one folder (``.git/kgit/``, shared by every worktree) where each clone keeps
what is its own and never committed, and the repository's write lock kept there."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from kgit.core.errors import BusyError
from kgit.core.fsutil import exclusive
from kgit.store.git_ops import Repo


def state_dir(repo: Repo) -> Path:
    d = repo.common_dir / "kgit"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def repo_lock(repo: Repo, timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Serialise writers in one repository (processes, not threads); BusyError after ``timeout``."""
    if timeout is None:
        timeout = float(os.environ.get("KGIT_LOCK_TIMEOUT", "600"))
    busy = ("another kgit command is writing to this repository (release in progress): "
            "wait for it to finish and retry")
    with exclusive(state_dir(repo) / "lock", busy, timeout=timeout, on_wait=on_wait):
        yield


def writer_active(repo: Repo) -> bool:
    """Whether another kgit command holds the repository's write lock at this moment."""
    try:
        with exclusive(state_dir(repo) / "lock", "busy", timeout=0):
            return False
    except BusyError:
        return True
