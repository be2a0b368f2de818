"""``kgit get``: bring one released version's data into the work tree, and nothing else.

Each format of a version is its own DVC output, so fetching ``NAME@VERSION`` pulls exactly that
version's ``.dvc`` files from the DVC remote. What arrives is checked against the release (metadata
recorded in git, sha256 of every file) before it is reported as fetched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kgit import registry
from kgit.errors import KgitError, ReleaseNotFoundError
from kgit.git_ops import Repo
from kgit.metadata import METADATA_FILE


@dataclass
class Fetched:
    name: str
    version: str
    tag: str
    formats: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> {path, size, fetched}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "tag": self.tag, "formats": self.formats}


def get(name: str, version: str, *, formats: list[str] | None = None, repo: Repo) -> Fetched:
    """Fetch ``name@version`` (all its formats, or ``formats``) from the DVC remote if not present."""
    from kgit import dvc_ops

    rel = registry.resolve(repo, name, version)
    wanted = formats or list(rel.formats)
    for fmt in wanted:
        if fmt not in rel.formats:
            raise ReleaseNotFoundError(f"{rel.name}@{rel.version} has no {fmt} format (it has {', '.join(rel.formats)})")
    result = Fetched(rel.name, rel.version, rel.tag)
    to_pull = []
    for fmt in wanted:
        info = rel.formats[fmt]
        dvc_file = repo.root / f"{info['path']}.dvc"
        if not dvc_file.exists():
            raise KgitError(
                f"{info['path']}.dvc is not in this work tree (the branch does not contain release {rel.tag}): "
                f"check out a branch that does (git checkout {rel.tag}), or use `dvc artifacts get REPO {rel.name} --rev {rel.tag.split('@')[1]}`"
            )
        present = (repo.root / info["path"] / METADATA_FILE).exists()
        result.formats[fmt] = {"path": info["path"], "size": info.get("size"), "fetched": not present}
        if not present:
            to_pull.append(f"{info['path']}.dvc")
    if to_pull:
        dvc_ops.pull(repo.root, to_pull)
    from kgit.checking import verified_metadata

    for fmt in wanted:
        verified_metadata(repo, rel, fmt)
    return result
