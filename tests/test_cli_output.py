"""What the command line prints into a pipe: plain aligned text, every value whole on its row's
line however long, no escape codes; JSON for scripts on every command that reports something; and
the notes given with --note shown where the events are (history, show, the report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main

LONG_NAME = "a-model-name-long-enough-to-push-every-table-past-eighty-columns"  # 64 characters
LONG_DATASET = "dataset-" + "-".join(f"shard{i:02d}" for i in range(20))
DEPRECATION = (
    "superseded by v2, which was trained on the corrected labels of the 2026 relabelling campaign; "
    "keep it only to reproduce the numbers of the first paper"
)
DEMOTION = "taken out of production while the drift in the november traffic is investigated by the data team"
RELEASE_NOTE = "first model trained on the full corpus with the tokenizer that keeps accents and the long vocabulary"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions of a model with a 64-character name, long dataset ids and notes; v1 promoted,
    demoted and deprecated with long notes (by kgit itself)."""
    from support import synthetic

    repo = synthetic.repo_at(tmp_path_factory.mktemp("pipes") / "repo")
    synthetic.release(
        repo,
        LONG_NAME,
        "v1",
        ("keras", "h5"),
        claims={"dataset_id": LONG_DATASET + "-a"},
        meta={
            "notes": RELEASE_NOTE,
            "metrics": {"val.accuracy": 0.91},
            "dataset": {"id": LONG_DATASET + "-a", "path": None, "dvc_hash": None},
        },
    )
    synthetic.release(
        repo,
        LONG_NAME,
        "v2",
        claims={"dataset_id": LONG_DATASET + "-b"},
        meta={
            "metrics": {"val.accuracy": 0.93},
            "dataset": {"id": LONG_DATASET + "-b", "path": None, "dvc_hash": None},
        },
    )
    synthetic.promote(repo, LONG_NAME, "v1", "prod", 1)
    for args in (
        ("demote", LONG_NAME, "prod", "--note", DEMOTION),
        ("deprecate", f"{LONG_NAME}@v1", "--note", DEPRECATION),
    ):
        proc = piped(repo, *args)
        assert proc.returncode == 0, proc.stderr
    return repo


def piped(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`kgit ARGS` with stdout and stderr into pipes and an 80-column COLUMNS, the width rich
    assumes for what is not a terminal."""
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "kgit", *args],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )


def one_line_each(text: str, *values: str) -> list[str]:
    """The lines of ``text``, after checking each value is whole on one of them and nothing is styled or cut."""
    assert "\x1b" not in text and "…" not in text, text
    lines = text.splitlines()
    for value in values:
        assert any(value in line for line in lines), f"{value!r} is not whole on one line of:\n{text}"
    return lines


@pytest.mark.parametrize(
    ("args", "values"),
    [
        (("list",), [LONG_NAME, LONG_DATASET + "-a", LONG_DATASET + "-b"]),
        (("list", LONG_NAME, "-m", "val.accuracy", "--sort", "val.accuracy"), [LONG_NAME, LONG_DATASET + "-b", "0.93"]),
        (("history", LONG_NAME), [DEMOTION, DEPRECATION]),
        (("show", f"{LONG_NAME}@v1"), [f"{LONG_NAME} v1 (deprecated)", RELEASE_NOTE, DEPRECATION, LONG_DATASET + "-a"]),
        (("diff", f"{LONG_NAME}@v1", f"{LONG_NAME}@v2"), [LONG_DATASET + "-a", LONG_DATASET + "-b", f"{LONG_NAME}@v1"]),
    ],
)
def test_tables_in_a_pipe_hold_every_value_whole(world: Path, args: tuple[str, ...], values: list[str]) -> None:
    proc = piped(world, *args)
    assert proc.returncode == 0, proc.stderr
    one_line_each(proc.stdout, *values)


def test_history_rows_are_aligned_columns(world: Path) -> None:
    lines = one_line_each(piped(world, "history", LONG_NAME).stdout)
    header = lines[0]
    assert header.split() == ["when", "event", "version", "stage", "who", "commit", "note"]
    deprecated = next(line for line in lines if " deprecated " in line)
    assert deprecated.index(DEPRECATION) == header.index("note")  # the note starts under its heading


def test_validate_in_a_pipe_keeps_the_reason_whole(world: Path) -> None:
    proc = piped(world, "validate", f"{LONG_NAME}@v2")
    assert proc.returncode == 1  # its data is not here
    lines = one_line_each(
        proc.stdout, f"{LONG_NAME}@v2", f"data not present locally (run `kgit get {LONG_NAME}@v2 -f keras`)"
    )
    assert lines[0].split()[:3] == ["version", "format", "check"]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kgit: error: 1 of 1 checks failed")


def test_control_characters_in_a_note_are_shown_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A note is anyone's text: an escape sequence in it reaches no terminal, a line break no table."""
    from support import synthetic

    repo = synthetic.repo_at(tmp_path / "repo")
    synthetic.release(repo, "m", "v1")
    assert (
        run_main(repo, "deprecate", "m@v1", "--note", "old\n\x1b[2Jgone", monkeypatch=monkeypatch, capsys=capsys)[0]
        == 0
    )
    out = run_main(repo, "history", "m", monkeypatch=monkeypatch, capsys=capsys)[1]
    assert "\x1b" not in out and "old \\x1b[2Jgone" in out
    out = run_main(repo, "history", "m", "--json", monkeypatch=monkeypatch, capsys=capsys)[1]
    assert json.loads(out)[-1]["note"] == "old\n\x1b[2Jgone"


def test_json_carries_the_notes(
    world: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> Any:
        code, out, err = run_main(world, *args, "--json", monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err
        return json.loads(out)

    events = run("history", LONG_NAME)
    assert {e["event"]: e["note"] for e in events if e["note"]} == {"demoted": DEMOTION, "deprecated": DEPRECATION}
    shown = run("show", f"{LONG_NAME}@v1")
    assert shown["deprecated"] is True and shown["deprecation_note"] == DEPRECATION
    assert shown["notes"] == RELEASE_NOTE
    assert run("show", f"{LONG_NAME}@v2")["deprecation_note"] is None


def test_the_report_shows_the_deprecation_note(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    assert piped(world, "report", "--out", str(out)).returncode == 0
    version_page = (out / "models" / LONG_NAME / "v1.html").read_text()
    assert 'id="deprecation"' in version_page and DEPRECATION in version_page
    model_page = (out / "models" / f"{LONG_NAME}.html").read_text()
    assert model_page.count(DEPRECATION) == 2  # the versions table and the timeline
    assert 'id="deprecation"' not in (out / "models" / LONG_NAME / "v2.html").read_text()
