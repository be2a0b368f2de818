"""Promotion gates: `kgit promote --require/--require-better`, the committed `.kgit/gates.yaml`,
and the same gates in the pre-push and server hooks for stage tags made any other way. Real git
pushes to a real bare repository with kgit's server hook, real DVC and Keras releases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import git as cgit
from conftest import kgit as ckgit
from support.world import World, forge_tag, git, kgit, run

from kgit.core.errors import KgitError
from kgit.registry import gates
from kgit.store.git_ops import Repo

GATES = """\
metrics:
  val.loss: min
stages:
  prod:
    require: ["val.accuracy >= 0.85"]
    require_better: [val.accuracy]
  m#staging:
    require: ["val.loss<0.5"]
"""


# -- the file --------------------------------------------------------------------------------------
def test_gates_file_is_parsed_into_directions_and_rules() -> None:
    g = gates.parse(GATES)
    assert g.directions == {"val.loss": "min"} and g.direction("val.accuracy") == "max"
    assert [r.text for r in g.rules_for("m", "prod")] == ["val.accuracy >= 0.85", "better val.accuracy"]
    assert [r.text for r in g.rules_for("m", "staging")] == ["val.loss < 0.5"]
    assert g.rules_for("other", "staging") == [] and gates.parse("") == gates.Gates()


@pytest.mark.parametrize(
    "text, says",
    [
        ("stage:\n  prod: {}\n", "unknown field 'stage'"),
        ("stages:\n  prod:\n    requires: [a>1]\n", "unknown field 'requires'"),
        ("metrics:\n  val.loss: lower\n", "use max or min"),
        ("stages:\n  prod:\n    require: ['val.accuracy => 0.9']\n", "is not KEY OP NUMBER"),
        ("stages:\n  prod:\n    require: ['acc >= high']\n", "'high' is not a number"),
        ("stages:\n  prod:\n    require: ['acc >= nan']\n", "not a finite number"),
        ("stages:\n  Prod!:\n    require: []\n", "is not a stage"),
        ("stages:\n  prod:\n    require: [1]\n", "is not a rule"),
        ("stages: [prod]\n", "must map stage names"),
        ("- a\n", "must be a mapping"),
        ("a: &a [*a]\n", "YAML aliases"),
    ],
)
def test_malformed_gates_are_refused_naming_the_problem(text: str, says: str) -> None:
    with pytest.raises(KgitError) as exc:
        gates.parse(text)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_directions_come_from_the_committed_file_at_head(git_repo: Path) -> None:
    repo = Repo(git_repo)
    assert gates.directions(repo) == {}
    (git_repo / ".kgit").mkdir()
    (git_repo / ".kgit/gates.yaml").write_text(GATES)
    assert gates.directions(repo) == {}  # not committed: does not count
    cgit(git_repo, "add", ".kgit/gates.yaml")
    cgit(git_repo, "commit", "-q", "-m", "gates")
    assert gates.directions(repo) == {"val.loss": "min"} == gates.directions(git_repo)
    (git_repo / ".kgit/gates.yaml").write_text("metrics:\n  val.loss: max\n")
    assert gates.directions(repo) == {"val.loss": "min"}


# -- a world: three releases with metrics, origin guarded by the server hook ----------------------
ACC = {"v1": 0.8, "v2": 0.9, "v3": 0.88}
LOSS = {"v1": 0.6, "v2": 0.3, "v3": 0.35}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, plain_model) -> World:  # type: ignore[no-untyped-def]
    import kgit as api

    w = World.create(tmp_path_factory.mktemp("gates-world"))
    assert kgit(w.base, "server", "install", str(w.origin), "--dvc-remote", str(w.store)).returncode == 0
    (w.repo / ".kgit").mkdir()
    (w.repo / ".kgit/gates.yaml").write_text(GATES)
    git(w.repo, "add", ".kgit/gates.yaml")
    git(w.repo, "commit", "-q", "-m", "promotion gates")
    for v in ("v1", "v2", "v3"):
        api.release(
            plain_model, "m", formats=["keras"], repo=w.repo, metrics={"val": {"accuracy": ACC[v], "loss": LOSS[v]}}
        )
    proc = w.push("main", "--follow-tags")
    assert proc.returncode == 0, proc.stderr
    return w


@pytest.fixture
def w(world: World, tmp_path: Path) -> World:
    return world.copy(tmp_path / "w")


def tags(repo: Path, pattern: str = "m#*") -> list[str]:
    return git(repo, "tag", "-l", pattern).split()


def one_line_error(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("kgit: error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


@pytest.mark.slow
def test_promote_require_refuses_naming_the_rule_and_numbers(w: World) -> None:
    msg = one_line_error(kgit(w.repo, "promote", "m@v1", "dev", "--require", "val.accuracy>=0.85"))
    assert "rule `val.accuracy >= 0.85` (--require): m@v1 has val.accuracy 0.8" in msg
    msg = one_line_error(kgit(w.repo, "promote", "m@v2", "dev", "--require", "test.accuracy>0.5"))
    assert "m@v2 has no metric test.accuracy (it has: val.accuracy, val.loss)" in msg
    msg = one_line_error(kgit(w.repo, "promote", "m@v2", "dev", "--require", "val.acuracy>0.5"))
    assert "m@v2 has no metric val.acuracy (it has: val.accuracy, val.loss); did you mean val.accuracy?" in msg
    msg = one_line_error(kgit(w.repo, "promote", "m@v2", "dev", "--require", "val.accuracy=>0.5"))
    assert "is not KEY OP NUMBER" in msg
    assert tags(w.repo) == []
    proc = kgit(
        w.repo, "promote", "m@v2", "dev", "--require", "val.accuracy>=0.85", "--require", "val.loss<0.4", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["gates"] == ["val.accuracy >= 0.85", "val.loss < 0.4"]
    assert tags(w.repo) == ["m#dev#1"]
    event = json.loads(
        git(w.repo, "for-each-ref", "--format=%(contents)", "refs/tags/m#dev#1").split("kgit-event: ")[1]
    )
    assert event["gates"] == ["val.accuracy >= 0.85", "val.loss < 0.4"]  # the tag records what it passed
    assert event["metrics"] == {"val.accuracy": 0.9, "val.loss": 0.3}


@pytest.mark.slow
def test_require_better_compares_with_the_version_in_the_stage_now(w: World) -> None:
    # dev is empty: nothing to beat
    assert kgit(w.repo, "promote", "m@v3", "dev", "--require-better", "val.accuracy").returncode == 0
    msg = one_line_error(kgit(w.repo, "promote", "m@v1", "dev", "--require-better", "val.accuracy"))
    assert (
        "rule `better val.accuracy` (--require-better): m@v1 has val.accuracy 0.8, m@v3 (in the stage now) has 0.88"
        in msg
    )
    # val.loss is declared `min` in the committed gates: lower is better
    msg = one_line_error(kgit(w.repo, "promote", "m@v1", "dev", "--require-better", "val.loss"))
    assert "m@v1 has val.loss 0.6, m@v3 (in the stage now) has 0.35; lower is better" in msg
    assert kgit(w.repo, "promote", "m@v2", "dev", "--require-better", "val.loss").returncode == 0
    assert tags(w.repo) == ["m#dev#1", "m#dev#2"]


@pytest.mark.slow
def test_committed_gates_apply_to_every_promotion_and_only_a_commit_changes_them(w: World) -> None:
    msg = one_line_error(kgit(w.repo, "promote", "m@v1", "prod"))
    assert "rule `val.accuracy >= 0.85` (.kgit/gates.yaml (at " in msg and "(prod)): m@v1 has val.accuracy 0.8" in msg
    assert kgit(w.repo, "promote", "m@v2", "prod").returncode == 0
    # v3 passes the threshold but is not better than v2 in prod
    msg = one_line_error(kgit(w.repo, "promote", "m@v3", "prod"))
    assert "rule `better val.accuracy`" in msg and "m@v3 has val.accuracy 0.88, m@v2 (in the stage now) has 0.9" in msg
    # model-specific stage rule: m#staging
    msg = one_line_error(kgit(w.repo, "promote", "m@v1", "staging"))
    assert "rule `val.loss < 0.5`" in msg
    # an uncommitted edit does not count; there is no --force
    (w.repo / ".kgit/gates.yaml").write_text("stages: {}\n")
    assert "rule `better val.accuracy`" in one_line_error(kgit(w.repo, "promote", "m@v3", "prod"))
    assert kgit(w.repo, "promote", "m@v3", "prod", "--force").returncode == 2
    git(w.repo, "commit", "-q", "-am", "Let v3 into prod: ties on accuracy allowed this week")
    assert kgit(w.repo, "promote", "m@v3", "prod").returncode == 0
    assert tags(w.repo) == ["m#prod#1", "m#prod#2"]


@pytest.mark.slow
def test_pre_push_refuses_a_hand_made_stage_tag_the_gates_refuse(w: World) -> None:
    commit = git(w.repo, "rev-list", "-n1", "m@v1.0.0")
    git(w.repo, "tag", "-a", "m#prod#1", commit, "-m", "promote by hand")
    proc = w.push("m#prod#1")
    assert proc.returncode != 0
    assert "push refused: stage tags that the event counters or the promotion gates refuse" in proc.stderr
    assert "m#prod#1: m@v1 cannot go to prod: rule `val.accuracy >= 0.85`" in proc.stderr
    assert "m@v1 has val.accuracy 0.8" in proc.stderr
    assert "m#prod#1" not in w.origin_tags()


def rejected(proc, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode != 0, proc.stderr
    assert "pre-receive hook declined" in proc.stderr, proc.stderr
    assert f"remote: kgit: rejected: {reason}" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_server_rejects_a_stage_tag_the_gates_refuse_even_with_no_verify(w: World) -> None:
    commit = git(w.repo, "rev-list", "-n1", "m@v1.0.0")
    git(w.repo, "tag", "-a", "m#prod#1", commit, "-m", "promote by hand")
    rejected(
        w.push("--no-verify", "m#prod#1"), "new stage tag m#prod#1: m@v1 cannot go to prod: rule `val.accuracy >= 0.85`"
    )
    assert "m#prod#1" not in w.origin_tags()
    git(w.repo, "tag", "-d", "m#prod#1")  # (push.followTags would send it again)
    # a good one goes through: v2 passes, and prod is empty on the server
    git(w.repo, "tag", "-a", "m#prod#1", git(w.repo, "rev-list", "-n1", "m@v2.0.0"), "-m", "promote by hand")
    proc = w.push("--no-verify", "m#prod#1")
    assert proc.returncode == 0, proc.stderr
    # v3 is not better than v2, which holds prod on the server now
    git(w.repo, "tag", "-a", "m#prod#2", git(w.repo, "rev-list", "-n1", "m@v3.0.0"), "-m", "promote by hand")
    rejected(
        w.push("--no-verify", "m#prod#2"), "new stage tag m#prod#2: m@v3 cannot go to prod: rule `better val.accuracy`"
    )


@pytest.mark.slow
def test_weakening_the_gates_in_the_same_push_does_not_let_the_stage_tag_through(w: World) -> None:
    (w.repo / ".kgit/gates.yaml").write_text("stages: {}\n")
    git(w.repo, "commit", "-q", "-am", "no gates")
    git(w.repo, "tag", "-a", "m#prod#1", git(w.repo, "rev-list", "-n1", "m@v1.0.0"), "-m", "promote by hand")
    rejected(w.push("--no-verify", "main", "m#prod#1"), "new stage tag m#prod#1: m@v1 cannot go to prod")
    assert "m#prod#1" not in w.origin_tags() and git(w.origin, "rev-parse", "main") != git(w.repo, "rev-parse", "main")
    # the weaker rule counts once it is on the server, where history shows who changed it
    proc = run(w.repo, "git", "-c", "push.followTags=false", "push", "--no-verify", "origin", "main")
    assert proc.returncode == 0, proc.stderr
    proc = w.push("--no-verify", "m#prod#1")
    assert proc.returncode == 0, proc.stderr
    assert "no gates" in git(w.origin, "log", "-1", "--format=%s", "--", ".kgit/gates.yaml")


# -- stage tags as invariants: the next counter, the last holder, rollbacks (kgit.registry.stage_checks) -------
def commit_of(w: World, version: str) -> str:
    return git(w.repo, "rev-list", "-n1", f"m@{version}.0.0")


def refused_before_and_after_no_verify(w: World, tag: str, reason: str) -> None:
    """The pre-push hook refuses to push ``tag`` and the server rejects it with --no-verify, both
    naming the tag and ``reason``; the server does not get it."""
    proc = w.push(f"refs/tags/{tag}")
    assert proc.returncode != 0 and f"  - {tag}: {reason}" in proc.stderr, proc.stderr
    assert "push refused: stage tags that the event counters or the promotion gates refuse" in proc.stderr
    rejected(w.push("--no-verify", f"refs/tags/{tag}"), f"new stage tag {tag}: {reason}")
    assert tag not in w.origin_tags()


def rollback_message(version: str) -> str:
    """What `kgit rollback` writes, made by hand."""
    body = {"event": "rollback", "name": "m", "version": version, "stage": "prod", "release": f"m@{version}.0.0"}
    return f"kgit roll prod of m back to {version}\n\nkgit-event: {json.dumps(body)}\n"


def allow_rollback(w: World) -> None:
    (w.repo / ".kgit/gates.yaml").write_text(
        GATES.replace(
            "    require_better: [val.accuracy]\n", "    require_better: [val.accuracy]\n    allow_rollback: true\n"
        )
    )
    git(w.repo, "commit", "-q", "-am", "prod may roll back below require_better")
    proc = w.push("main")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_hand_made_stage_tags_with_a_skipped_or_reused_counter_are_refused(w: World) -> None:
    git(w.repo, "tag", "-a", "m#prod#2", commit_of(w, "v2"), "-m", "promote by hand")  # m's next is #1
    refused_before_and_after_no_verify(
        w, "m#prod#2", "#2 is not the next event counter of m: expected #1 (it has no event tags yet)"
    )
    git(w.repo, "tag", "-d", "m#prod#2")
    assert kgit(w.repo, "promote", "m@v2", "prod").returncode == 0
    proc = w.push("refs/tags/m#prod#1")
    assert proc.returncode == 0, proc.stderr
    git(w.repo, "tag", "-a", "m#dev#1", commit_of(w, "v3"), "-m", "promote by hand")  # #1 is taken
    refused_before_and_after_no_verify(
        w, "m#dev#1", "#1 is not the next event counter of m: expected #2 (its event tags end at #1)"
    )
    assert [t for t in w.origin_tags() if "#" in t] == ["m#prod#1"]


@pytest.mark.slow
def test_a_demote_does_not_lower_the_bar_for_the_next_promotion(w: World) -> None:
    assert kgit(w.repo, "promote", "m@v2", "prod").returncode == 0
    assert kgit(w.repo, "demote", "m", "prod").returncode == 0
    reason = "m@v3 has val.accuracy 0.88, m@v2 (the last version in prod) has 0.9; higher is better"
    assert reason in one_line_error(kgit(w.repo, "promote", "m@v3", "prod"))
    assert tags(w.repo) == ["m#prod!#2", "m#prod#1"]
    # the same promotion by hand, with the right counter: the earlier tags of the push count first
    git(w.repo, "tag", "-a", "m#prod#3", commit_of(w, "v3"), "-m", "promote by hand")
    proc = w.push("m#prod#1", "m#prod!#2", "m#prod#3")
    assert proc.returncode != 0 and "  - m#prod#3: m@v3 cannot go to prod: rule `better val.accuracy`" in proc.stderr
    assert reason in proc.stderr
    rejected(
        w.push("--no-verify", "m#prod#1", "m#prod!#2", "m#prod#3"), "new stage tag m#prod#3: m@v3 cannot go to prod"
    )
    assert not [t for t in w.origin_tags() if "#" in t]


@pytest.mark.slow
def test_rollback_below_require_better_needs_allow_rollback_in_the_committed_gates(w: World) -> None:
    assert kgit(w.repo, "promote", "m@v3", "prod").returncode == 0
    assert kgit(w.repo, "promote", "m@v2", "prod").returncode == 0  # 0.9 beats 0.88
    assert w.push("m#prod#1", "m#prod#2").returncode == 0
    # refused alike by `kgit rollback`, the pre-push hook and the server
    msg = one_line_error(kgit(w.repo, "rollback", "m", "prod"))
    reason = "m@v3 cannot go to prod: rule `better val.accuracy` (.kgit/gates.yaml (at "
    assert reason in msg and "m@v3 has val.accuracy 0.88, m@v2 (in the stage now) has 0.9" in msg
    assert "sets `allow_rollback: true`" in msg
    assert tags(w.repo) == ["m#prod#1", "m#prod#2"]
    forge_tag(w.repo, "m#prod#3", commit_of(w, "v3"), rollback_message("v3"))
    refused_before_and_after_no_verify(w, "m#prod#3", reason)
    proc = w.push("--no-verify", "m#prod#3")
    assert "sets `allow_rollback: true`" in proc.stderr
    git(w.repo, "tag", "-d", "m#prod#3")
    # allowed by a committed rule: the command, the pre-push hook and the server agree
    allow_rollback(w)
    proc = kgit(w.repo, "rollback", "m", "prod", "--note", "v2 misbehaves on Mondays", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "event": "rolled back",
        "name": "m",
        "version": "v3",
        "stage": "prod",
        "tag": "m#prod#3",
        "gates": ["val.accuracy >= 0.85"],
        "from": "v2",
    }
    proc = w.push("m#prod#3")
    assert proc.returncode == 0, proc.stderr
    assert "m#prod#3" in w.origin_tags()
    assert json.loads(ckgit(w.repo, "show", "m#prod", "--json", check=True).stdout)["version"] == "v3"
    events = json.loads(ckgit(w.repo, "history", "m", "--json", check=True).stdout)
    assert [(e["event"], e["version"], e["stage"]) for e in events if e["stage"]] == [
        ("promoted", "v3", "prod"),
        ("promoted", "v2", "prod"),
        ("rolled back", "v3", "prod"),
    ]
    assert "rolled back" in ckgit(w.repo, "history", "m", check=True).stdout
    assert "v2 misbehaves on Mondays" in git(w.repo, "for-each-ref", "--format=%(contents)", "refs/tags/m#prod#3")


@pytest.mark.slow
def test_a_rollback_to_a_version_that_never_held_the_stage_is_refused(w: World) -> None:
    allow_rollback(w)
    assert kgit(w.repo, "promote", "m@v2", "prod").returncode == 0
    assert w.push("m#prod#1").returncode == 0
    assert "only v2 of m has been in prod: there is no earlier version" in one_line_error(
        kgit(w.repo, "rollback", "m", "prod")
    )
    msg = one_line_error(kgit(w.repo, "rollback", "m", "prod", "--to", "v3"))
    assert "m@v3 has never been in prod (versions that have: v2)" in msg
    # a message that calls a promotion of v3 a rollback does not make it one
    forge_tag(w.repo, "m#prod#2", commit_of(w, "v3"), rollback_message("v3"))
    refused_before_and_after_no_verify(
        w, "m#prod#2", "its message says it rolls prod back to m@v3, which never held prod"
    )
    assert [
        e["event"] for e in json.loads(ckgit(w.repo, "history", "m", "--json", check=True).stdout) if e["stage"]
    ] == ["promoted", "promoted"]


@pytest.mark.slow
def test_a_server_whose_head_names_no_branch_still_applies_the_gates(w: World) -> None:
    git(w.origin, "symbolic-ref", "HEAD", "refs/heads/master")  # git's default; the team pushes main
    git(w.repo, "tag", "-a", "m#prod#1", commit_of(w, "v1"), "-m", "promote by hand")
    rejected(
        w.push("--no-verify", "m#prod#1"),
        "new stage tag m#prod#1: m@v1 cannot go to prod: rule `val.accuracy >= 0.85` (.kgit/gates.yaml on main (at ",
    )
    git(w.repo, "tag", "-d", "m#prod#1")
    assert kgit(w.repo, "promote", "m@v2", "prod").returncode == 0
    proc = w.push("m#prod#1")
    assert proc.returncode == 0, proc.stderr
    assert (
        "kgit: note: HEAD names refs/heads/master, which does not exist: the promotion gates of every branch"
        in proc.stderr
    )
    assert "m#prod#1" in w.origin_tags()


@pytest.mark.slow
def test_malformed_committed_gates_refuse_promotion_with_the_fix(w: World) -> None:
    (w.repo / ".kgit/gates.yaml").write_text("stages:\n  prod:\n    require: ['val.accuracy => 0.9']\n")
    git(w.repo, "commit", "-q", "-am", "typo")
    msg = one_line_error(kgit(w.repo, "promote", "m@v2", "prod"))
    assert ".kgit/gates.yaml (at " in msg and "is not KEY OP NUMBER" in msg
    assert tags(w.repo) == []
    # git-only readers say so too, in one line
    with pytest.raises(gates.GateError, match="is not KEY OP NUMBER"):
        gates.directions(Repo(w.repo))
    assert "is not KEY OP NUMBER" in one_line_error(kgit(w.repo, "list", "--sort", "val.loss"))


@pytest.mark.slow
def test_list_metric_columns_sort_and_diff_deltas(w: World) -> None:
    out = ckgit(
        w.repo, "list", "m", "--metric", "val.accuracy", "--metric", "val.loss", "--sort", "val.accuracy", check=True
    ).stdout.splitlines()
    assert out[0].split()[-2:] == ["val.accuracy", "val.loss"]
    assert [line.split()[1] for line in out[1:]] == ["v2", "v3", "v1"]
    assert out[1].split()[-2:] == ["0.9", "0.3"]
    rows = json.loads(ckgit(w.repo, "list", "m", "--sort", "val.loss", "--json", check=True).stdout)
    assert [r["version"] for r in rows] == ["v2", "v3", "v1"]  # val.loss is min: lowest first
    d = json.loads(ckgit(w.repo, "diff", "m@v1", "m@v2", "--json", check=True).stdout)
    by_key = {m["key"]: m for m in d["metrics"]}
    assert by_key["val.accuracy"]["a"] == 0.8 and by_key["val.accuracy"]["b"] == 0.9
    assert by_key["val.accuracy"]["delta"] == pytest.approx(0.1) and by_key["val.accuracy"]["verdict"] == "better"
    assert by_key["val.loss"]["delta"] == pytest.approx(-0.3) and by_key["val.loss"]["verdict"] == "better"
    assert {"section": "metrics", "key": "val.loss", "a": 0.6, "b": 0.3} in d["changes"]
    text = ckgit(w.repo, "diff", "m@v2", "m@v3", check=True).stdout
    line = next(x for x in text.splitlines() if x.startswith("val.accuracy"))
    assert line.split() == ["val.accuracy", "0.9", "0.88", "-0.02", "worse", "(max)"]


@pytest.mark.parametrize(
    "key, direction",
    [
        ("val.loss", "min"),
        ("val_loss", "min"),
        ("train/loss", "min"),
        ("valLoss", "min"),
        ("holdout.mae", "min"),
        ("test.rmse", "min"),
        ("mse", "min"),
        ("top-1-error", "min"),
        ("val.Loss", "min"),
        ("val.accuracy", "max"),
        ("gloss", "max"),
        ("terror", "max"),
        ("auc", "max"),
        ("mae2", "max"),
    ],
)
def test_undeclared_directions_come_from_the_metric_name(key: str, direction: str) -> None:
    from kgit.core import metrics

    assert metrics.default_direction(key) == direction == gates.parse("").direction(key)
    # a declaration wins either way
    flipped = {"min": "max", "max": "min"}[direction]
    assert gates.parse(f"metrics:\n  {key}: {flipped}\n").direction(key) == flipped
