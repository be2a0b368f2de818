"""Rendering the pages (Jinja2, autoescaped) and writing the site folder atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError

MARKER = ".kgit-report"  # in the site's root: the folder is kgit's to replace
TEMPLATES = Path(__file__).parent / "templates"


def environment() -> Any:
    """Templates from the package; every value is HTML-escaped unless marked safe (plotly's charts):
    tag messages, notes and hyperparameters are anyone's text."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    return env


def _is_site(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def check_out(out: Path) -> Path:
    """``out`` may be new, an empty folder, or a site kgit wrote before: nothing else is replaced."""
    out = out.absolute()
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise KgitError(f"--out {out} exists and is not a folder: give a new folder for the report")
    if out.is_dir() and any(out.iterdir()) and not _is_site(out):
        raise KgitError(
            f"--out {out} is a folder kgit did not write (no {MARKER} in it): "
            "give a new or empty folder, or remove that one"
        )
    if not out.parent.is_dir():
        raise KgitError(f"--out {out}: its parent folder {out.parent} does not exist")
    return out


def write(out: Path, files: dict[str, str | bytes]) -> None:
    """The site is built in a temp folder beside ``out``, then swapped in: a reader (or a failure
    half-way) sees the old site or the new one, never a mix."""
    out = check_out(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        made: set[Path] = set()
        for rel, content in files.items():
            path = tmp / rel
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        (tmp / MARKER).write_text("written by `kgit report`; the whole folder is replaced by the next one\n")
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the site from a web server's user
        if out.exists():
            old = out.with_name(tmp.name[:-4] + ".old")
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old, out)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
