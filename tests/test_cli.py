"""The command line as a user meets it: help everywhere, clean errors, exit codes."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import kgit, run_main, snapshot

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
@pytest.mark.parametrize(
    ("args", "expect"),
    [
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
    ],
)
def test_refusals_are_one_line_and_change_nothing(
    tmp_path: Path,
    args: tuple[str, ...],
    expect: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from support import synthetic

    repo = synthetic.repo_at(tmp_path / "repo")
    synthetic.release(repo, "m", "v1")
    before = snapshot(repo)
    code, out, err = run_main(repo, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("kgit: error: ") and "Traceback" not in err, err
    assert expect.lower() in err.lower(), err
    assert snapshot(repo) == before


def test_list_and_show_read_a_synthetic_release_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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


# -- one name per concept; JSON wherever a script reads a result ---------------------------------
def _leaf_commands() -> dict[str, object]:
    """Every command as `kgit ...` names it, sub-commands (keys list, hooks install...) included."""
    found: dict[str, object] = {}
    pending: list[tuple[str, Any]] = [("", _commands()[0])]
    while pending:
        prefix, group = pending.pop()
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                pending.append((f"{prefix}{name} ", cmd))
            elif not cmd.hidden:
                found[f"{prefix}{name}"] = cmd
    return found


def _options(cmd: object, hidden: bool) -> set[str]:
    return {
        opt
        for p in cmd.params  # type: ignore[attr-defined]
        if getattr(p, "param_type_name", "") == "option" and bool(getattr(p, "hidden", False)) == hidden
        for opt in p.opts
    }


# the former spellings, hidden and still accepted
FORMER = {
    "--notes": "--note",
    "--custom-objects": "--custom-object",
    "--dvc-remote": "--remote",
    "--dvc-remote-option": "--remote-option",
}


def test_every_command_that_reports_has_json() -> None:
    commands = _leaf_commands()
    assert {"list", "show", "history", "diff", "keys list", "keys policy", "validate", "check", "hooks install"} <= set(
        commands
    )
    without = sorted(name for name, cmd in commands.items() if "--json" not in _options(cmd, hidden=False))
    assert without == ["demo"]  # a guided walk-through, for people


def test_one_option_name_per_concept() -> None:
    visible = {name: _options(cmd, hidden=False) for name, cmd in _leaf_commands().items()}
    hidden = {name: _options(cmd, hidden=True) for name, cmd in _leaf_commands().items()}
    for old, new in FORMER.items():
        having = [name for name, opts in hidden.items() if old in opts]
        assert having, old
        assert all(new in visible[name] for name in having), (old, having)
        assert not any(old in opts for opts in visible.values()), old
    # the same concept, the same name and short form everywhere
    assert all("-f" in opts for name, opts in visible.items() if "--format" in opts)
    assert all("-o" in opts for name, opts in visible.items() if "--out" in opts)
    assert all("-r" in opts for name, opts in visible.items() if "--remote" in opts)
    assert {name for name, opts in visible.items() if "--note" in opts} == {
        "release",
        "promote",
        "rollback",
        "demote",
        "deprecate",
    }
    help_text = kgit(Path("."), "release", "--help").stdout
    assert "--note" in help_text and "--notes" not in help_text and "--custom-objects" not in help_text


def test_former_spellings_are_still_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import git

    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    code, out, err = run_main(
        tmp_path,
        "server",
        "install",
        str(bare),
        "--dvc-remote",
        str(tmp_path / "store"),
        "--json",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err
    assert any(str(tmp_path / "store") in change for change in json.loads(out)["changes"])
    assert git(bare, "config", "--get", "kgit.dvcRemote") == str(tmp_path / "store")
    code, _, err = run_main(
        tmp_path,
        "release",
        "m",
        "--from",
        "x.keras",
        "--note",
        "a",
        "--notes",
        "b",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 1 and err == "kgit: error: --notes is the former spelling of --note: give --note once\n"


# -- the Python API declares itself ----------------------------------------------------------------
def test_dir_and_help_show_the_public_api() -> None:
    import pydoc

    import kgit

    names = dir(kgit)
    assert set(kgit.__all__) <= set(names) and names == sorted(names)
    assert {"release", "load", "list_releases", "promote", "KgitError"} <= set(names)
    text = pydoc.render_doc(kgit, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    for name in ("release(", "load(", "list_releases(", "validate(", "class KgitError", "class ReleaseRecord"):
        assert name in text, name
    assert "make releases" in text
