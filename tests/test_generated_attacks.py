"""Generated attacks on the server guard: random sequences of ordinary git operations by two
teammates, each ending with a real `git push` to a guarded bare repository holding real releases,
and after every push the invariant (tests/support/invariant.py), checked with plain git alone.

Whether a push was accepted does not matter: only the state it leaves. The operations are in
tests/support/attacks.py; the distinct cases found are kept, shrunk, in test_invariant_cases.py.

KGIT_ATTACK_EXAMPLES=N changes the number of examples (default 25: about 70 s here when nothing
breaks); KGIT_ATTACK_EXPLORE=1 (with pytest --runxfail) shrinks failures and reports each broken
clause separately. The examples are derandomized: the same source gives the same run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from support.attacks import (
    BRANCH_OPS,
    MERGES,
    ODD_HEADERS,
    OTHER_REFS,
    REWRITES,
    TAG_NAMES,
    TAG_STYLES,
    TAG_TARGETS,
    TARGETS,
    TOUCH,
    Branches,
    Merge,
    NewRelease,
    OtherRefs,
    Rewrite,
    TagOp,
    TouchReleased,
    Work,
)
from support.invariant import Oracle, cli_problems, plain_git, raise_first
from support.sandbox import PushFlags, Sandbox

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("KGIT_ATTACK_EXAMPLES", "25"))
EXPLORE = os.environ.get("KGIT_ATTACK_EXPLORE") == "1"
STATS: Counter[str] = Counter()
ORACLE_SECONDS = [0.0]  # time spent checking the invariant

who = st.integers(0, 1)
small = st.integers(0, 5)
flags = st.builds(PushFlags, force=st.booleans(), no_verify=st.sampled_from([True, True, False]))
forced = st.builds(PushFlags, force=st.just(True), no_verify=st.sampled_from([True, True, False]))

operation = st.one_of(
    st.builds(Work, who, small, st.booleans(), flags, st.booleans()),
    st.builds(TouchReleased, who, small, small, st.sampled_from(TOUCH), st.booleans(), flags, st.booleans()),
    st.builds(Merge, who, small, small, st.sampled_from(MERGES), small, st.booleans(), flags, st.booleans()),
    st.builds(Rewrite, who, small, st.sampled_from(REWRITES), st.integers(1, 3), forced, st.booleans()),
    st.builds(Branches, who, st.sampled_from(BRANCH_OPS), small, st.sampled_from(TARGETS), small, flags),
    st.builds(
        TagOp,
        who,
        st.integers(0, len(TAG_NAMES) - 1),
        st.sampled_from(TAG_TARGETS),
        st.sampled_from(TAG_STYLES),
        st.sampled_from(ODD_HEADERS),
        small,
        st.booleans(),
        flags,
    ),
    st.builds(OtherRefs, who, st.sampled_from(OTHER_REFS), small, flags),
)
# a real `kgit release` costs 15-25 s here: about one step in eighty
step = st.integers(0, 79).flatmap(lambda n: st.builds(NewRelease, who, small) if n == 79 else operation)

_CLI_SEEN: dict[str, list[tuple[str, str]]] = {}


def check_invariant(box: Sandbox) -> None:
    """Clauses (a)-(f) after every push; (g) whenever the tags (or HEAD) are in a state not yet
    tried (the same steps give the same object ids: their dates are fixed)."""
    started = time.monotonic()
    problems = box.oracle.problems(box.origin)
    state = plain_git(box.origin, "for-each-ref", "--format=%(objectname) %(refname)", "refs/tags")
    state += plain_git(box.origin, "rev-parse", "-q", "--verify", "HEAD", check=False)
    if state not in _CLI_SEEN:
        STATS["cli checks"] += 1
        _CLI_SEEN[state] = cli_problems(box.origin, box.base / f"probe{box.pushes}")
    problems += _CLI_SEEN[state]
    ORACLE_SECONDS[0] += time.monotonic() - started
    raise_first(problems, box.transcript)


@pytest.fixture(scope="module", autouse=True)
def report(pytestconfig: pytest.Config) -> Iterator[None]:
    started = time.monotonic()
    yield
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\ngenerated attacks: {STATS['examples']} examples, {STATS['steps']} steps, {STATS['pushes']} pushes "
            f"({STATS['accepted']} accepted), {STATS['releases']} kgit releases, {STATS['cli checks']} kgit list/check probes, "
            f"oracle {ORACLE_SECONDS[0]:.1f} s, total {time.monotonic() - started:.1f} s"
        )


def test_the_oracle_holds_after_the_releases_and_sees_each_clause_broken_without_the_hook(
    attack_world: tuple[Path, Oracle], tmp_path: Path
) -> None:
    """The oracle can fail: on a copy whose origin has no kgit hook, plain pushes break (a)-(f)."""
    base, oracle = attack_world
    box = Sandbox.copy_of(base, tmp_path / "w", oracle)
    assert box.oracle.problems(box.origin) == [] and cli_problems(box.origin, tmp_path / "probe") == []
    assert box.origin.joinpath("hooks", "pre-receive").exists()
    box.origin.joinpath("hooks", "pre-receive").unlink()
    # (b), (c): m@v2's branch with its .dvc changed; (c) alone: a branch from before the releases
    box.git("ana", "checkout", "-q", "-B", "b1", "m@v2.0.0")
    box.write("ana", "artifacts/m/keras/v2.dvc", "outs:\n- md5: 0\n")
    box.git("ana", "commit", "-q", "--no-verify", "-am", "not m@v2")
    box.git("ana", "checkout", "-q", "-B", "b2", "origin/old")
    box.write("ana", "artifacts/n/keras/v1.dvc", "outs:\n- md5: 0\n")
    box.git("ana", "add", "-f", "artifacts")
    box.git("ana", "commit", "-q", "--no-verify", "-m", "not n@v1")
    assert box.push("ana", "--no-verify", "origin", "b1", "b2")
    # (d): n@v1 on no branch (b1 still holds m@v1 and m@v2)
    assert box.push("ana", "--no-verify", "--force", "origin", "origin/old:refs/heads/main", ":refs/heads/dev")
    assert box.push("ana", "--no-verify", "origin", "HEAD:refs/foo/bar", "HEAD:refs/tags/m@v01.0.0")  # (e), (f)
    assert box.push("ana", "--no-verify", "--no-follow-tags", "origin", ":refs/tags/n@v1.0.0")  # (a)
    clauses = {clause for clause, _ in box.oracle.problems(box.origin)}
    assert clauses == set("abcdef"), (
        "\n".join(map(str, box.oracle.problems(box.origin))) + "\n" + "\n".join(box.transcript)
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=EXPLORE,
    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if EXPLORE else [])],
)
@given(steps=st.lists(step, min_size=1, max_size=6))
# one real release in every run: a version released during the attacks is kept like the others
@example(steps=[NewRelease(who=0, branch=0), TouchReleased(who=1, branch=0, file=3, how="rename")])
def test_no_sequence_of_pushes_breaks_a_release(
    attack_world: Any,
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[object],
) -> None:
    base, oracle = attack_world
    box = Sandbox.copy_of(base, Path(tmp_path_factory.mktemp("attack")) / "w", oracle)
    STATS["examples"] += 1
    try:
        for op in steps:
            STATS["steps"] += 1
            STATS["releases"] += isinstance(op, NewRelease)
            op.apply(box)  # type: ignore[attr-defined]
            check_invariant(box)
    finally:
        STATS["pushes"] += box.pushes
        STATS["accepted"] += box.accepted
        shutil.rmtree(box.base.parent, ignore_errors=True)
