"""The documentation site: a page for every command, generated pages as the command line has them
now, every page reachable from the nav, and the README's links and promised commands intact."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer
import yaml

from kgit.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "scripts"))

import make_docs  # noqa: E402  (scripts/ is not a package)

REGENERATE = "run `.venv/bin/python scripts/make_docs.py` and commit what it writes"


def _command_paths(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every visible command and sub-command, read straight from click's tables (not through the
    script's traversal, so a command the script skipped is noticed)."""
    out = []
    for name, cmd in group.commands.items():
        if not cmd.hidden:
            out.append((*path, name))
            if hasattr(cmd, "commands"):
                out += _command_paths(cmd, (*path, name))
    return out


def _nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def _nav() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return _nav_pages(config["nav"])


def _titles(markdown: str) -> list[str]:
    """The page's `# ` headings, outside fenced code blocks."""
    titles, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("# "):
            titles.append(line)
    return titles


def test_every_command_and_sub_command_has_a_page() -> None:
    paths = _command_paths(typer.main.get_command(app))
    assert ("hooks", "install") in paths and ("keys", "trust") in paths and ("release",) in paths
    assert ("hook",) not in paths  # hidden: what the shims call
    for path in paths:
        page = DOCS / "commands" / ("-".join(path) + ".md")
        assert page.is_file(), f"no page for `kgit {' '.join(path)}`: {REGENERATE}"
        assert page.read_text(encoding="utf-8").splitlines()[1] == f"# kgit {' '.join(path)}"
    index = (DOCS / "commands" / "index.md").read_text(encoding="utf-8")
    for path in paths:
        assert f"]({'-'.join(path)}.md)" in index, path


def test_committed_pages_are_what_the_script_writes_now() -> None:
    written = make_docs.render()
    for path, text in written.items():
        rel = path.relative_to(ROOT)
        assert path.is_file(), f"{rel} is missing: {REGENERATE}"
        assert path.read_text(encoding="utf-8") == text, f"{rel} differs from the command line's help: {REGENERATE}"
    assert make_docs.stale(written) == [], f"pages of commands that no longer exist: {REGENERATE}"


def test_a_changed_help_text_makes_the_pages_stale(monkeypatch: Any) -> None:
    """The comparison above can fail: a command whose help changed renders differently."""
    import cli_reference

    real = cli_reference._command

    def changed(cmd: Any, path: tuple[str, ...]) -> Any:
        got = real(cmd, path)
        return (
            got
            if path != ("kgit", "list")
            else type(got)(got.path, got.help + " Changed.", got.params, got.subcommands)
        )

    monkeypatch.setattr(cli_reference, "_command", changed)
    page = DOCS / "commands" / "list.md"
    assert make_docs.render()[page] != page.read_text(encoding="utf-8")


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav()
    pages = sorted(
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if not p.relative_to(DOCS).as_posix().startswith("commands/notes/")
    )
    assert "index.md" in pages and "commands/hooks-install.md" in pages
    missing = [p for p in pages if p not in nav]
    assert not missing, f"add these pages to mkdocs.yml's nav (a guide goes under Guides): {missing}"
    assert not [p for p in nav if not (DOCS / p).is_file()], "mkdocs.yml's nav names a page that does not exist"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    for page in pages:
        assert len(_titles((DOCS / page).read_text(encoding="utf-8"))) == 1, f"{page}: one `# title` per page"


def test_every_command_note_belongs_to_a_command() -> None:
    pages = {p.name for p in (DOCS / "commands").glob("*.md")}
    notes = {p.name for p in (DOCS / "commands" / "notes").glob("*.md")}
    assert notes and notes <= pages, notes - pages


def test_readme_keeps_its_promised_commands_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in (
        "bash scripts/demo.sh        # set up, then run kgit's main job on a built-in example",
        "bash scripts/test.sh        # set up, then run the whole test suite",
    ):
        assert line in readme
    assert (ROOT / "scripts" / "demo.sh").is_file() and (ROOT / "scripts" / "test.sh").is_file()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert "docs/getting-started.md" in local and "docs/commands/index.md" in local
    assert not [link for link in local if not (ROOT / link).is_file()]
    assert len(readme.splitlines()) <= 60, "the README is one screen: move the rest into docs/"
