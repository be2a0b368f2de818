"""Signed releases (OpenSSF model-signing, EC keys, offline): sign, verify, tamper anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import bare_origin, copy_project, git, kgit, new_repo, snapshot, user_env
from support.world import point_dvc_remote

import kgit as api
from kgit.trust import signing

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier


@pytest.fixture(scope="module")
def signed_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A repo (laid out as ``kgit_repo``) whose user has a signing key (policy: required) and one signed
    release m@v1: made once."""
    base = tmp_path_factory.mktemp("signed")
    repo = new_repo(base, "README.md", "a project\n")
    api.init(repo, remote=str(base / "remote"))
    result = json.loads(kgit(repo, "keys", "init", "--require", "--json", check=True).stdout)
    kgit(repo, "release", "m", "--from", "support.zoo:plain_model", "-f", "keras", "-f", "h5", check=True)
    return base, result


@pytest.fixture
def signed_repo(signed_once: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A copy of ``signed_once`` with a bare `origin`: (repo, origin, the keys it made)."""
    base, result = signed_once
    repo = copy_project(base, tmp_path)
    return repo, bare_origin(tmp_path, repo), result


def test_keys_init_sign_and_verify(signed_repo) -> None:  # type: ignore[no-untyped-def]
    repo, _, keys = signed_repo
    private = Path(keys["private_key"])
    assert private.exists() and repo not in private.parents  # outside the repository
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    tracked = git(repo, "ls-files", ".kgit").split()
    assert tracked == [keys["public_key"], signing.POLICY_FILE]  # the public key and policy only
    assert git(repo, "config", "kgit.signingKey") == str(private)
    meta = api.show("m", "v1", repo=repo).metadata
    assert meta.signed_by == keys["fingerprint"]
    assert (repo / "artifacts/m/keras/v1" / signing.SIGNATURE_FILE).is_file()
    assert f"key {keys['fingerprint'][:16]}" in kgit(repo, "show", "m@v1", check=True).stdout
    results = json.loads(kgit(repo, "verify", "--json", check=True).stdout)
    assert [(r["format"], r["status"]) for r in results] == [("keras", "passed"), ("h5", "passed")]
    # validate includes the signature check
    assert all(r["ok"] for r in json.loads(kgit(repo, "validate", "--recheck", "--json", check=True).stdout))


def test_tampered_signature_or_untrusted_signer_is_refused(signed_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, _, _ = signed_repo
    folder = repo / "artifacts/m/keras/v1"
    sig = folder / signing.SIGNATURE_FILE
    good = sig.read_bytes()
    sig.write_bytes(good.replace(b'"payload":"', b'"payload":"AAAA', 1))
    proc = kgit(repo, "verify", "m@v1", "--json", check=False)
    assert proc.returncode == 1
    keras = [r for r in json.loads(proc.stdout) if r["format"] == "keras"][0]
    assert keras["check"] == "signature" and ("corrupt" in keras["error"] or "does not verify" in keras["error"])
    # re-signed by someone else's key: same bytes, but not a key this repository trusts
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    intruder = tmp_path / "intruder.pem"
    intruder.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    signing.sign(folder, intruder)
    proc = kgit(repo, "validate", "m@v1", "--recheck", "--json", check=False)
    assert proc.returncode == 1
    keras = [r for r in json.loads(proc.stdout) if r["format"] == "keras"][0]
    assert keras["check"] == "signature" and "not trusted" in keras["error"]
    with pytest.raises(api.KgitError, match="not trusted"):
        api.load("m", "v1", format="keras", repo=repo)


def test_push_refuses_unsigned_release_when_required(kgit_repo: Path, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    origin = bare_origin(tmp_path, kgit_repo)
    api.release(plain_model, "u", formats="keras", repo=kgit_repo)  # signing off: unsigned
    kgit(kgit_repo, "keys", "init", "--require", check=True)
    push = subprocess.run(
        ["git", "push", "origin", "main"],
        cwd=kgit_repo,
        capture_output=True,
        text=True,
        env=user_env(Path(os.environ["HOME"])),
    )
    assert push.returncode != 0 and "u@v1" in push.stderr and "not signed" in push.stderr, push.stderr
    assert git(origin, "tag", "-l") == ""


def test_remote_and_cache_tampering_is_caught_on_another_machine(signed_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, origin, _ = signed_repo
    env_a = user_env(Path(os.environ["HOME"]))
    assert subprocess.run(["git", "push", "-q", "-u", "origin", "main"], cwd=repo, env=env_a).returncode == 0
    remote = tmp_path / "remote"
    md5 = json.loads(json.dumps(yaml.safe_load((repo / "artifacts/m/keras/v1.dvc").read_text())))["outs"][0]["md5"]
    manifest = json.loads((remote / "files/md5" / md5[:2] / md5[2:]).read_text())
    entry = next(e for e in manifest if e["relpath"] == "model.keras")
    obj = remote / "files/md5" / entry["md5"][:2] / entry["md5"][2:]
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 3] ^= 0x01
    obj.write_bytes(bytes(data))

    home_b = tmp_path / "home-b"
    home_b.mkdir()
    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(origin), str(b))
    point_dvc_remote(b, remote)  # the team's remote (the repository copied from signed_once names its own)
    proc = kgit(b, "get", "m@v1", "--format", "keras", env=user_env(home_b), check=False)
    assert proc.returncode == 1 and "model.keras" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # the untouched format fetches fine
    assert kgit(b, "get", "m@v1", "--format", "h5", env=user_env(home_b), check=True).returncode == 0

    # tampering in the local DVC cache (machine A): load refuses, naming the file
    cache_obj = repo / ".dvc/cache/files/md5" / entry["md5"][:2] / entry["md5"][2:]
    cache_obj.chmod(0o644)
    cache_obj.write_bytes(bytes(data))
    import shutil

    shutil.rmtree(repo / "artifacts/m/keras/v1")
    subprocess.run([sys.executable, "-m", "dvc", "checkout", "-q", "artifacts/m/keras/v1.dvc"], cwd=repo, env=env_a)
    with pytest.raises(api.KgitError, match="model.keras"):
        api.load("m", "v1", format="keras", repo=repo)


def test_clone_trusting_only_another_key_refuses(signed_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, origin, keys = signed_repo
    env_a = user_env(Path(os.environ["HOME"]))
    assert subprocess.run(["git", "push", "-q", "-u", "origin", "main"], cwd=repo, env=env_a).returncode == 0
    home_b = tmp_path / "home-b"
    home_b.mkdir()
    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(origin), str(b))
    point_dvc_remote(b, tmp_path / "remote")  # the team's remote (the repository copied from signed_once names its own)
    env_b = user_env(home_b)
    kgit(b, "get", "m@v1", env=env_b, check=True)  # trusts A's key: fine
    kgit(b, "keys", "init", "--name", "b", env=env_b, check=True)
    (b / keys["public_key"]).unlink()  # B's fork trusts only B's own key
    git(b, "commit", "-q", "--no-verify", "-am", "trust only b")
    proc = kgit(b, "verify", "m@v1", env=env_b, check=False)
    assert proc.returncode == 1 and "not trusted" in proc.stderr
    import shutil

    shutil.rmtree(b / "artifacts/m/keras/v1")
    proc = kgit(b, "get", "m@v1", "--format", "keras", env=env_b, check=False)
    assert proc.returncode == 1 and "not trusted" in proc.stderr


def test_bad_signing_input(kgit_repo: Path, tmp_path: Path) -> None:
    kgit(kgit_repo, "keys", "init", "--require", check=True)
    before = snapshot(kgit_repo)
    # missing private key
    real = git(kgit_repo, "config", "kgit.signingKey")
    git(kgit_repo, "config", "kgit.signingKey", str(tmp_path / "nowhere.pem"))
    proc = kgit(kgit_repo, "release", "m", "--from", "support.zoo:plain_model", check=False)
    assert proc.returncode == 1 and "cannot read the signing key" in proc.stderr and proc.stderr.count("\n") == 1
    # a key this repository does not trust
    other = tmp_path / "other.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    git(kgit_repo, "config", "kgit.signingKey", str(other))
    proc = kgit(kgit_repo, "release", "m", "--from", "support.zoo:plain_model", check=False)
    assert proc.returncode == 1 and "is not trusted here" in proc.stderr
    # not a key at all
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    git(kgit_repo, "config", "kgit.signingKey", str(junk))
    proc = kgit(kgit_repo, "release", "m", "--from", "support.zoo:plain_model", check=False)
    assert proc.returncode == 1 and "not an unencrypted PEM private key" in proc.stderr
    assert kgit(kgit_repo, "keys", "trust", str(junk), check=False).returncode == 1
    assert kgit(kgit_repo, "keys", "policy", "sometimes", check=False).returncode == 1
    git(kgit_repo, "config", "kgit.signingKey", real)
    assert snapshot(kgit_repo) == before
