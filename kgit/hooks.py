"""Git hook installation. kgit's hooks are shims in ``hooks/``; installing them is idempotent."""

from __future__ import annotations

from kgit.git_ops import Repo


def install(repo: Repo) -> list[str]:
    """Install kgit's git hooks into ``repo``; returns what changed (nothing yet: no hooks ship)."""
    return []
