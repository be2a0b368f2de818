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
        server = [line.split("kgit: rejected: ", 1)[1].rstrip() for line in proc.stderr.splitlines() if "kgit: rejected: " in line]
        assert (proc.returncode == 0) == (server == []), proc.stderr
        return client, server

    def refused(self, *tags: str) -> list[str]:
        """Both refuse, with the same words (the server says "new stage tag" first); the lines."""
        client, server = self.judge(*tags)
        assert client and server == [f"new {'deprecation' if '@' in c.split(':')[0] else 'stage'} tag {c}" for c in client]
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
        "promote/rollback/demote/deprecate"]
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
        "m#dev#3", "m#prod#1", "m#staging#2", "m@v1.0.0!#4"]


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
    assert ("m#prod#3: m@v3 cannot go to prod: rule `better val.accuracy` (.kgit/gates.yaml (at " in line
            and "m@v3 has val.accuracy 0.88, m@v2 (the last version in prod) has 0.9; higher is better" in line)
    team.accepted(team.tag("m#prod#3", "v2"))  # the same version again: nothing to beat


def test_a_rollback_skips_require_better_only_where_allow_rollback_is_set(team: Team) -> None:
    team.accepted(team.tag("m#prod#1", "v3"), team.tag("m#prod#2", "v2"))
    # back to v3, which held prod: a rollback, but the committed gates do not allow one below v2
    [line] = team.refused(team.tag("m#prod#3", "v3", rollback_message("v3")))
    assert ("m@v3 has val.accuracy 0.88, m@v2 (in the stage now) has 0.9; higher is better (a rollback skips "
            "require_better only where the stage's entry in .kgit/gates.yaml sets `allow_rollback: true`)") in line
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
    assert line == ("m#prod#2: its message says it rolls prod back to m@v3, which never held prod: a rollback goes "
                    "back to a version that held the stage (promote this one instead)")
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
    assert ("kgit: note: HEAD names refs/heads/master, which does not exist: the promotion gates of every branch "
            "apply (2 branch(es)); point HEAD at the team's branch in the bare repository: "
            "git symbolic-ref HEAD refs/heads/main") in proc.stderr


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
        ("val.accuracy >= 0.85", False), ("better val.accuracy", True), ("better val.loss", False)]
    with pytest.raises(KgitError, match="allow_rollback is 'yes please': use true or false"):
        gates.parse("stages:\n  prod:\n    allow_rollback: yes please\n")
    with pytest.raises(KgitError, match=r"known: require, require_better, allow_rollback"):
        gates.parse("stages:\n  prod:\n    allow_rollbacks: true\n")


def test_the_union_of_branches_keeps_every_rule_and_refuses_opposite_directions() -> None:
    main = gates.parse(GATES, "main")
    exp = gates.parse("metrics:\n  val.loss: min\nstages:\n  prod:\n    require: ['val.loss <= 0.32']\n"
                      "    require_better: [val.accuracy]\n    allow_rollback: true\n", "exp")
    both = gates.union([("main", main), ("exp", exp)])
    assert [(r.text, r.rollback_ok) for r in both.rules_for("m", "prod")] == [
        ("val.accuracy >= 0.85", False), ("better val.accuracy", False), ("val.loss <= 0.32", False),
        ("better val.accuracy", True)]
    assert gates.union([]) == gates.Gates()
    with pytest.raises(KgitError, match=r"says val.loss is better both ways \(main: min, other: max\)"):
        gates.union([("main", main), ("other", gates.parse("metrics:\n  val.loss: max\n"))])
