"""What this clone has seen: every release and stage tag, recorded the first time kgit reads it.

A release tag is the identity of a release, and git lets anyone with push access move or re-create
one (``git push --force``, then ``git fetch --tags --force`` elsewhere). kgit records each tag's
object id, the commit it points to and the DVC hashes it names in ``.git/kgit/seen.json`` (local,
never committed) the first time this clone reads it. If the same tag name later points to anything
else, every command refuses that version and says what it was and what it is now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kgit.fsutil import write_json
from kgit.git_ops import Repo, TagInfo

SEEN_FILE = "seen.json"


class SeenRecord:
    """Tag name -> what this clone first saw under it."""

    def __init__(self, repo: Repo) -> None:
        self.path: Path = repo.common_dir / "kgit" / SEEN_FILE  # kgit.txn.state_dir, not created here
        self.changed = False
        self.tags: dict[str, dict[str, Any]] = _load(self.path)

    def check(self, tag: TagInfo, md5s: dict[str, Any] | None = None) -> str | None:
        """None if ``tag`` is what this clone first saw (recording it if new); else what changed."""
        first = self.tags.get(tag.name)
        if not isinstance(first, dict):
            entry: dict[str, Any] = {"object": tag.object, "commit": tag.target}
            if md5s:
                entry["md5"] = {str(k): v for k, v in md5s.items() if isinstance(v, str)}
            self.tags[tag.name] = entry
            self.changed = True
            return None
        if first.get("object") == tag.object:
            return None
        was, now = str(first.get("commit", ""))[:8], tag.target[:8]
        old_md5 = first.get("md5") if isinstance(first.get("md5"), dict) else {}
        new_md5 = {str(k): v for k, v in (md5s or {}).items() if isinstance(v, str)}
        hashes = ""
        if old_md5 and old_md5 != new_md5:
            hashes = f"; DVC hashes were {_short(old_md5)}, now {_short(new_md5) or 'none'}"
        return (f"tag {tag.name} changed since this clone first saw it (was commit {was}, now {now}{hashes}): "
                "a release tag was moved or re-created; ask who did it, and if the new one is legitimate, "
                f"release it under a new version")

    def save(self) -> None:
        """Write the record if it grew; a read-only git directory just means nothing is remembered."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"tags": self.tags})
            _remember(self.path, self.tags)
        except OSError:
            pass
        self.changed = False


# path -> (the file's stat when read, its tags): one command resolves a version several times, and
# at 15,000 tags each parse of the file costs ~35 ms. The entries are only ever added to, by check().
_LOADED: dict[Path, tuple[tuple[int, int, int], dict[str, dict[str, Any]]]] = {}


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _load(path: Path) -> dict[str, dict[str, Any]]:
    stamp = _stat(path)
    if stamp is None:
        return {}
    hit = _LOADED.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    tags = data.get("tags") if isinstance(data, dict) else None
    if not isinstance(tags, dict):
        return {}
    _LOADED[path] = (stamp, tags)
    return tags


def _remember(path: Path, tags: dict[str, dict[str, Any]]) -> None:
    stamp = _stat(path)
    if stamp is not None:
        _LOADED[path] = (stamp, tags)


def _short(md5s: dict[str, Any]) -> str:
    return ", ".join(f"{fmt} {str(h)[:8]}" for fmt, h in sorted(md5s.items()))
