"""Attacks on release identity with ordinary git and DVC commands, refused by kgit's client side.

Each test reproduces one attack from the threat model (docs/threat-model.md): tag replaced (1),
shadow/downgrade tags (2), data lost before the push (3), a repository-controlled hook command (6),
malformed tags isolated to their release (8). The server-side half is in test_server_hook.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import snapshot
from support.world import World, forge_tag, git, has_version_data, kgit, run, tag_message

pytestmark = pytest.mark.slow

V1 = "m@v1.0.0"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, plain_model) -> World:  # type: ignore[no-untyped-def]
    """m@v1 released and pushed (hook: validated, data uploaded), m@v2 released and pushed."""
    import kgit as api

    w = World.create(tmp_path_factory.mktemp("world"))
    api.release(plain_model, "m", formats=["keras"], repo=w.repo)
    api.release(plain_model, "m", formats=["keras"], repo=w.repo, notes="second")
    proc = w.push("main")
    assert proc.returncode == 0, proc.stderr
    assert sorted(w.origin_tags()) == ["m@v1.0.0", "m@v2.0.0"]
    return w


@pytest.fixture
def w(world: World, tmp_path: Path) -> World:
    return world.copy(tmp_path / "w")


def one_line_error(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kgit: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# -- 1. tag replaced -----------------------------------------------------------------------------
def test_re_release_after_deleting_the_tag_locally_is_refused(w: World) -> None:
    """The clone saw m@v1: deleting the tag does not free the version for another model."""
    import kgit as api
    from kgit.core.errors import VersionExistsError

    git(w.repo, "tag", "-d", V1)
    before = snapshot(w.repo)
    with pytest.raises(VersionExistsError, match="already released"):
        api.release("support.zoo:plain_model", "m", formats=["keras"], version="v1", repo=w.repo)
    assert snapshot(w.repo) == before


def test_force_pushed_or_deleted_release_tag_is_refused_by_pre_push(w: World) -> None:
    v1 = w.origin_tags()[V1]
    # a different tag object under the same name (what a re-release with origin unreachable makes)
    forge_tag(w.repo, V1, git(w.repo, "rev-parse", f"{V1}^{{commit}}"), tag_message(w.repo, V1) + "\nagain\n")
    proc = w.push("--force", f"refs/tags/{V1}")
    assert proc.returncode != 0
    assert f"moving the release tag {V1}" in proc.stderr
    proc = w.push(f":refs/tags/{V1}")
    assert proc.returncode != 0 and f"deleting the release tag {V1}" in proc.stderr
    proc = w.push(":refs/tags/m#prod#1")  # not there: git itself refuses; nothing changes either way
    assert w.origin_tags()[V1] == v1


def test_replaced_tag_fetched_into_a_clone_that_saw_it_is_refused_everywhere(w: World) -> None:
    other = w.clone("other")
    assert kgit(other, "list").returncode == 0  # this clone has now seen m@v1
    # the attacker skips the client hook and overwrites the tag on origin
    forge_tag(w.repo, V1, git(w.repo, "rev-parse", f"{V1}^{{commit}}"), tag_message(w.repo, V1) + "\nreplaced\n")
    assert w.push("--no-verify", "--force", f"refs/tags/{V1}").returncode == 0  # no server hook here
    git(other, "fetch", "-q", "--force", "--tags", "origin")
    listed = json.loads(kgit(other, "list", "--json").stdout)
    assert [r["status"].startswith("invalid: tag m@v1.0.0 changed since") for r in listed] == [True, False]
    for args in (
        ["get", "m@v1"],
        ["validate", "m@v1"],
        ["show", "m@v1"],
        ["promote", "m@v1", "prod"],
        ["diff", "m@v1", "m@v2"],
    ):
        before = snapshot(other)
        line = one_line_error(kgit(other, *args))
        assert "changed since this clone first saw it" in line, (args, line)
        assert snapshot(other) == before
    load = run(other, sys.executable, "-c", "import kgit; kgit.load('m', 'v1')")
    assert load.returncode != 0 and "InvalidReleaseError" in load.stderr
    assert "changed since this clone first saw it" in load.stderr
    # the untouched version still works
    assert kgit(other, "get", "m@v2").returncode == 0


# -- 2. shadow / downgrade ---------------------------------------------------------------------
@pytest.mark.parametrize("claims", ["v99", "v1"])
def test_tag_whose_message_claims_another_version_is_invalid(w: World, claims: str) -> None:
    message = tag_message(w.repo, V1).replace('"version": "v1"', f'"version": "{claims}"')
    forge_tag(w.repo, "m@v0.0.3", git(w.repo, "rev-parse", f"{V1}^{{commit}}"), message)
    listed = {r["tag"]: r for r in json.loads(kgit(w.repo, "list", "--json").stdout)}
    shadow = listed["m@v0.0.3"]
    assert shadow["version"] == "v0.0.3"  # the tag name is the identity
    assert shadow["status"] == f"invalid: its message says {claims}, its name says v0.0.3"
    assert "not valid releases" in kgit(w.repo, "list").stderr
    import kgit as api

    assert api.show("m", "latest", repo=w.repo).metadata.version == "v2"  # never the shadow
    for args in (
        ["get", "m@v0.0.3"],
        ["validate", "m@v0.0.3"],
        ["promote", "m@v0.0.3", "prod"],
        ["diff", "m@v0.0.3", "m@v2"],
    ):
        line = one_line_error(kgit(w.repo, *args))
        assert f"its message says {claims}, its name says v0.0.3" in line, (args, line)
    proc = w.push("refs/tags/m@v0.0.3")
    assert proc.returncode != 0 and "not a valid release" in proc.stderr
    assert "m@v0.0.3" not in w.origin_tags()


def test_consistent_message_but_wrong_commit_is_invalid(w: World) -> None:
    """A high version whose message is rewritten to match, pointing at v1's commit: the .dvc files
    there are v1's, so the tag cannot be a release of v7 (and latest never resolves to it)."""
    message = tag_message(w.repo, V1).replace('"version": "v1"', '"version": "v7"').replace('/v1"', '/v7"')
    forge_tag(w.repo, "m@v7.0.0", git(w.repo, "rev-parse", f"{V1}^{{commit}}"), message)
    line = one_line_error(kgit(w.repo, "get", "m@v7"))
    assert "has no artifacts/m/keras/v7.dvc" in line
    # resolving `latest` checks git too: the forged v7 never wins
    import kgit as api

    assert api.show("m", "latest", repo=w.repo).metadata.version == "v2"


def test_replayed_release_under_another_tag_is_refused(w: World) -> None:
    """v2's commit (its .dvc files, metadata and any signature) tagged as v5: metadata binds the version."""
    v2 = "m@v2.0.0"
    # a commit that copies v2's folder pointer to v5's path, unchanged inside
    (w.repo / "artifacts/m/keras/v5.dvc").write_text((w.repo / "artifacts/m/keras/v2.dvc").read_text())
    git(w.repo, "add", "-f", "artifacts/m/keras/v5.dvc")
    git(w.repo, "commit", "-q", "--no-verify", "-m", "replay")
    message = tag_message(w.repo, v2).replace('"version": "v2"', '"version": "v5"').replace('/v2"', '/v5"')
    forge_tag(w.repo, "m@v5.0.0", "HEAD", message)
    line = one_line_error(kgit(w.repo, "show", "m@v5"))
    assert "metadata says m:v2:keras, the tag says m:v5:keras" in line


# -- 3. data lost before the push ----------------------------------------------------------------
def test_release_whose_cache_was_emptied_is_not_pushed_or_recorded(w: World, plain_model) -> None:  # type: ignore[no-untyped-def]
    import kgit as api

    rec = api.release(plain_model, "m", formats=["keras"], repo=w.repo)
    md5 = rec.formats["keras"]["md5"]
    # check out a commit without v3, garbage-collect the cache for that work tree, come back
    git(w.repo, "checkout", "-q", "HEAD~1")
    gc = run(w.repo, sys.executable, "-m", "dvc", "gc", "-w", "-f")
    assert gc.returncode == 0, gc.stderr
    git(w.repo, "checkout", "-q", "main")
    before_tags, before_store = w.origin_tags(), sorted(p.name for p in w.store.rglob("*"))
    proc = w.push("main")
    assert proc.returncode != 0
    assert "m@v3 (keras) is not in the local DVC cache" in proc.stderr
    assert w.origin_tags() == before_tags and "m@v3.0.0" not in w.origin_tags()
    assert sorted(p.name for p in w.store.rglob("*")) == before_store
    assert not has_version_data(w.store, md5)
    published = json.loads((w.repo / ".git/kgit/published.json").read_text())
    assert all(md5 not in v for v in published.values())


# -- 6. the hook never runs a command from the repository ----------------------------------------
def test_altered_validation_stage_is_refused_by_the_hook(w: World, plain_model) -> None:  # type: ignore[no-untyped-def]
    import kgit as api

    api.release(plain_model, "m", formats=["keras"], repo=w.repo)
    # a pulled commit changes the stage's command
    text = (w.repo / "dvc.yaml").read_text().replace("cmd: kgit validate --all", "cmd: touch PWNED")
    assert "touch PWNED" in text
    (w.repo / "dvc.yaml").write_text(text)
    git(w.repo, "commit", "-q", "--no-verify", "-am", "tweak the stage")
    # validation is needed (forget that v3 was validated at release)
    (w.repo / ".git/kgit/validated.json").unlink()
    proc = w.push("main")
    assert proc.returncode != 0
    assert "the kgit-validate stage in dvc.yaml is not kgit's (cmd: 'touch PWNED'" in proc.stderr
    assert not (w.repo / "PWNED").exists()
    assert "m@v3.0.0" not in w.origin_tags()


# -- 8. malformed tags are isolated to their release ---------------------------------------------
def test_malformed_tags_and_dvc_meta_break_only_their_release(w: World) -> None:
    commit = git(w.repo, "rev-parse", f"{V1}^{{commit}}")
    wrong_types = 'kgit release m v6\n\nkgit-release: {"name": "m", "version": 6, "formats": "x", "created_at": []}\n'
    forge_tag(w.repo, "m@v6.0.0", commit, wrong_types)
    deep = "kgit release m v8\n\nkgit-release: " + "[" * 100_000 + "]" * 100_000 + "\n"
    forge_tag(w.repo, "m@v8.0.0", commit, deep)
    # a .dvc file with deeply nested meta, behind a message that is otherwise right
    dvc = (w.repo / "artifacts/m/keras/v1.dvc").read_text()
    nested = "meta:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 3000)) + "  " * 3000 + "x: 1\n"
    (w.repo / "artifacts/m/keras/v9.dvc").write_text(dvc.split("meta:")[0] + nested)
    git(w.repo, "add", "-f", "artifacts/m/keras/v9.dvc")
    git(w.repo, "commit", "-q", "--no-verify", "-m", "nine")
    message = tag_message(w.repo, V1).replace('"version": "v1"', '"version": "v9"').replace('/v1"', '/v9"')
    forge_tag(w.repo, "m@v9.0.0", "HEAD", message)

    listed = {r["tag"]: r["status"] for r in json.loads(kgit(w.repo, "list", "--json").stdout)}
    assert listed["m@v1.0.0"] == listed["m@v2.0.0"] == "valid"
    assert listed["m@v6.0.0"].startswith("invalid: its message")
    assert listed["m@v8.0.0"] == "invalid: its message's summary is nested too deeply"
    for args in (["show", "m@v1"], ["history", "m"], ["get", "m@v1"], ["validate", "m@v1"], ["list"]):
        proc = kgit(w.repo, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    for ver in ("v6", "v8", "v9"):
        line = one_line_error(kgit(w.repo, "show", f"m@{ver}"))
        assert f"m@{ver}.0.0 is not a valid release" in line
    assert "nested too deeply" in one_line_error(kgit(w.repo, "show", "m@v9"))
    proc = kgit(w.repo, "validate", "--all", "--json")
    results = {r["version"]: r["status"] for r in json.loads(proc.stdout)}
    assert proc.returncode == 1
    assert {results["m@v1"], results["m@v2"]} <= {"passed", "cached"}
    assert [results[k] for k in ("m@v6.0.0", "m@v8.0.0", "m@v9")] == ["failed"] * 3


def test_moved_stage_tag_fetched_into_a_clone_that_saw_it_is_refused(w: World) -> None:
    assert kgit(w.repo, "promote", "m@v1", "prod").returncode == 0
    assert w.push("main", "m#prod#1").returncode == 0
    other = w.clone("other")
    assert kgit(other, "show", "m#prod").returncode == 0  # seen: prod is v1
    forge_tag(w.repo, "m#prod#1", git(w.repo, "rev-parse", "m@v2.0.0^{commit}"), "moved to v2\n")
    proc = w.push("--force", "refs/tags/m#prod#1")
    assert proc.returncode != 0 and "moving the stage/deprecation tag m#prod#1" in proc.stderr
    assert w.push("--no-verify", "--force", "refs/tags/m#prod#1").returncode == 0  # no server hook here
    git(other, "fetch", "-q", "--force", "--tags", "origin")
    line = one_line_error(kgit(other, "get", "m#prod"))
    assert "stage prod of m cannot be trusted: tag m#prod#1 changed since this clone first saw it" in line
