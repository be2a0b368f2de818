"""What every crash and refusal must leave behind: a consistent repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml
from conftest import git

RELEASE = ["release", "safe", "--from", "support.zoo:plain_model", "-f", "keras", "-f", "h5"]


def release_again(repo: Path) -> str:
    """The release RELEASE asks for, made by kgit's API in this process (which has TensorFlow already,
    where a `kgit` process would import it again): the next command after an interruption. Returns
    what it said, one line each, as `kgit release` shows it on stderr."""
    import kgit as api

    said: list[str] = []
    api.release("support.zoo:plain_model", "safe", formats=["keras", "h5"], repo=repo, progress=said.append)
    return "\n".join(said)


def assert_consistent(repo: Path) -> None:
    """No tag without its commit, no committed .dvc whose data is missing from the cache,
    no leftover journal or staging, and every kgit file still parses."""
    for tag in git(repo, "tag", "-l").split():
        git(repo, "rev-parse", "--verify", f"{tag}^{{commit}}")
    tracked = [p for p in git(repo, "ls-files", "*.dvc").split() if p.startswith("artifacts/")]
    for rel in tracked:
        out = yaml.safe_load((repo / rel).read_text())["outs"][0]
        md5 = out["md5"]
        assert (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists(), rel
    yaml.safe_load((repo / "dvc.yaml").read_text())
    git(repo, "fsck", "--no-progress")


def run_with_failpoint(repo: Path, point: str) -> subprocess.CompletedProcess[str]:
    from support.forked_cli import run_kgit

    return run_kgit(repo, RELEASE, {**os.environ, "KGIT_FAILPOINT": point})


def without_cache(snap: dict[str, object]) -> dict[str, object]:
    # DVC cache objects written before an interruption are unreferenced, harmless, and `dvc gc` food;
    # DVC's own scratch files (.dvc/tmp) come and go.
    def keep(entry: str) -> bool:
        return ".dvc/cache" not in entry and ".dvc/tmp" not in entry

    out = {k: v for k, v in snap.items() if k != "cache"}
    out["status"] = "\n".join(line for line in str(snap["status"]).splitlines() if keep(line))
    out["files"] = [f for f in snap["files"] if keep(f)]  # type: ignore[attr-defined]
    return out
