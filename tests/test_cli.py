"""The command line as a user meets it: help everywhere, clean errors, exit codes."""

from __future__ import annotations

import io
from collections.abc import MutableMapping
from pathlib import Path

import pytest
import typer
from conftest import kgit, snapshot

from kgit.cli import app


def _commands() -> tuple[typer.core.TyperGroup, MutableMapping[str, typer.core._click.Command]]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group, group.commands


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


# -- refusals in process (fast tier): kgit's own entry point, a real repository, no subprocess ----
def run_main(cwd: Path, *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from kgit.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # as from a pipe with nothing in it
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("args", "expect"), [
    (("show", "nope@v1"), "no releases of model 'nope'"),
    (("show", "m@v9"), "v9"),
    (("show", "m@1.x"), "invalid version"),
    (("get", "Bad Name@v1"), "invalid model name"),
    (("promote", "m@v1", "Prod!"), "invalid stage name"),
    (("deprecate", "m#prod"), "name the version to deprecate explicitly"),
    (("keys", "accept"), "give a key fingerprint to accept"),
    (("keys", "policy", "sometimes"), "unknown signing policy"),
    (("hook", "post-merge"), "unknown hook 'post-merge'"),
    (("diff", "m@v1", "other@v1"), "other"),
])
def test_refusals_are_one_line_and_change_nothing(tmp_path: Path, args: tuple[str, ...], expect: str,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from support import synthetic

    repo = synthetic.repo_at(tmp_path / "repo")
    synthetic.release(repo, "m", "v1")
    before = snapshot(repo)
    code, out, err = run_main(repo, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("kgit: error: ") and "Traceback" not in err, err
    assert expect.lower() in err.lower(), err
    assert snapshot(repo) == before


def test_list_and_show_read_a_synthetic_release_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from support import synthetic

    repo = synthetic.repo_at(tmp_path / "repo")
    synthetic.release(repo, "m", "v1", ("keras", "h5"))
    synthetic.release(repo, "m", "v2", claims={"version": "v7"})
    code, out, err = run_main(repo, "list", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert [r[:2] for r in rows] == [["m", "v1"], ["m", "v2.0.0"]] and rows[0][3] == "keras,h5"
    assert "invalid: its message says v7, its name says v2.0.0" in out
    assert "1 tag(s) are not valid releases" in err
