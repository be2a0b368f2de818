"""`kgit history NAME#STAGE --at WHEN`: which version held a stage at a moment, who put it there,
when and with which note, from the stage tags and their tagger dates alone (kgit.registry.stage_history).

Fast tier: releases made by hand as `kgit release` leaves them in git (tests/support/synthetic),
stage tags made with plain git at chosen dates by chosen people, the real `kgit` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import assert_refused, kgit
from support import synthetic

import kgit as api
from kgit.core.errors import KgitError
from kgit.registry import stage_history


def event_tag(
    repo: Path,
    tag: str,
    version: str,
    when: str,
    who: str,
    *,
    note: str | None = None,
    event: str = "promote",
    stage: str = "prod",
) -> None:
    """An event tag as kgit writes it (title, note, kgit-event line), made by ``who`` at ``when``."""
    body = {"event": event, "name": "m", "version": version, "stage": stage}
    message = f"kgit {event} m {version}\n\n" + (f"{note}\n\n" if note else "") + f"kgit-event: {json.dumps(body)}\n"
    env = {
        **os.environ,
        "GIT_COMMITTER_DATE": when,
        "GIT_COMMITTER_NAME": who,
        "GIT_COMMITTER_EMAIL": f"{who.lower()}@example.com",
    }
    subprocess.run(
        ["git", "tag", "-a", tag, "-m", message, f"m@{version}.0.0^{{commit}}"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """m@v1..v3; prod: v1 (Ana, Nov 1), v2 (Bob, Nov 3, with a note), rolled back to v1 (Ana, Nov 5),
    demoted (Cy, Nov 7), v3 (Bob, Nov 9); staging: v3 (Cy, Nov 8). All times +01:00."""
    repo = synthetic.repo_at(tmp_path / "repo")
    for v in ("v1", "v2", "v3"):
        synthetic.release(repo, "m", v)
    event_tag(repo, "m#prod#1", "v1", "2026-11-01T10:00:00+01:00", "Ana")
    event_tag(repo, "m#prod#2", "v2", "2026-11-03T10:00:00+01:00", "Bob", note="better on the holdout set")
    event_tag(repo, "m#prod#3", "v1", "2026-11-05T10:00:00+01:00", "Ana", note="v2 misbehaves", event="rollback")
    event_tag(repo, "m#prod!#4", "v1", "2026-11-07T10:00:00+01:00", "Cy", note="incident 42", event="demote")
    event_tag(repo, "m#staging#5", "v3", "2026-11-08T10:00:00+01:00", "Cy", stage="staging")
    event_tag(repo, "m#prod#6", "v3", "2026-11-09T10:00:00+01:00", "Bob")
    return repo


def out(repo: Path, *args: str) -> str:
    proc = kgit(repo, "history", *args)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout.strip()


def test_the_holder_at_a_moment_with_who_when_and_the_note(repo: Path) -> None:
    assert out(repo, "m#prod", "--at", "2026-11-04T09:00:00+01:00") == (
        "prod: m@v2 at 2026-11-04 09:00:00 +01:00, promoted 2026-11-03 10:00:00 +01:00 by Bob (tag m#prod#2); "
        "note: better on the holdout set"
    )
    # the same moment in another zone; a moment exactly at a tag's date already sees it
    assert out(repo, "m#prod", "--at", "2026-11-05T09:00:00Z").startswith(
        "prod: m@v1 at 2026-11-05 09:00:00 +00:00, rolled back to 2026-11-05 10:00:00 +01:00 by Ana (tag m#prod#3); "
        "note: v2 misbehaves"
    )
    assert out(repo, "m#prod", "--at", "2026-11-07T10:00:00+01:00") == (
        "prod: no version at 2026-11-07 10:00:00 +01:00: demoted 2026-11-07 10:00:00 +01:00 by Cy (tag m#prod!#4); "
        "note: incident 42"
    )
    assert out(repo, "m#prod", "--at", "2026-10-31T12:00:00+01:00") == (
        "prod: no version at 2026-10-31 12:00:00 +01:00: the first promotion to prod was m@v1 at "
        "2026-11-01 10:00:00 +01:00 by Ana"
    )
    assert out(repo, "m#dev", "--at", "2026-11-10T00:00:00+01:00") == "dev: no version of m has ever been in dev"
    # every stage of the model at once
    assert out(repo, "m", "--at", "2026-11-08T12:00:00+01:00").splitlines() == [
        "prod: no version at 2026-11-08 12:00:00 +01:00: demoted 2026-11-07 10:00:00 +01:00 by Cy (tag m#prod!#4); "
        "note: incident 42",
        "staging: m@v3 at 2026-11-08 12:00:00 +01:00, promoted 2026-11-08 10:00:00 +01:00 by Cy (tag m#staging#5)",
    ]


def test_local_time_and_json(repo: Path) -> None:
    # "YYYY-MM-DD HH:MM" is this machine's local time, as git reads a date without a zone
    moment = datetime(2026, 11, 9, 9, 30, tzinfo=timezone(timedelta(hours=1))).astimezone()
    local = moment.strftime("%Y-%m-%d %H:%M")
    data = json.loads(out(repo, "m#prod", "--at", local, "--json"))
    assert data["held"] is False and data["version"] is None and data["event"]["tag"] == "m#prod!#4"
    assert data["first_promotion"]["tag"] == "m#prod#1" and data["first_promotion"]["who"] == "Ana <ana@example.com>"
    later = (moment + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    data = json.loads(out(repo, "m#prod", "--at", later, "--json"))
    assert (data["held"], data["version"], data["event"]["event"], data["event"]["who"]) == (
        True,
        "v3",
        "promoted",
        "Bob <bob@example.com>",
    )
    assert datetime.fromisoformat(data["at"]) == moment + timedelta(hours=1)
    listed = json.loads(out(repo, "m", "--at", later, "--json"))
    assert [(h["stage"], h["version"]) for h in listed] == [("prod", "v3"), ("staging", "v3")]
    # the same answers from Python
    [h] = api.holders_at("m", "2026-11-04T09:00:00+01:00", stage="prod", repo=repo)
    assert h.event is not None and (h.version, h.event.who, h.event.note) == (
        "v2",
        "Bob <bob@example.com>",
        "better on the holdout set",
    )


def test_history_of_one_stage_has_notes_and_rollbacks(repo: Path) -> None:
    events = json.loads(out(repo, "m#prod", "--json"))
    assert [(e["event"], e["version"], e["note"]) for e in events] == [
        ("promoted", "v1", None),
        ("promoted", "v2", "better on the holdout set"),
        ("rolled back", "v1", "v2 misbehaves"),
        ("demoted", "v1", "incident 42"),
        ("promoted", "v3", None),
    ]
    table = out(repo, "m")
    assert "incident 42" in table and "released" in table and "staging" in table


@pytest.mark.parametrize(
    "text", ["yesterday", "2026-13-01", "2026-11-01 25:00", "01/11/2026", "2026-11-01T12:00+99:00", ""]
)
def test_an_unreadable_moment_is_refused_in_one_line(repo: Path, text: str) -> None:
    assert_refused(
        repo,
        "history",
        "m#prod",
        "--at",
        text,
        alone=True,
        expect=f"could not read --at {text!r}: use 'YYYY-MM-DD HH:MM' or ISO 8601",
    )


def test_bad_names_are_refused_in_one_line(repo: Path) -> None:
    assert_refused(repo, "history", "m#Prod!", "--at", "2026-11-04", expect="invalid stage name 'Prod!'")
    assert_refused(repo, "history", "nobody#prod", "--at", "2026-11-04", expect="no releases of model 'nobody'")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-01", datetime(2026, 11, 1).astimezone()),
        ("2026-11-01 12:00", datetime(2026, 11, 1, 12).astimezone()),
        ("2026-11-01T12:00:30.25Z", datetime(2026, 11, 1, 12, 0, 30, 250000, tzinfo=timezone.utc)),
        ("2026-11-01T12:00:00-0530", datetime(2026, 11, 1, 12, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
        ("2026-11-01 12:00 +01", datetime(2026, 11, 1, 12, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_moments_are_read_as_git_reads_them(text: str, expected: datetime) -> None:
    got = stage_history.parse_moment(text)
    assert got == expected and got.tzinfo is not None
    with pytest.raises(KgitError, match="could not read --at"):
        stage_history.parse_moment(text + "x")


def test_history_list_and_show_import_neither_tensorflow_nor_dvc(repo: Path) -> None:
    script = (
        "import sys\n"
        "from kgit.cli import main\n"
        "for args in (['history', 'm#prod', '--at', '2026-11-04 12:00'], ['history', 'm', '--json'],\n"
        "             ['list', '--json'], ['show', 'm@v1']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print([m for m in ('tensorflow', 'keras', 'h5py', 'dvc') if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr
