"""What a new stage or deprecation tag must satisfy (kgit.registry.stage_checks), judged identically by the
pre-push hook's check and by kgit's server hook: the next event counter only, require_better against
the stage's last holder even after a demote, rollbacks, and a server whose HEAD names no branch.

Fast tier: releases made by hand the way `kgit release` leaves them in git (tests/support/synthetic),
real git, real pushes (`--no-verify`) to a real bare repository with `kgit server install`. The same
attacks with real models, `kgit promote`/`kgit rollback` and the real pre-push hook: test_gates.py."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import synthetic
from support.world import git, kgit, run

from kgit.core.errors import KgitError
from kgit.guard import client_hooks
from kgit.registry import gates
from kgit.store.git_ops import Repo

GATES = """\
metrics:
  val.loss: min
stages:
  prod:
    require: ["val.accuracy >= 0.85"]
    require_better: [val.accuracy]
"""
ACC = {"v1": 0.8, "v2": 0.9, "v3": 0.88}
LOSS = {"v1": 0.6, "v2": 0.3, "v3": 0.35}


@dataclass
class Team:
    repo: Path
    origin: Path

    def commit(self, tag: str) -> str:
        return git(self.repo, "rev-parse", f"{tag}^{{commit}}")

    def tag(self, tag: str, version: str, message: str = "made by hand\n") -> str:
        """An annotated event tag made with plain git on ``m@version``'s release commit."""
        msg = self.repo / ".git" / "tag-message"
        msg.write_text(message)
        git(self.repo, "tag", "-a", tag, f"m@{version}.0.0^{{commit}}", "-F", str(msg))
        return tag

    def judge(self, *tags: str) -> tuple[list[str], list[str]]:
        """(what the pre-push hook's check refuses, what the server hook rejects) for pushing ``tags``."""
        client = client_hooks.gate_problems(Repo(self.repo), list(tags))
        proc = run(self.repo, "git", "push", "--no-verify", "origin", *(f"refs/tags/{t}" for t in tags))
        server = [
            line.split("kgit: rejected: ", 1)[1].rstrip()
            for line in proc.stderr.splitlines()
            if "kgit: rejected: " in line
        ]
        assert (proc.returncode == 0) == (server == []), proc.stderr
        return client, server

    def refused(self, *tags: str) -> list[str]:
        """Both refuse, with the same words (the server says "new stage tag" first); the lines."""
        client, server = self.judge(*tags)
        assert client and server == [
            f"new {'deprecation' if '@' in c.split(':')[0] else 'stage'} tag {c}" for c in client
        ]
        for t in tags:
            git(self.repo, "tag", "-d", t)
        return client

    def accepted(self, *tags: str) -> None:
        assert self.judge(*tags) == ([], [])


def rollback_message(version: str, stage: str = "prod", name: str = "m") -> str:
    body = {"event": "rollback", "name": name, "version": version, "stage": stage}
    return f"kgit roll {stage} of {name} back to {version}\n\nkgit-event: {json.dumps(body)}\n"


@pytest.fixture(scope="module")
def team_at_start(tmp_path_factory: pytest.TempPathFactory) -> Team:
    """m@v1..v3 with metrics and the gates above, pushed to a bare origin, which then gets kgit's
    server hook (so the releases, which have no data, were not checked on the way in)."""
    tmp_path = tmp_path_factory.mktemp("team")
    repo = synthetic.repo_at(tmp_path / "repo")
    (repo / ".kgit").mkdir()
    (repo / ".kgit/gates.yaml").write_text(GATES)
    git(repo, "add", ".kgit")
    git(repo, "commit", "-q", "-m", "promotion gates")
    for v in ("v1", "v2", "v3"):
        synthetic.release(repo, "m", v, claims={"metrics": {"val.accuracy": ACC[v], "val.loss": LOSS[v]}})
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main", "--tags")
    assert kgit(tmp_path, "server", "install", str(origin)).returncode == 0
    return Team(repo, origin)


@pytest.fixture
def team(team_at_start: Team, tmp_path: Path) -> Team:
    """A copy of ``team_at_start`` of this test's own, origin included (built once, copied per test)."""
    shutil.copytree(team_at_start.repo.parent, tmp_path / "team", symlinks=True)
    repo, origin = tmp_path / "team" / "repo", tmp_path / "team" / "origin.git"
    git(repo, "remote", "set-url", "origin", str(origin))
    return Team(repo, origin)


def test_a_tag_must_carry_its_models_next_counter(team: Team) -> None:
    # skipped: m has no event tags yet, so its next is #1
    assert team.refused(team.tag("m#prod#2", "v2")) == [
        "m#prod#2: #2 is not the next event counter of m: expected #1 (it has no event tags yet); fetch the tags "
        "(git fetch --tags), delete this one (git tag -d 'm#prod#2') and make it again with kgit "
        "promote/rollback/demote/deprecate"
    ]
    team.accepted(team.tag("m#prod#1", "v2"))
    # reused: another stage's tag already has #1; a deprecation counts the same way
    [line] = team.refused(team.tag("m#staging#1", "v3"))
    assert line.startswith("m#staging#1: #1 is not the next event counter of m: expected #2 (its event tags end at #1)")
    assert "expected #2" in team.refused(team.tag("m@v1.0.0!#7", "v1"))[0]
    # the other new tags of the same push count, in counter order
    [line] = team.refused(team.tag("m#staging#2", "v3"), team.tag("m#dev#2", "v3"))
    assert line.startswith("m#staging#2: #2 is not the next event counter of m: expected #3")
    team.accepted(team.tag("m#dev#3", "v3"), team.tag("m#staging#2", "v3"), team.tag("m@v1.0.0!#4", "v1"))
    assert sorted(t for t in git(team.origin, "tag", "-l").split() if "#" in t) == [
        "m#dev#3",
        "m#prod#1",
        "m#staging#2",
        "m@v1.0.0!#4",
    ]


def test_a_low_counter_is_not_judged_against_an_earlier_holder(team: Team) -> None:
    # prod: v3 (0.88), then v2 (0.9). A tag numbered between them would have been judged against v3.
    team.accepted(team.tag("m#prod#1", "v3"), team.tag("m#dev#2", "v1"), team.tag("m#prod#3", "v2"))
    git(team.repo, "tag", "-d", "m#dev#2")  # as if this clone never had it: #2 looks free here
    [line] = team.refused(team.tag("m#prod#2", "v3"))
    assert "expected #4" in line


def test_require_better_is_judged_against_the_last_holder_even_after_a_demote(team: Team) -> None:
    team.accepted(team.tag("m#prod#1", "v2"), team.tag("m#prod!#2", "v2"))
    # prod is empty now, but v3 (0.88) still has to beat v2 (0.9), which held it last
    [line] = team.refused(team.tag("m#prod#3", "v3"))
    assert (
        "m#prod#3: m@v3 cannot go to prod: rule `better val.accuracy` (.kgit/gates.yaml (at " in line
        and "m@v3 has val.accuracy 0.88, m@v2 (the last version in prod) has 0.9; higher is better" in line
    )
    team.accepted(team.tag("m#prod#3", "v2"))  # the same version again: nothing to beat


def test_a_rollback_skips_require_better_only_where_allow_rollback_is_set(team: Team) -> None:
    team.accepted(team.tag("m#prod#1", "v3"), team.tag("m#prod#2", "v2"))
    # back to v3, which held prod: a rollback, but the committed gates do not allow one below v2
    [line] = team.refused(team.tag("m#prod#3", "v3", rollback_message("v3")))
    assert (
        "m@v3 has val.accuracy 0.88, m@v2 (in the stage now) has 0.9; higher is better (a rollback skips the "
        "rules that compare with the stage's holder only where the stage's entry in .kgit/gates.yaml sets "
        "`allow_rollback: true`)"
    ) in line
    (team.repo / ".kgit/gates.yaml").write_text(GATES + "    allow_rollback: true\n")
    git(team.repo, "commit", "-q", "-am", "prod may roll back")
    assert run(team.repo, "git", "push", "--no-verify", "origin", "main").returncode == 0
    # a plain promotion of v3 is still judged by require_better; the rollback is not
    assert "m@v3 (in the stage now)" not in team.refused(team.tag("m#prod#3", "v3"))[0]
    team.accepted(team.tag("m#prod#3", "v3", rollback_message("v3")))
    # allow_rollback waives require_better only: a rollback still passes the stage's thresholds
    (team.repo / ".kgit/gates.yaml").write_text(GATES.replace("0.85", "0.89") + "    allow_rollback: true\n")
    git(team.repo, "commit", "-q", "-am", "prod needs 0.89 now")
    assert run(team.repo, "git", "push", "--no-verify", "origin", "main").returncode == 0
    team.accepted(team.tag("m#prod#4", "v2"))
    [line] = team.refused(team.tag("m#prod#5", "v3", rollback_message("v3")))
    assert "rule `val.accuracy >= 0.89`" in line and "m@v3 has val.accuracy 0.88" in line and "better" not in line


def test_a_rollback_message_must_be_true(team: Team) -> None:
    (team.repo / ".kgit/gates.yaml").write_text(GATES + "    allow_rollback: true\n")
    git(team.repo, "commit", "-q", "-am", "prod may roll back")
    assert run(team.repo, "git", "push", "--no-verify", "origin", "main").returncode == 0
    team.accepted(team.tag("m#prod#1", "v2"))
    # v3 never held prod: calling its promotion a rollback does not dodge require_better
    [line] = team.refused(team.tag("m#prod#2", "v3", rollback_message("v3")))
    assert line == (
        "m#prod#2: its message says it rolls prod back to m@v3, which never held prod: a rollback goes "
        "back to a version that held the stage (promote this one instead)"
    )
    # a message about another version or stage than the tag's
    [line] = team.refused(team.tag("m#prod#2", "v3", rollback_message("v2")))
    assert "its message says it rolls back m:prod:v2, but the tag puts m@v3 in prod" in line
    [line] = team.refused(team.tag("m#prod#2", "v3", rollback_message("v3", stage="staging")))
    assert "its message says it rolls back m:staging:v3" in line


def test_a_server_whose_head_names_no_branch_applies_every_branchs_gates(team: Team) -> None:
    git(team.origin, "symbolic-ref", "HEAD", "refs/heads/master")  # git's default name; the team pushes main
    git(team.repo, "switch", "-q", "-c", "exp")
    (team.repo / ".kgit/gates.yaml").write_text("stages:\n  prod:\n    require: ['val.loss <= 0.32']\n")
    git(team.repo, "commit", "-q", "-am", "an experiment's own rule")
    assert run(team.repo, "git", "push", "--no-verify", "origin", "exp").returncode == 0
    git(team.repo, "switch", "-q", "main")
    # refused by main's rule, then by exp's: every branch's rules apply
    _client, [line] = team.judge(team.tag("m#prod#1", "v1"))
    assert "m@v1 cannot go to prod: rule `val.loss <= 0.32` (.kgit/gates.yaml on exp (at " in line
    assert "rule `val.accuracy >= 0.85` (.kgit/gates.yaml on main (at " in line
    git(team.repo, "tag", "-d", "m#prod#1")
    client, [line] = team.judge(team.tag("m#prod#1", "v3"))
    assert client == []  # this clone's HEAD (main) has no such rule: only the server knows the branches
    assert "m@v3 cannot go to prod: rule `val.loss <= 0.32` (.kgit/gates.yaml on exp (at " in line
    git(team.repo, "tag", "-d", "m#prod#1")
    # one that passes every branch's rules goes through, and the pusher is told why HEAD matters
    team.tag("m#prod#1", "v2")
    proc = run(team.repo, "git", "push", "--no-verify", "origin", "refs/tags/m#prod#1")
    assert proc.returncode == 0, proc.stderr
    assert (
        "kgit: note: HEAD names refs/heads/master, which does not exist: the promotion gates of every branch "
        "apply (2 branch(es)); point HEAD at the team's branch in the bare repository: "
        "git symbolic-ref HEAD refs/heads/main"
    ) in proc.stderr


def test_refusing_one_tag_names_it_and_the_rest_can_be_pushed(team: Team) -> None:
    team.tag("m#prod#5", "v2")
    (team.repo / "train.py").write_text("print('tuned')\n")
    git(team.repo, "add", "train.py")
    git(team.repo, "commit", "-q", "-m", "tune")
    git(team.repo, "config", "push.followTags", "true")  # as `kgit init` sets it
    proc = run(team.repo, "git", "push", "--no-verify", "origin", "main")  # followTags brings the stage tag
    assert proc.returncode != 0 and "remote: kgit: rejected: new stage tag m#prod#5: #5 is not the next" in proc.stderr
    assert "remote: kgit: note: git takes or refuses a push whole" in proc.stderr
    proc = run(team.repo, "git", "push", "--no-verify", "--no-follow-tags", "origin", "main")
    assert proc.returncode == 0, proc.stderr
    assert git(team.origin, "rev-parse", "main") == git(team.repo, "rev-parse", "main")
    assert "m#prod#5" not in git(team.origin, "tag", "-l")


# -- the gates file ----------------------------------------------------------------------------------
def test_allow_rollback_is_a_boolean_per_entry() -> None:
    g = gates.parse(GATES + "    allow_rollback: true\n  m#prod:\n    require_better: [val.loss]\n")
    assert [(r.text, r.rollback_ok) for r in g.rules_for("m", "prod")] == [
        ("val.accuracy >= 0.85", False),
        ("better val.accuracy", True),
        ("better val.loss", False),
    ]
    with pytest.raises(KgitError, match="allow_rollback is 'yes please': use true or false"):
        gates.parse("stages:\n  prod:\n    allow_rollback: yes please\n")
    with pytest.raises(
        KgitError, match=r"known: require, require_better, min_relative_change, min_absolute_change, allow_rollback"
    ):
        gates.parse("stages:\n  prod:\n    allow_rollbacks: true\n")


def test_the_union_of_branches_keeps_every_rule_and_refuses_opposite_directions() -> None:
    main = gates.parse(GATES, "main")
    exp = gates.parse(
        "metrics:\n  val.loss: min\nstages:\n  prod:\n    require: ['val.loss <= 0.32']\n"
        "    require_better: [val.accuracy]\n    allow_rollback: true\n",
        "exp",
    )
    both = gates.union([("main", main), ("exp", exp)])
    assert [(r.text, r.rollback_ok) for r in both.rules_for("m", "prod")] == [
        ("val.accuracy >= 0.85", False),
        ("better val.accuracy", False),
        ("val.loss <= 0.32", False),
        ("better val.accuracy", True),
    ]
    assert gates.union([]) == gates.Gates()
    with pytest.raises(KgitError, match=r"says val.loss is better both ways \(main: min, other: max\)"):
        gates.union([("main", main), ("other", gates.parse("metrics:\n  val.loss: max\n"))])


# -- champion-relative rules: better than the stage's holder by a fraction or an amount -------------
CHAMPION = """\
stages:
  prod:
    min_relative_change: {val.accuracy: 0.01}
    min_absolute_change: {val.loss: 0.005}
"""


def champion_team(team: Team, gates_text: str = CHAMPION) -> Team:
    """``team`` with CHAMPION's rules (no `metrics:` section: val.loss is lower-is-better by its name)
    and m@v4..v7, whose metrics are also in their metadata, so `kgit promote` judges them too."""
    (team.repo / ".kgit/gates.yaml").write_text(gates_text)
    git(team.repo, "commit", "-q", "-am", "prod must beat its holder")
    for v, acc, loss in (("v4", 0.905, 0.29), ("v5", 0.91, 0.296), ("v6", 0.95, 0.2), ("v7", 0.9595, 0.195)):
        values = {"val.accuracy": acc, "val.loss": loss}
        synthetic.release(team.repo, "m", v, claims={"metrics": values}, meta={"metrics": values})
    # as in ``team``: the releases (which have no data) go in before the server hook
    assert kgit(team.repo, "server", "uninstall", str(team.origin)).returncode == 0
    assert run(team.repo, "git", "push", "-q", "--no-verify", "origin", "main", "--tags").returncode == 0
    assert kgit(team.repo, "server", "install", str(team.origin)).returncode == 0
    return team


def test_min_relative_and_absolute_change_are_judged_against_the_stage_holder(team: Team) -> None:
    t = champion_team(team)
    t.accepted(t.tag("m#prod#1", "v2"))  # nothing to beat yet
    # 0.905 is better than v2's 0.9, but not by 1 %: the refusal gives both numbers and the bar
    [line] = t.refused(t.tag("m#prod#2", "v4"))
    assert line.startswith("m#prod#2: m@v4 cannot go to prod: rule `val.accuracy ≥1% better` (.kgit/gates.yaml (at ")
    assert (
        "(prod)): val.accuracy 0.905 is not ≥1% better than prod holder m@v2's 0.9 (needs ≥ 0.909; higher is better)"
    ) in line
    assert "val.loss" not in line  # 0.29 is 0.01 below v2's 0.3: enough
    # lower is better for val.loss (its name says so): 0.296 is not 0.005 below 0.3
    [line] = t.refused(t.tag("m#prod#2", "v5"))
    assert (
        "rule `val.loss ≥0.005 better` (.kgit/gates.yaml (at " in line
        and "val.loss 0.296 is not ≥0.005 better than prod holder m@v2's 0.3 (needs ≤ 0.295; lower is better)" in line
    )
    assert "val.accuracy" not in line.split("cannot go to prod: ")[1]  # 0.91 >= 0.909
    t.accepted(t.tag("m#prod#2", "v6"))
    # exactly at the bar passes (0.95 * 1.01 = 0.9595, 0.2 - 0.005 = 0.195), whatever binary rounding says
    t.accepted(t.tag("m#prod#3", "v7"))


def test_champion_rules_compare_with_the_last_holder_after_a_demote_and_bind_rollbacks(team: Team) -> None:
    t = champion_team(team)
    t.accepted(t.tag("m#prod#1", "v6"), t.tag("m#prod!#2", "v6"))
    # prod is empty, but v7's successor must still beat v6, which held it last
    [line] = t.refused(t.tag("m#prod#3", "v5"))
    assert (
        "val.accuracy 0.91 is not ≥1% better than last prod holder m@v6 (demoted since)'s 0.95 (needs ≥ 0.9595" in line
    )
    t.accepted(t.tag("m#prod#3", "v7"))
    # a rollback to v6 is judged by them too, unless the entry sets allow_rollback
    [line] = t.refused(t.tag("m#prod#4", "v6", rollback_message("v6")))
    assert (
        "val.accuracy 0.95 is not ≥1% better than prod holder m@v7's 0.9595" in line
        and "`allow_rollback: true`" in line
    )
    (t.repo / ".kgit/gates.yaml").write_text(CHAMPION + "    allow_rollback: true\n")
    git(t.repo, "commit", "-q", "-am", "prod may roll back")
    assert run(t.repo, "git", "push", "-q", "--no-verify", "origin", "main").returncode == 0
    t.accepted(t.tag("m#prod#4", "v6", rollback_message("v6")))


def test_kgit_promote_refuses_with_the_numbers_before_any_validation(team: Team) -> None:
    from conftest import assert_refused

    t = champion_team(team)
    t.accepted(t.tag("m#prod#1", "v6"))
    line = assert_refused(
        t.repo,
        "promote",
        "m@v5",
        "prod",
        expect="val.accuracy 0.91 is not ≥1% better than prod holder m@v6's 0.95 (needs ≥ 0.9595",
    )
    assert "val.loss 0.296 is not ≥0.005 better than prod holder m@v6's 0.2 (needs ≤ 0.195; lower is better)" in line


def test_champion_rules_are_parsed_and_their_values_checked() -> None:
    g = gates.parse(CHAMPION + "    allow_rollback: true\n  m#prod:\n    min_relative_change: {val.auc: 0}\n")
    assert [(r.key, r.op, r.value, r.rollback_ok, r.text) for r in g.rules_for("m", "prod")] == [
        ("val.accuracy", "relative", 0.01, True, "val.accuracy ≥1% better"),
        ("val.loss", "absolute", 0.005, True, "val.loss ≥0.005 better"),
        ("val.auc", "relative", 0.0, False, "val.auc ≥0% better"),
    ]
    for text, says in [
        (
            "stages:\n  prod:\n    min_relative_change: [val.accuracy]\n",
            "prod.min_relative_change must map metric keys to numbers",
        ),
        (
            "stages:\n  prod:\n    min_absolute_change: {val.loss: -0.1}\n",
            "min_absolute_change val.loss is -0.1: use a number >= 0",
        ),
        ("stages:\n  prod:\n    min_absolute_change: {val.loss: much}\n", "val.loss is 'much' (str), not a number"),
        ("stages:\n  prod:\n    min_relative_change: {'a b': 0.1}\n", "is not a valid metric name"),
        ("stages:\n  prod:\n    min_relative_change: {val.auc: .nan}\n", "not a finite number"),
    ]:
        with pytest.raises(KgitError) as exc:
            gates.parse(text)
        assert says in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


@pytest.mark.parametrize(
    "old, value, direction, op, amount, passes",
    [
        (0.9, 0.909, "max", "relative", 0.01, True),  # 0.9 * 1.01 is 0.9090000000000001 in binary
        (0.9, 0.9089, "max", "relative", 0.01, False),
        (-2.0, -1.98, "max", "relative", 0.01, True),  # relative to |old|
        (-2.0, -1.99, "max", "relative", 0.01, False),
        (0.3, 0.297, "min", "relative", 0.01, True),
        (0.3, 0.2971, "min", "relative", 0.01, False),
        (0.0, 0.001, "max", "relative", 0.5, True),  # nothing to take a fraction of: any strict improvement
        (0.0, 0.0, "max", "relative", 0.5, False),
        (0.3, 0.3, "min", "absolute", 0.0, True),  # 0: at least as good
        (0.3, 0.2951, "min", "absolute", 0.005, False),
    ],
)
def test_better_by_a_fraction_or_an_amount(
    old: float, value: float, direction: str, op: str, amount: float, passes: bool
) -> None:
    assert gates.passes_change(gates.Rule("k", op, amount), value, old, direction) is passes
