"""The DVC adapter: init, remotes, tracking folders. The only module that imports DVC.

Reading a ``.dvc`` file needs no DVC import (it is YAML); see ``read_dvc_file``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from kgit.errors import KgitError, one_line
from kgit.fsutil import write_atomic

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REMOTE_NAME = "kgit"


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """DVC prints hints ("To track the changes with git...") meant for its own CLI: capture them."""
    buf = io.StringIO()
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        dvc_logger.setLevel(level)


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Any]:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo as DvcRepo

    try:
        with _quiet():
            repo = DvcRepo(str(root))
    except DvcException as exc:
        raise KgitError(f"cannot open the DVC repository in {root}: {exc}") from None
    try:
        yield repo
    finally:
        repo.close()


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def is_initialised(root: Path) -> bool:
    return (root / ".dvc").is_dir() and (root / ".dvc" / "config").exists()


def init(root: Path) -> bool:
    """``dvc init`` if needed; True if it did something."""
    if is_initialised(root):
        return False
    from dvc.exceptions import DvcException
    from dvc.repo import Repo as DvcRepo

    try:
        with _quiet():
            DvcRepo.init(str(root)).close()
    except DvcException as exc:
        raise KgitError(f"`dvc init` failed in {root}: {exc}") from None
    return True


def default_remote(root: Path) -> tuple[str | None, str | None]:
    """(name, url) of the default DVC remote, read with DVC's own config loader."""
    with open_repo(root) as repo:
        conf = repo.config
        name = conf["core"].get("remote")
        if not name:
            return None, None
        url = conf["remote"].get(name, {}).get("url")
        return name, url


def set_default_remote(root: Path, url: str, name: str = REMOTE_NAME) -> None:
    with open_repo(root) as repo, repo.config.edit("repo") as conf:
        conf["remote"][name] = {**conf["remote"].get(name, {}), "url": url}
        conf["core"]["remote"] = name


def add(root: Path, targets: list[Path]) -> None:
    """``dvc add`` each folder (each becomes its own output with its own ``.dvc`` file)."""
    from dvc.exceptions import DvcException

    rel = [str(t.relative_to(root)) for t in targets]
    try:
        with open_repo(root) as repo, _quiet(), _cwd(root):  # DVC resolves outputs from the cwd
            repo.add(rel)
    except DvcException as exc:
        raise KgitError(f"`dvc add {' '.join(rel)}` failed: {exc}") from None


def pull(root: Path, dvc_files: list[str], remote: str | None = None) -> int:
    """``dvc pull`` exactly these ``.dvc`` files (fetch into the cache, check out into the work tree).

    Returns how many files DVC fetched. DVC shows its own progress bars on a terminal."""
    from dvc.exceptions import DvcException

    try:
        with open_repo(root) as repo, _cwd(root):
            stats = repo.pull(targets=dvc_files, remote=remote)
    except DvcException as exc:
        raise KgitError(f"fetching {', '.join(dvc_files)} from the DVC remote failed: {one_line(exc, 300)}") from None
    return int((stats or {}).get("fetched", 0)) if isinstance(stats, dict) else 0


MAX_DVC_FILE = 16 << 20  # a .dvc file with kgit's metadata is kilobytes; hyperparameters at most 1 MB


def read_dvc_file(text: str, source: str) -> dict[str, Any]:
    """Parse a ``.dvc`` file (plain YAML, no DVC import), refusing oversized or deeply nested ones."""
    from kgit.metadata import too_deep

    restore = f"restore it with `git checkout -- {source}`"
    if len(text) > MAX_DVC_FILE:
        raise KgitError(f"{source} is larger than {MAX_DVC_FILE >> 20} MB, not a DVC file kgit wrote: {restore}")
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):
            raise KgitError(f"{source} is nested too deeply: {restore}") from None
        raise KgitError(f"{source} is not valid YAML ({one_line(exc, 200)}): {restore}") from None
    except RecursionError:
        raise KgitError(f"{source} is nested too deeply: {restore}") from None
    if not isinstance(data, dict) or not isinstance(data.get("outs"), list) or not data["outs"]:
        raise KgitError(f"{source} is not a DVC file (no outs): {restore}")
    if too_deep(data):
        raise KgitError(f"{source} is nested too deeply: {restore}")
    return data


def out_hash(dvc_data: dict[str, Any]) -> dict[str, Any]:
    out = dvc_data["outs"][0]
    return {"md5": out.get("md5"), "size": out.get("size"), "nfiles": out.get("nfiles")}


def write_meta(dvc_file: Path, meta: dict[str, Any], desc: str | None = None) -> None:
    """Put kgit's metadata into the ``meta`` field of a ``.dvc`` file DVC just wrote."""
    data = read_dvc_file(dvc_file.read_text(), str(dvc_file))
    ordered: dict[str, Any] = {}
    if desc:
        ordered["desc"] = desc
    ordered["outs"] = data["outs"]
    ordered["meta"] = {"kgit": meta}
    text = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, width=120)
    write_atomic(dvc_file, text)


def dataset_hash(root: Path, path: str) -> str:
    """DVC hash of a DVC-tracked file or folder (from its .dvc file or dvc.lock), no DVC import."""
    target = (root / path).resolve()
    try:
        rel = target.relative_to(root)
    except ValueError:
        raise KgitError(f"dataset {path} is outside the repository") from None
    dvc_file = target.with_name(target.name + ".dvc")
    if dvc_file.exists():
        data = read_dvc_file(dvc_file.read_text(), str(dvc_file.relative_to(root)))
        h = data["outs"][0].get("md5") or data["outs"][0].get("etag")
        if h:
            return str(h)
    lock = root / "dvc.lock"
    if lock.exists():
        lock_data = yaml.safe_load(lock.read_text()) or {}
        for stage in (lock_data.get("stages") or {}).values():
            for out in stage.get("outs") or []:
                if Path(out.get("path", "")) == rel and out.get("md5"):
                    return str(out["md5"])
    raise KgitError(f"dataset {path} is not tracked by DVC: run `dvc add {path}` first, or pass --dataset-id instead")
