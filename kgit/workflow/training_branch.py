"""A branch of its own for the releases of a training run, made in a second work tree of the clone.

While a model trains, its user keeps working: editing code, switching branches, committing. Releases
committed on their branch would need their work tree clean and would move their HEAD. With a
training branch (``ReleaseCallback(branch="training/run-42")``), each release is made in a git
worktree kept under the clone's state folder (``.git/kgit/worktrees/``) with that branch checked
out, started from the commit the training began at: the user's work tree, index and branch are
never touched. The worktree keeps its data in the clone's own DVC cache (``.dvc/config.local``), so
the releases push and check out from the main work tree like any other; it is removed when the run's
releases are done, and the branch stays, to merge or push like any branch.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from kgit.core.errors import KgitError
from kgit.store import clone_state, dvc_ops
from kgit.store.git_ops import Repo

WORKTREES = "worktrees"
_NO_HOOKS = ("-c", "core.hooksPath=/dev/null")  # the user's post-checkout hook is not for kgit's own worktree


def worktree_path(repo: Repo, branch: str) -> Path:
    return clone_state.path(repo, clone_state.WORKTREES) / re.sub(r"[^A-Za-z0-9._-]", "-", branch)


def check_branch(repo: Repo, branch: str) -> None:
    """Refuse, before training starts, a branch name git refuses or a branch checked out in a work
    tree of the user's (git checks a branch out in one work tree at a time). Git only."""
    code, _, _ = repo.try_git("check-ref-format", "--branch", branch)
    if code != 0 or branch.startswith("-"):
        raise KgitError(
            f"branch {branch!r} is not a valid git branch name: use letters, digits and '/-_.' (e.g. training/run-42)"
        )
    ours = worktree_path(repo, branch)
    for path, checked_out in _worktrees(repo).items():
        if checked_out == branch and path != ours:
            where = "here" if path == repo.root else f"in {path}"
            raise KgitError(
                f"branch {branch} is checked out {where}: releases from training go to a branch no work "
                "tree has checked out; name another branch (or leave branch unset to release to this one)"
            )


def _worktrees(repo: Repo) -> dict[Path, str | None]:
    """Each work tree of the clone and the branch it has checked out (None: a detached HEAD)."""
    found: dict[Path, str | None] = {}
    path: Path | None = None
    for line in repo.git("worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree ")).resolve()
            found[path] = None
        elif line.startswith("branch ") and path is not None:
            found[path] = line.removeprefix("branch refs/heads/")
    return found


def open_worktree(repo: Repo, branch: str, start: str) -> Repo:
    """The work tree where ``branch`` is checked out for a training run's releases: created (and the
    branch, at ``start``, if it does not exist), or the one a run before left. Hold the repository
    lock (kgit.store.clone_state.repo_lock)."""
    check_branch(repo, branch)
    path = worktree_path(repo, branch)
    repo.git("worktree", "prune")  # forget work trees whose folder is gone
    if path.resolve() not in _worktrees(repo):
        if path.exists():  # a folder git no longer knows as a work tree: what a killed run left
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if repo.try_git("rev-parse", "--verify", "-q", f"refs/heads/{branch}")[0] == 0:
            repo.git(*_NO_HOOKS, "worktree", "add", "-q", str(path), branch)
        else:
            repo.git(*_NO_HOOKS, "worktree", "add", "-q", "-b", branch, str(path), start)
    tree = Repo(path)
    dvc_ops.share_cache(tree.root, repo.root)
    return tree


def close_worktree(repo: Repo, tree: Repo) -> str | None:
    """Remove a training run's work tree (its data stays in the cache, its commits on the branch);
    None, or why it was kept (changes no release committed: look before removing it by hand).
    Hold the repository lock."""
    changed = tree.git("status", "--porcelain", "--untracked-files=all")
    if changed:
        first = changed.splitlines()[0][3:]
        return (
            f"kept the training work tree {tree.root}: it holds changes no release committed ({first}); "
            f"look, then `git worktree remove --force {tree.root}`"
        )
    repo.git("worktree", "remove", "--force", str(tree.root))  # --force: DVC's ignored data goes too
    return None
