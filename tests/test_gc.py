"""kgit gc: whatever the history and the policy, no object a kept release needs is ever deleted.

The decision (kgit.workflow.retention: choose, doomed, unprovable) is attacked with generated
histories: models with many versions whose folders share objects (unchanged tensors, the same
reference data), stages, signatures, refs, listings that cannot be read, outputs outside the
releases. Then real releases, a real DVC cache and remote: the kept versions validate and fetch on a
fresh clone, the collected one is reported as collected.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgit.registry.versions import Version
from kgit.workflow.retention import Holding, Policy, choose, doomed, objects_of, unprovable

OBJECTS = [f"{i:032x}" for i in range(12)]  # file objects, shared freely between versions


@st.composite
def histories(draw: Any) -> tuple[list[Holding], dict[str, list[str]], dict[str, list[str] | None], set[str], Policy]:
    """Releases (some invalid), the true listing of every directory object, what gc could read of
    them, objects of outputs outside the releases, and a policy."""
    holdings: list[Holding] = []
    truth: dict[str, list[str]] = {}
    n = 0
    for model in draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)):
        for major in draw(st.lists(st.integers(1, 9), min_size=1, max_size=6, unique=True)):
            tops = []
            for _fmt in range(draw(st.integers(1, 2))):
                n += 1
                top = f"{n:032x}.dir"
                truth[top] = draw(st.lists(st.sampled_from(OBJECTS), min_size=1, max_size=5, unique=True))
                tops.append(top)
            holdings.append(
                Holding(
                    tag=f"{model}@v{major}.0.0",
                    name=model,
                    version=None if draw(st.integers(0, 9)) == 0 else Version(major),
                    tops=tuple(tops),
                    staged=draw(st.booleans()),
                    signed=draw(st.booleans()),
                    reachable=draw(st.booleans()),
                    here=draw(st.integers(0, 5)) == 0,
                )
            )
    readable = {top: (files if draw(st.integers(0, 6)) else None) for top, files in truth.items()}
    protected_files = set(draw(st.lists(st.sampled_from(OBJECTS), max_size=3)))
    policy = Policy(
        keep_last=draw(st.one_of(st.none(), st.integers(0, 3))),
        keep_stages=draw(st.booleans()),
        keep_signed=draw(st.booleans()),
        keep_refs=("main",) if draw(st.booleans()) else (),
    )
    if not policy.keep_refs:  # a release is reachable from the policy's refs only if there are refs
        holdings = [Holding(h.tag, h.name, h.version, h.tops, h.staged, h.signed, False, h.here) for h in holdings]
    return holdings, truth, readable, protected_files, policy


@given(histories())
@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_history_and_no_policy_deletes_what_a_kept_release_needs(
    history: tuple[list[Holding], dict[str, list[str]], dict[str, list[str] | None], set[str], Policy],
) -> None:
    holdings, truth, readable, protected_files, policy = history
    kept = choose(holdings, policy)
    if unprovable(holdings, kept, readable):
        return  # gc refuses to delete anything: nothing to check (the refusal is tested below)
    gone = doomed(holdings, kept, readable, protected_files)
    for h in holdings:
        needed = objects_of(h.tops, truth)  # what it really needs, readable or not
        if kept[h.tag]:
            assert not needed & gone, (h.tag, kept[h.tag], needed & gone)
    assert not protected_files & gone
    dropped_objects = set().union(*(objects_of(h.tops, truth) for h in holdings if not kept[h.tag]))
    assert gone <= dropped_objects  # only what a dropped release has


@given(histories())
@settings(max_examples=examples(300), deadline=None)
def test_the_policy_keeps_what_it_says(
    history: tuple[list[Holding], dict[str, list[str]], dict[str, list[str] | None], set[str], Policy],
) -> None:
    holdings, _truth, _readable, _protected, policy = history
    kept = choose(holdings, policy)
    for h in holdings:
        if h.version is None or h.here or (policy.keep_stages and h.staged) or (policy.keep_signed and h.signed):
            assert kept[h.tag], h
        if h.reachable:
            assert kept[h.tag], h
    for model in {h.name for h in holdings}:
        valid = sorted((h for h in holdings if h.name == model and h.version is not None), key=lambda h: h.version)  # type: ignore[arg-type,return-value]
        newest = valid[::-1][: len(valid) if policy.keep_last is None else policy.keep_last]
        assert all(kept[h.tag] for h in newest)
        for h in valid:
            if not kept[h.tag]:  # dropped: none of the reasons applies
                assert h not in newest and not h.here and not h.reachable
                assert not (policy.keep_stages and h.staged) and not (policy.keep_signed and h.signed)


def test_a_kept_release_whose_listing_is_unreadable_stops_the_plan() -> None:
    shared = OBJECTS[0]
    old = Holding("m@v1.0.0", "m", Version(1), ("1".zfill(32) + ".dir",))
    new = Holding("m@v2.0.0", "m", Version(2), ("2".zfill(32) + ".dir",))
    listings: dict[str, list[str] | None] = {old.tops[0]: [shared], new.tops[0]: None}
    kept = choose([old, new], Policy(keep_last=1, keep_stages=False, keep_signed=False))
    assert kept[old.tag] == [] and kept[new.tag] == ["one of the last 1"]
    assert unprovable([old, new], kept, listings) == ["m@v2.0.0"]
    # had gc gone on, the shared object would have gone: the refusal is what protects it
    assert shared in doomed([old, new], kept, listings)


# -- real releases, a real DVC cache and remote ---------------------------------------------------------
def _objects(store: Path) -> set[str]:
    base = store / "files" / "md5"
    return {p.parent.name + p.name for p in base.glob("*/*")} if base.exists() else set()


def _version_objects(store: Path, md5: str) -> set[str]:
    listing = store / "files" / "md5" / md5[:2] / md5[2:]
    return {md5} | {e["md5"] for e in json.loads(listing.read_text())}


def _listed_collected(repo: Path) -> set[str]:
    """The releases `kgit list` marks collected, in its table and in its JSON (which must agree)."""
    from conftest import kgit

    table = kgit(repo, "list").stdout.splitlines()
    header = table[0].split()
    marked = {
        f"{cells[0]}@{cells[1]}"
        for cells in (line.split() for line in table[1:])
        if "status" in header and cells[-1] == "collected"
    }
    listed = json.loads(kgit(repo, "list", "--json").stdout)
    in_json = {r["tag"] for r in listed if r["collected"] is not None}
    assert {t.replace(".0.0", "") for t in in_json} == marked, (table, in_json)
    return in_json


@pytest.mark.slow
def test_gc_collects_only_what_dropped_releases_alone_have(tmp_path: Path, plain_model: Any) -> None:
    import keras
    import numpy as np
    from conftest import kgit
    from support.world import World, dvc_md5, git

    import kgit as api

    (tmp_path / "w").mkdir()
    w = World.create(tmp_path / "w")
    model = keras.models.clone_model(plain_model)
    model.set_weights(plain_model.get_weights())
    tags, labels = [], {}
    for i in range(4):
        weights = model.get_weights()
        weights[-1] = weights[-1] + np.float32(0.01 * (i + 1))  # the head changes; the rest is shared
        model.set_weights(weights)
        record = api.release(model, "m", formats=["keras"], repo=w.repo)
        tags.append(record.tag)
        labels[record.tag] = record.version
        info = record.formats["keras"]
        # what the version added: everything at first; then all but the files it shares with v1
        # (its reference inputs: the model file and the outputs changed with the head)
        inputs = (w.repo / info["path"] / "reference_inputs.npz").stat().st_size
        assert info["new_bytes"] == (info["size"] if i == 0 else info["size"] - inputs), (i, info)
    api.promote("m@v1", "prod", repo=w.repo)
    # a dataset outside the releases holding the same bytes as v2's model file: never a candidate
    import shutil
    import subprocess

    (w.repo / "data").mkdir()
    shutil.copy(w.repo / "artifacts" / "m" / "keras" / labels[tags[1]] / "model.keras", w.repo / "data" / "copy.keras")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/copy.keras"], cwd=w.repo, check=True)
    git(w.repo, "add", "data")
    git(w.repo, "commit", "-q", "-m", "a dataset")
    proc = w.push("main", "--tags")
    assert proc.returncode == 0, proc.stderr
    shown = kgit(w.repo, "show", "m@v2")
    assert " new, " in shown.stdout and "unchanged from earlier versions" in shown.stdout, shown.stdout
    md5 = {t: dvc_md5(w.repo, f"artifacts/m/keras/{labels[t]}.dvc") for t in tags}
    dataset = dvc_md5(w.repo, "data/copy.keras.dvc")
    before_remote, before_cache = _objects(w.store), _objects(w.repo / ".dvc" / "cache")
    # v2 (not staged, not among the last 2) is dropped; the work tree holds v1..v4: take v2 out of it
    shutil.rmtree(w.repo / "artifacts" / "m" / "keras" / labels["m@v2.0.0"])

    plan = kgit(w.repo, "gc", "--keep-last", "2", "--remote", "", "--json")
    assert plan.returncode == 0, plan.stderr
    result = json.loads(plan.stdout)
    assert result["dry_run"] and result["dropped"] == ["m@v2.0.0"], result
    kept_objects = set().union(*(_version_objects(w.store, md5[t]) for t in tags if t != "m@v2.0.0"))
    v2_only = _version_objects(w.store, md5["m@v2.0.0"]) - kept_objects - {dataset}
    assert (
        v2_only
        and dataset in _version_objects(w.store, md5["m@v2.0.0"])
        and [s["objects"] for s in result["stores"]] == [len(v2_only), len(v2_only)]
    )
    assert _objects(w.store) == before_remote and _objects(w.repo / ".dvc" / "cache") == before_cache  # a dry run

    done = kgit(w.repo, "gc", "--keep-last", "2", "--remote", "", "--delete")
    assert done.returncode == 0, done.stderr
    assert "reclaimed" in done.stdout
    assert _objects(w.store) == before_remote - v2_only
    assert _objects(w.repo / ".dvc" / "cache") == before_cache - v2_only
    # listed as collected (git only), with when and why; never as broken
    assert _listed_collected(w.repo) == {"m@v2.0.0"}
    shown = kgit(w.repo, "show", "m@v2")
    assert "collected by kgit gc on " in shown.stdout and "keep the last 2 of each model" in shown.stdout, shown.stdout
    assert json.loads(kgit(w.repo, "show", "m@v2", "--json").stdout)["collected"]["policy"]
    # every kept release is whole in the remote, and fetches and validates on a fresh clone
    fresh = w.clone("fresh")
    assert _listed_collected(fresh) == set()  # nothing read from the remote yet
    for t in tags:
        if t == "m@v2.0.0":
            continue
        got = kgit(fresh, "get", t.replace(".0.0", ""))
        assert got.returncode == 0, got.stderr
    checked = kgit(fresh, "validate", "--all", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    statuses = {r["version"]: r["status"] for r in json.loads(checked.stdout)}
    assert statuses == {"m@v1": "passed", "m@v2": "collected", "m@v3": "passed", "m@v4": "passed"}, statuses
    assert _listed_collected(fresh) == {"m@v2.0.0"}  # learnt from gc's record in the remote
    # the collected one says so, on every clone, and kgit check does not call it missing
    got = kgit(fresh, "get", "m@v2")
    assert got.returncode == 1 and "collected by kgit gc" in got.stderr, got.stderr
    check = kgit(fresh, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert dataset in _objects(w.store)  # the dataset outside the releases was never a candidate
    # and a second gc finds nothing more
    again = kgit(w.repo, "gc", "--keep-last", "2", "--remote", "", "--json")
    assert [s["objects"] for s in json.loads(again.stdout)["stores"]] == [0, 0]
