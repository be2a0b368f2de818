"""What kgit parsed from each tag object, so thousands of release tags are parsed once per clone.

A tag object's id is the hash of its whole content (target, tagger, date, message): a tag that is
moved or re-created has a new id, so an entry can never describe anything but the object it is
filed under. Entries also record the tag name they were read under (a tag object put behind
another ref name is parsed again) and the file is dropped whole when kgit's version changes (its
checks may have changed). ``.git/kgit/tagcache.json`` is local and never committed; a missing,
corrupt or unwritable file only means the tags are parsed again. The checks against what this
clone saw before (kgit.registry.seen) run on every read, cached or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError
from kgit.store import clone_state
from kgit.store.git_ops import Repo

SCHEMA = 1


def _stamp() -> str:
    from kgit.core.version import VERSION as __version__

    return f"{SCHEMA}/{__version__}"


class TagCache:
    """Tag object id -> [tag name, target, tagger, date, the parsed release or None] (lists, not
    objects: the file of 15,000 tags is read on every listing); and ``COMMIT:PATH`` -> the blob id
    there (a released ``.dvc`` file's blob: found by git in a tree of thousands of entries, once)."""

    def __init__(self, repo: Repo) -> None:
        self.path: Path = clone_state.path(repo, clone_state.TAG_CACHE)
        self.changed = False
        self.used: set[str] = set()
        self.entries: dict[str, Any] = {}
        self.blobs: dict[str, str] = {}
        try:
            data = clone_state.read_json(self.path)
        except KgitError:
            return
        if isinstance(data, dict) and data.get("stamp") == _stamp() and isinstance(data.get("tags"), dict):
            self.entries = data["tags"]
            blobs = data.get("blobs")
            self.blobs = blobs if isinstance(blobs, dict) else {}

    def blob(self, spec: str) -> str | None:
        """The blob id recorded for ``COMMIT:PATH`` (both fixed: a commit id names one tree forever)."""
        found = self.blobs.get(spec)
        return found if type(found) is str else None

    def put_blob(self, spec: str, oid: str) -> None:
        self.blobs[spec] = oid
        self.changed = True

    def get(self, name: str, oid: str) -> list[Any] | None:
        """The entry of tag object ``oid`` read under ``name``: [name, target, tagger, date, the
        parsed release or None]; None if there is none or it is malformed."""
        entry = self.entries.get(oid)
        if (
            type(entry) is not list
            or len(entry) != 5
            or entry[0] != name
            or type(entry[1]) is not str
            or type(entry[2]) is not str
            or type(entry[3]) is not str
        ):
            return None
        self.used.add(oid)
        return entry

    def put(self, oid: str, entry: list[Any]) -> None:
        self.entries[oid] = entry
        self.used.add(oid)
        self.changed = True

    def save(self, *, prune: bool = False) -> None:
        """Write the file if it changed; with ``prune`` (every tag was read), keep only the entries
        of tags that exist now. A read-only git directory just means nothing is kept."""
        if prune and len(self.used) != len(self.entries):
            self.entries = {oid: e for oid, e in self.entries.items() if oid in self.used}
            self.changed = True
        if not self.changed:
            return
        try:
            clone_state.write_json(self.path, {"stamp": _stamp(), "tags": self.entries, "blobs": self.blobs})
        except OSError:
            pass
        self.changed = False
