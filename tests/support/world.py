"""A small world for attack tests: a bare `origin`, a DVC remote folder, and a teammate's clone
with released and pushed versions. Built once per module (it costs a real release), then copied
per test so each attack starts from the same state and cannot leak into another test.

A copy is the same state at another path: its remotes point at its own origin and DVC remote, and
what the clone remembers having validated is carried over (``carry_validation``), as valid as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ZERO = "0" * 40


def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout.strip()


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )


def kgit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m kgit ARGS` in ``cwd`` (forked from a preloaded one: support.forked_cli)."""
    from support.forked_cli import run_kgit

    return run_kgit(cwd, list(args))


def remote_objects(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) if store.exists() else []


def has_version_data(store: Path, md5: str) -> bool:
    """Every object of a version (its .dir listing and each file) is in the DVC remote folder."""
    listing = store / "files" / "md5" / md5[:2] / md5[2:]
    if not listing.exists():
        return False
    return all(
        (store / "files" / "md5" / e["md5"][:2] / e["md5"][2:]).exists() for e in json.loads(listing.read_text())
    )


def dvc_md5(repo: Path, dvc_file: str) -> str:
    return str(yaml.safe_load((repo / dvc_file).read_text())["outs"][0]["md5"])


@dataclass
class World:
    base: Path
    origin: Path  # bare repository
    store: Path  # DVC remote folder
    repo: Path  # the teammate's clone, kgit-initialised, hooks installed

    @classmethod
    def create(cls, base: Path) -> World:
        from conftest import bare_origin

        origin, store, repo = bare_origin(base), base / "store", base / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "--initial-branch=main")
        (repo / "train.py").write_text("print('train')\n")
        git(repo, "add", "train.py")
        git(repo, "commit", "-q", "-m", "training code")
        git(repo, "remote", "add", "origin", str(origin))
        import kgit as api

        api.init(repo, remote=str(store))
        return cls(base, origin, store, repo)

    def copy(self, dest: Path) -> World:
        """An independent copy: its own origin, DVC remote, clone (remote paths rewired locally)."""
        shutil.copytree(self.base, dest, symlinks=True)
        w = World(dest, dest / "origin.git", dest / "store", dest / "repo")
        git(w.repo, "remote", "set-url", "origin", str(w.origin))
        w.point_dvc_remote(w.repo)
        carry_validation(self.repo, w.repo)
        if git(w.origin, "config", "--get", "kgit.dvcRemote", check=False):  # a server hook's remote
            git(w.origin, "config", "kgit.dvcRemote", str(w.store))
        return w

    def point_dvc_remote(self, clone: Path) -> None:
        """This world's DVC remote for ``clone``, in the untracked .dvc/config.local (as credentials go)."""
        point_dvc_remote(clone, self.store)

    def clone(self, name: str) -> Path:
        """Another teammate's fresh clone with kgit's hooks."""
        path = self.base / name
        git(self.base, "clone", "-q", str(self.origin), str(path))
        self.point_dvc_remote(path)
        kgit(path, "hooks", "install")
        return path

    def origin_tags(self) -> dict[str, str]:
        out = git(self.origin, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/tags")
        return dict(line.split() for line in out.splitlines())

    def push(self, *args: str, repo: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run(repo or self.repo, "git", "push", "origin", *args)


def point_dvc_remote(clone: Path, store: Path) -> None:
    """``clone``'s DVC remote ``kgit`` at ``store``, in the untracked .dvc/config.local: the file
    `dvc remote modify --local kgit url STORE` writes, without a DVC process (that file held nothing
    else; otherwise DVC itself edits it)."""
    local = clone / ".dvc" / "config.local"
    if local.exists() and local.read_text().strip():
        run(clone, sys.executable, "-m", "dvc", "remote", "modify", "--local", "kgit", "url", str(store))
    else:
        local.write_text(f"['remote \"kgit\"']\n    url = {store}\n")


def carry_validation(original: Path, copy: Path) -> None:
    """What ``original`` remembers having validated (kgit.workflow.validating.Record: each file's
    inode and ctime, which copying changes), made true of ``copy``: each version still current in
    the original is current in the copy (its bytes are the same), nothing else. Without it, the
    copy's next push or `kgit validate` would start TensorFlow to check again what was checked."""
    from kgit.registry import catalog
    from kgit.store.git_ops import Repo
    from kgit.workflow.validating import Record

    before = Record(Repo(original))
    if not before.data:
        return
    after = Record(Repo(copy))
    for rel in catalog.read(Repo(copy), remember=False).releases:
        for fmt, info in rel.formats.items():
            entry = before.entry(rel.tag, fmt)
            if entry and before.is_current(rel.tag, fmt, entry.get("md5"), original / info["path"]):
                after.mark(rel.tag, fmt, entry.get("md5"), copy / info["path"], entry.get("max_abs_diff"))
    after.save()


def tag_message(repo: Path, tag: str) -> str:
    return git(repo, "for-each-ref", "--format=%(contents)", f"refs/tags/{tag}")


def forge_tag(repo: Path, tag: str, target: str, message: str) -> None:
    """An annotated tag made by hand, as anyone with plain git can."""
    msg = repo / ".git" / "forged-message"
    msg.write_text(message)
    git(repo, "tag", "-a", "-f", tag, target, "-F", str(msg))
    msg.unlink()
