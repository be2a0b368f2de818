"""What this clone has seen: every release and stage tag, recorded the first time kgit reads it.

A release tag is the identity of a release, and git lets anyone with push access move or re-create
one (``git push --force``, then ``git fetch --tags --force`` elsewhere). kgit records each tag's
object id, the commit it points to and the DVC hashes it names in ``.git/kgit/seen.db`` (local,
never committed) the first time this clone reads it. If the same tag name later points to anything
else, every command refuses that version and says what it was and what it is now.

The record is an SQLite database (Python's own sqlite3): resolving one version looks up its few
tags without reading the record of thousands, and concurrent kgit processes add to it safely.
A clone that kept the record as ``seen.json`` (earlier kgit) has it imported on first use.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError
from kgit.store import clone_state
from kgit.store.git_ops import Repo, TagInfo

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tags (name TEXT PRIMARY KEY, object TEXT NOT NULL, commit_id TEXT NOT NULL, md5 TEXT)"
)
_MANY = 64  # more tags than this to check: read the whole record once instead of one lookup each


class SeenRecord:
    """Tag name -> what this clone first saw under it."""

    def __init__(self, repo: Repo) -> None:
        self.path: Path = clone_state.path(repo, clone_state.SEEN_DB)  # not created here
        self._db: sqlite3.Connection | None = None
        self._all: dict[str, tuple[str, str, str | None]] | None = None
        self._new: dict[str, tuple[str, str, str | None]] = {}
        self._legacy = clone_state.path(repo, clone_state.SEEN_LEGACY)
        if self.path.exists() or self._legacy.exists():
            self._db = _open(self.path, self._legacy)

    def preload(self, count: int) -> None:
        """About to check ``count`` tags: with many, read the record whole (one query, not thousands)."""
        if count > _MANY and self._all is None and self._db is not None:
            try:
                self._all = {r[0]: (r[1], r[2], r[3]) for r in self._db.execute("SELECT * FROM tags")}
            except sqlite3.Error:
                self._all = {}

    def _first(self, name: str) -> tuple[str, str, str | None] | None:
        if name in self._new:
            return self._new[name]
        if self._all is not None:
            return self._all.get(name)
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT object, commit_id, md5 FROM tags WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error:
            return None
        return (row[0], row[1], row[2]) if row else None

    def names(self, prefix: str) -> list[str]:
        """Every tag name seen that starts with ``prefix``."""
        found = {n for n in self._new if n.startswith(prefix)}
        if self._db is not None:
            try:
                rows = self._db.execute("SELECT name FROM tags WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))
                found.update(r[0] for r in rows)
            except sqlite3.Error:
                pass
        return sorted(found)

    def check(self, tag: TagInfo, md5s: dict[str, Any] | None = None) -> str | None:
        """None if ``tag`` is what this clone first saw (recording it if new); else what changed."""
        new_md5 = {str(k): v for k, v in (md5s or {}).items() if isinstance(v, str)}
        first = self._first(tag.name)
        if first is None:
            self._new[tag.name] = (tag.object, tag.target, json.dumps(new_md5, sort_keys=True) if new_md5 else None)
            return None
        obj, commit, md5_text = first
        if obj == tag.object:
            return None
        was, now = commit[:8], tag.target[:8]
        old_md5 = _md5s(md5_text)
        hashes = ""
        if old_md5 and old_md5 != new_md5:
            hashes = f"; DVC hashes were {_short(old_md5)}, now {_short(new_md5) or 'none'}"
        return (
            f"tag {tag.name} changed since this clone first saw it (was commit {was}, now {now}{hashes}): "
            "a release tag was moved or re-created; ask who did it, and if the new one is legitimate, "
            f"release it under a new version"
        )

    def forget(self, name: str) -> None:
        """Drop what was seen under ``name``, a tag that no longer exists here and that kgit is about
        to make again (an event tag a push refused, deleted, then made afresh with the same counter)."""
        self._new.pop(name, None)
        if self._all is not None:
            self._all.pop(name, None)
        if self._db is None:
            return
        try:
            with self._db:
                self._db.execute("DELETE FROM tags WHERE name = ?", (name,))
        except sqlite3.Error:
            return

    def save(self) -> None:
        """Record the tags seen for the first time; a name another process recorded meanwhile keeps
        that first record. A read-only git directory just means nothing is remembered."""
        if not self._new:
            return
        try:
            if self._db is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = _open(self.path, self._legacy)
                if self._db is None:
                    return
            with self._db:
                self._db.executemany(
                    "INSERT OR IGNORE INTO tags VALUES (?, ?, ?, ?)", [(n, *v) for n, v in self._new.items()]
                )
        except (OSError, sqlite3.Error):
            return
        if self._all is not None:
            for name, value in self._new.items():
                self._all.setdefault(name, value)
        self._new = {}


def _open(path: Path, legacy: Path) -> sqlite3.Connection | None:
    """The record, created (with the legacy JSON record imported) if new; None if unreadable."""
    try:
        db = sqlite3.connect(path, timeout=30)
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tags'").fetchone():
            with db:
                db.execute(_SCHEMA)
        if legacy.exists():
            with db:
                db.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?, ?, ?)", _legacy_rows(legacy))
        if legacy.exists():
            legacy.unlink()
        return db
    except (OSError, sqlite3.Error):
        return None


def _legacy_rows(path: Path) -> list[tuple[str, str, str, str | None]]:
    try:
        data = clone_state.read_json(path)
    except KgitError:
        return []
    tags = data.get("tags") if isinstance(data, dict) else None
    rows = []
    for name, entry in (tags or {}).items() if isinstance(tags, dict) else ():
        if isinstance(entry, dict) and isinstance(entry.get("object"), str):
            md5 = entry.get("md5") if isinstance(entry.get("md5"), dict) else None
            rows.append(
                (
                    str(name),
                    entry["object"],
                    str(entry.get("commit", "")),
                    json.dumps(md5, sort_keys=True) if md5 else None,
                )
            )
    return rows


def _md5s(text: str | None) -> dict[str, Any]:
    try:
        value = bounded_yaml.load_json(text, "the seen record's hashes") if text else {}
    except KgitError:
        return {}
    return value if isinstance(value, dict) else {}


def _short(md5s: dict[str, Any]) -> str:
    return ", ".join(f"{fmt} {str(h)[:8]}" for fmt, h in sorted(md5s.items()))
