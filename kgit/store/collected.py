"""What this clone knows of releases whose data ``kgit gc`` collected from the DVC remote.

The record every clone trusts is the one gc leaves in the remote (kgit.store.storage.write_collected);
reading it takes DVC and the network. So that listing releases stays a git-only read, each clone
also keeps what it learnt in ``.git/kgit/collected.json``, ``{tag: {"collected_at", "by", "policy",
"tops"}}``: the clone that ran gc writes it then, any other when ``kgit get``, ``kgit validate`` or
``kgit check`` read the remote's record. It only ever adds a "collected" mark to a release that is
valid in git; it is never a reason to trust or use data. A damaged file is read as empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kgit.core.errors import KgitError
from kgit.store import clone_state
from kgit.store.git_ops import Repo

_FIELDS = ("collected_at", "by", "policy")
_MAX_TEXT = 300


def known(repo: Repo) -> dict[str, dict[str, Any]]:
    """{tag: record} of the releases this clone knows were collected."""
    try:
        data = clone_state.read_json(clone_state.path(repo, clone_state.COLLECTED))
    except KgitError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(tag): _clean(rec) for tag, rec in data.items() if isinstance(rec, dict)}


def remember(repo: Repo, records: Iterable[Mapping[str, Any]]) -> None:
    """Add gc's records (each with its ``tag``) to what this clone knows; a clone whose state
    cannot be written (a read-only checkout) just does not remember."""
    new = {str(r["tag"]): _clean(r) for r in records if isinstance(r.get("tag"), str)}
    if not new:
        return
    have = known(repo)
    if all(have.get(tag) == rec for tag, rec in new.items()):
        return
    try:
        clone_state.write_json(clone_state.path(repo, clone_state.COLLECTED), {**have, **new})
    except OSError:
        pass


def _clean(rec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: str(rec.get(k))[:_MAX_TEXT] for k in _FIELDS if rec.get(k) is not None}
    tops = rec.get("tops")
    if isinstance(tops, list):
        out["tops"] = [str(t)[:80] for t in tops[:50]]
    return out


def describe(rec: Mapping[str, Any]) -> str:
    """One line: when, by whom and under which policy."""
    return (
        f"collected by kgit gc on {str(rec.get('collected_at', '?'))[:20]}"
        f" (by {str(rec.get('by', 'unknown'))[:60]}; policy: {str(rec.get('policy', '?'))[:200]})"
    )
