"""The command line as a user meets it: help everywhere, clean errors, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from conftest import kgit

from kgit.cli import app


def _commands():  # type: ignore[no-untyped-def]
    group = typer.main.get_command(app)
    return group, group.commands  # type: ignore[attr-defined]


def test_every_command_and_option_has_help_text() -> None:
    group, commands = _commands()
    assert {"init", "release", "list", "show", "validate", "demo"} <= set(commands)
    for name, cmd in commands.items():
        assert cmd.help and cmd.help.strip(), name
        for param in cmd.params:
            if param.name == "help":
                continue
            assert getattr(param, "help", None), f"{name} {param.name} has no help"
    for param in group.params:
        assert param.name == "help" or getattr(param, "help", None), param.name


@pytest.mark.parametrize("command", [[], ["init"], ["release"], ["list"], ["show"], ["validate"], ["demo"]])
def test_help_works_everywhere(tmp_path: Path, command: list[str]) -> None:
    proc = kgit(tmp_path, *command, "--help")
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_version_flag(tmp_path: Path) -> None:
    import kgit as api

    proc = kgit(tmp_path, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"kgit {api.__version__}"


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    proc = kgit(tmp_path, "release", "--no-such-option")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "No such option" in proc.stderr


def test_list_outside_a_repo_is_one_clean_line(tmp_path: Path) -> None:
    proc = kgit(tmp_path, "list")
    assert proc.returncode == 1
    assert proc.stderr.startswith("kgit: error:") and proc.stderr.count("\n") == 1


def test_list_with_no_releases(kgit_repo: Path) -> None:
    proc = kgit(kgit_repo, "list")
    assert proc.returncode == 0 and "no releases yet" in proc.stderr
    assert kgit(kgit_repo, "list", "--json").stdout.strip() == "[]"
