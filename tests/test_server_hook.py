"""The server-side guard: kgit's pre-receive hook in a real bare repository, real `git push`es
(with --no-verify --force, as an attacker or a careless teammate would), a real DVC remote folder.
And `kgit check`, the same checks in a clone for forges without server hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bare_origin, snapshot
from support.world import World, dvc_md5, forge_tag, git, kgit, run, tag_message

pytestmark = pytest.mark.slow

V1 = "m@v1.0.0"


@pytest.fixture
def w(guarded_world: World, tmp_path: Path) -> World:
    """A copy of the guarded origin with m@v1 released and pushed through it (tests/conftest.py)."""
    return guarded_world.copy(tmp_path / "w")


def rejected(proc, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode != 0, proc.stderr
    assert "pre-receive hook declined" in proc.stderr, proc.stderr
    assert f"remote: kgit: rejected: {reason}" in proc.stderr, proc.stderr


def origin_state(w: World) -> tuple[dict[str, str], str]:
    return w.origin_tags(), git(w.origin, "rev-parse", "main")


def test_moved_or_deleted_release_tag_is_rejected_even_with_no_verify(w: World) -> None:
    before = origin_state(w)
    forge_tag(w.repo, V1, git(w.repo, "rev-parse", "HEAD"), tag_message(w.repo, V1) + "\nagain\n")
    rejected(w.push("--no-verify", "--force", f"refs/tags/{V1}"), f"moving the release tag {V1}")
    rejected(w.push("--no-verify", f":refs/tags/{V1}"), f"deleting the release tag {V1}")
    assert origin_state(w) == before


def test_moved_stage_tag_is_rejected(w: World) -> None:
    assert kgit(w.repo, "promote", "m@v1", "prod").returncode == 0
    assert w.push("main", "m#prod#1").returncode == 0
    forge_tag(w.repo, "m#prod#1", git(w.repo, "rev-parse", "HEAD~1"), "moved\n")
    rejected(w.push("--no-verify", "--force", "refs/tags/m#prod#1"), "moving the stage/deprecation tag m#prod#1")


def test_inconsistent_lightweight_and_foreign_tags_are_rejected(w: World) -> None:
    commit = git(w.repo, "rev-parse", f"{V1}^{{commit}}")
    message = tag_message(w.repo, V1).replace('"version": "v1"', '"version": "v99"')
    forge_tag(w.repo, "m@v0.0.3", commit, message)
    rejected(
        w.push("--no-verify", "refs/tags/m@v0.0.3"), "new tag m@v0.0.3 is not a valid release: its message says v99"
    )
    git(w.repo, "tag", "m@v9.0.0", commit)  # lightweight
    rejected(
        w.push("--no-verify", "refs/tags/m@v9.0.0"), "new tag m@v9.0.0 is a lightweight tag, but m is a kgit model"
    )
    forge_tag(w.repo, "m@v8.0.0", commit, "made by hand\n")
    rejected(w.push("--no-verify", "refs/tags/m@v8.0.0"), "new tag m@v8.0.0 is not a kgit release tag")
    assert list(w.origin_tags()) == [V1]


def test_release_whose_data_is_not_in_the_remote_is_rejected(w: World, plain_model) -> None:  # type: ignore[no-untyped-def]
    import kgit as api

    rec = api.release(plain_model, "m", formats=["keras"], repo=w.repo)
    before = origin_state(w)
    # --no-verify skips the client hook, so nothing uploads the data
    rejected(
        w.push("--no-verify", "main", rec.tag),
        f"{rec.tag} (keras): 1 DVC object(s) are not in the DVC remote {w.store}",
    )
    assert origin_state(w) == before
    proc = w.push("main")  # the client hook uploads, then the server accepts
    assert proc.returncode == 0, proc.stderr
    assert rec.tag in w.origin_tags()


def test_rewriting_history_that_drops_a_release_commit_is_rejected(w: World) -> None:
    before = origin_state(w)
    git(w.repo, "reset", "-q", "--hard", "HEAD~1")
    (w.repo / "train.py").write_text("print('rewritten')\n")
    git(w.repo, "commit", "-q", "--no-verify", "-am", "rewrite")
    rejected(w.push("--no-verify", "--force", "main"), f"the push leaves no branch holding the release commit of {V1}")
    assert origin_state(w) == before


def test_commit_changing_a_released_dvc_file_is_rejected(w: World) -> None:
    dvc = w.repo / "artifacts/m/keras/v1.dvc"
    md5 = dvc_md5(w.repo, "artifacts/m/keras/v1.dvc")
    dvc.write_text(dvc.read_text().replace(md5, "0" * 32 + ".dir"))
    git(w.repo, "commit", "-q", "--no-verify", "-am", "swap the model")
    rejected(w.push("--no-verify", "main"), "m@v1 (keras): branch main modifies artifacts/m/keras/v1.dvc (blob")


def test_stage_tags_must_name_a_valid_live_version(w: World) -> None:
    head = git(w.repo, "rev-parse", "HEAD")
    (w.repo / "train.py").write_text("print('more')\n")
    git(w.repo, "commit", "-q", "-am", "not a release")
    assert w.push("main").returncode == 0
    forge_tag(w.repo, "m#prod#1", git(w.repo, "rev-parse", "HEAD"), "promote\n")
    rejected(w.push("--no-verify", "refs/tags/m#prod#1"), "new stage tag m#prod#1 points at")
    git(w.repo, "tag", "-d", "m#prod#1")
    assert kgit(w.repo, "deprecate", "m@v1").returncode == 0
    deprecation = git(w.repo, "tag", "-l", "m@v1.0.0!*")
    assert w.push("--no-verify", f"refs/tags/{deprecation}").returncode == 0  # deprecating is allowed
    forge_tag(w.repo, "m#staging#2", head, "promote a deprecated version\n")
    rejected(
        w.push("--no-verify", "refs/tags/m#staging#2"),
        "new stage tag m#staging#2 puts m@v1 in staging, but that version is deprecated",
    )


def test_plain_push_is_accepted_without_tensorflow_or_dvc(w: World) -> None:
    (w.repo / "train.py").write_text("print('tuned')\n")
    git(w.repo, "commit", "-q", "-am", "tune")
    # python -X importtime, through git's environment, reaches the hook: it must import neither
    proc = run(w.repo, "git", "push", "--no-verify", "origin", "main", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "import time:" in proc.stderr and "| kgit.guard.server" in proc.stderr  # the hook ran, and was measured
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "import time:" in line
    }
    assert not imported & {"tensorflow", "keras", "dvc", "dvc_data", "dvc_objects"}


def test_existing_pre_receive_is_chained_and_restored(tmp_path: Path) -> None:
    origin = bare_origin(tmp_path)
    theirs = '#!/bin/sh\ncat > "$(dirname "$0")/../received"\n'
    (origin / "hooks").mkdir(exist_ok=True)
    (origin / "hooks" / "pre-receive").write_text(theirs)
    (origin / "hooks" / "pre-receive").chmod(0o755)
    assert kgit(tmp_path, "server", "install", str(origin)).returncode == 0
    assert (origin / "hooks" / "pre-receive.kgit-chained").read_text() == theirs
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "commit", "-q", "--allow-empty", "-m", "one")
    assert run(clone, "git", "push", "-q", "origin", "HEAD:main").returncode == 0
    assert "refs/heads/main" in (origin / "received").read_text()  # their hook got the same stdin
    assert kgit(tmp_path, "server", "uninstall", str(origin)).returncode == 0
    assert (origin / "hooks" / "pre-receive").read_text() == theirs
    proc = kgit(tmp_path, "server", "install", str(clone))
    assert proc.returncode == 1 and "has a work tree" in proc.stderr


def test_unendorsed_key_is_rejected(w: World, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert kgit(w.repo, "keys", "init").returncode == 0
    proc = w.push("main")
    assert proc.returncode == 0, proc.stderr  # the team's first keys are the roots of trust
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (w.repo / ".kgit/keys/intruder.pem").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    git(w.repo, "add", ".kgit/keys/intruder.pem")
    git(w.repo, "commit", "-q", "--no-verify", "-m", "add my key")
    proc = w.push("--no-verify", "main")
    assert proc.returncode != 0 and "remote: kgit: rejected:" in proc.stderr and "intruder.pem" in proc.stderr


# -- kgit check: the same checks in a CI job ---------------------------------------------------
def test_kgit_check_finds_what_the_server_hook_would_refuse(w: World, tmp_path: Path) -> None:
    assert kgit(w.base, "server", "uninstall", str(w.origin)).returncode == 0  # a forge without server hooks
    ci = w.clone("ci")
    proc = kgit(ci, "check")
    assert proc.returncode == 0, proc.stderr
    assert "every release is consistent and its data is in the DVC remote" in proc.stderr
    assert kgit(ci, "check", "--since", "0" * 40).returncode == 0  # a new branch in CI: nothing before it
    assert kgit(ci, "check", "--since", "HEAD~1").returncode == 0
    message = tag_message(w.repo, V1).replace('"version": "v1"', '"version": "v99"')
    forge_tag(w.repo, "m@v0.0.3", git(w.repo, "rev-parse", f"{V1}^{{commit}}"), message)
    assert w.push("--no-verify", "refs/tags/m@v0.0.3").returncode == 0
    md5 = dvc_md5(w.repo, "artifacts/m/keras/v1.dvc")
    (w.store / "files" / "md5" / md5[:2] / md5[2:]).unlink()  # the remote lost v1's listing
    git(ci, "fetch", "-q", "--tags", "origin")
    before = snapshot(ci)
    proc = kgit(ci, "check", "--json")
    assert proc.returncode == 1
    assert "m@v0.0.3 is not a valid release: its message says v99" in proc.stdout
    assert "m@v1.0.0 (keras): 1 DVC object(s) are not in the DVC remote" in proc.stdout
    assert snapshot(ci) == before
    # a pushed commit that swaps a released model: found with --since (the pipeline's before-SHA)
    base = git(ci, "rev-parse", "HEAD")
    dvc = w.repo / "artifacts/m/keras/v1.dvc"
    dvc.write_text(dvc.read_text().replace(md5, "0" * 32 + ".dir"))
    git(w.repo, "commit", "-q", "--no-verify", "-am", "swap the model")
    assert w.push("--no-verify", "main").returncode == 0
    git(ci, "pull", "-q", "--ff-only")
    proc = kgit(ci, "check", "--no-data", "--since", base)
    assert proc.returncode == 1 and "m@v1 (keras): branch main modifies artifacts/m/keras/v1.dvc (blob" in proc.stderr


def _release_over_v1_data(w: World, version: str) -> str:
    """A release made by hand that reuses m@v1's data: v1's `.dvc` file copied to VERSION's path
    with git's side (DVC path, kgit metadata, tag summary) rewritten to say VERSION, so every check
    that reads git alone finds it consistent. Returns the tag."""
    import json

    import yaml

    from kgit.registry.catalog import SUMMARY_MARK
    from kgit.registry.catalog import tag_message as make_message

    data = yaml.safe_load((w.repo / "artifacts/m/keras/v1.dvc").read_text())
    data["outs"][0]["path"] = version
    data["meta"]["kgit"]["version"] = version
    (w.repo / f"artifacts/m/keras/{version}.dvc").write_text(yaml.safe_dump(data, sort_keys=False))
    git(w.repo, "add", f"artifacts/m/keras/{version}.dvc")
    git(w.repo, "commit", "-q", "--no-verify", "-m", f"release {version} by hand")
    summary = json.loads(tag_message(w.repo, V1).split(SUMMARY_MARK, 1)[1])
    summary["formats"]["keras"]["path"] = f"artifacts/m/keras/{version}"
    body = {k: v for k, v in summary.items() if k not in ("name", "version")}
    tag = f"m@{version}.0.0"
    forge_tag(w.repo, tag, git(w.repo, "rev-parse", "HEAD"), make_message("m", version, body))
    return tag


def test_a_hand_made_release_over_another_release_s_data_is_refused_and_never_latest(w: World) -> None:
    before = origin_state(w)
    tag = _release_over_v1_data(w, "v7")
    assert kgit(w.repo, "list").returncode == 0
    rejected(
        w.push("--no-verify", "main", f"refs/tags/{tag}"),
        f"new tag {tag} (keras) is not a valid release: the metadata.json in its data is for m:v1:keras, not m:v7:keras",
    )
    assert origin_state(w) == before
    # on a forge without the server hook it lands: every clone then refuses it
    assert kgit(w.base, "server", "uninstall", str(w.origin)).returncode == 0
    assert w.push("--no-verify", "main", f"refs/tags/{tag}").returncode == 0
    proc = kgit(w.repo, "list", "m", "--json")  # this clone's DVC cache holds the data: it says which is genuine
    import json

    listed = {r["version"]: r for r in json.loads(proc.stdout)}
    assert listed["v1"]["status"] == "valid"
    assert (
        listed["v7"]["status"].startswith("invalid: its keras data (DVC hash")
        and "m:v1:keras" in listed["v7"]["status"]
    )
    assert json.loads(kgit(w.repo, "show", "m@latest", "--json").stdout)["version"] == "v1"
    proc = kgit(w.repo, "get", "m@v7")
    assert proc.returncode == 1 and "the metadata.json in its keras data is for m:v1:keras" in proc.stderr
    ci = w.clone("ci")  # no data here: git alone cannot tell which of the two is genuine; the remote can
    proc = kgit(ci, "check", "--json")
    assert proc.returncode == 1
    assert "m@v7 (keras) is not a valid release: the metadata.json in its data is for m:v1:keras" in proc.stdout
