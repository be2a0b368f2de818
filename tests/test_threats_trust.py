"""Trust anchored outside the work tree: a key or a weaker policy committed by someone who can push
is not trusted by the other clones (nor by a fresh clone) without an endorsement by a trusted key.

Real git, real kgit (command line and API), real signatures; one shared world of clones per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import bare_origin, git, kgit, new_repo, snapshot, user_env

import kgit as api
from kgit.trust import keyring, signing


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = kgit(cwd, *args, env=env, check=check)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def push(
    repo: Path, env: dict[str, str] | None = None, ref: str = "main", *options: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "push", "-q", *options, "origin", ref],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env or user_env(Path(os.environ["HOME"])),
    )


def clone(origin: Path, where: Path) -> Path:
    git(where.parent, "clone", "-q", str(origin), str(where))
    return where


def new_key(folder: Path, name: str) -> tuple[Path, Path, str]:
    """A private and a public PEM file for a new EC key, and its fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.key.pem", folder / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public, signing.fingerprint_of(key.public_key())


def dvc_pull(repo: Path, name: str, version: str, env: dict[str, str] | None = None) -> None:
    """Bring a release's data with plain DVC (no kgit check), as anyone could."""
    subprocess.run(
        [sys.executable, "-m", "dvc", "pull", "-q", f"artifacts/{name}/keras/{version}.dvc"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("kgit: error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@dataclass
class World:
    base: Path
    origin: Path
    a: Path  # the original clone: Alice, whose key was the first one committed
    m: Path  # Mallory, who can push but holds no trusted key
    env_m: dict[str, str]
    alice: str
    alice_key: Path
    mallory: str
    mallory_commit: str  # the commit that added Mallory's key
    carol: str  # endorsed by Alice with `kgit keys trust`


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, plain_model) -> World:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("trust")
    origin = bare_origin(base)
    a = new_repo(base, "README.md", "models\n")
    api.init(a, remote=str(base / "remote"))
    git(a, "remote", "add", "origin", str(origin))
    alice = json.loads(run(a, "keys", "init", "--require", "--json").stdout)
    api.release(plain_model, "m", formats="keras", repo=a)  # m@v1, signed by Alice
    assert push(a, None, "main", "-u").returncode == 0

    env_m = user_env(base / "home-m")
    m = clone(origin, base / "mallory")
    run(m, "init", env=env_m)  # hooks and push.followTags in this clone too
    mallory = json.loads(run(m, "keys", "init", "--name", "mallory", "--json", env=env_m).stdout)
    assert any("accepted in this clone only" in c for c in mallory["changes"]), mallory
    api.release(plain_model, "m", formats="keras", repo=m)  # m@v2, signed by Mallory's own key
    assert api.show("m", "v2", repo=m).metadata.signed_by == mallory["fingerprint"]
    assert push(m, env_m).returncode == 0

    carol_private, carol_public, carol = new_key(base, "carol")
    git(a, "pull", "-q", "--ff-only", "--tags", "origin", "main")
    out = run(a, "keys", "trust", str(carol_public), "--name", "carol").stderr
    assert f"endorsed by your key {alice['fingerprint'][:16]}" in out, out
    git(a, "config", "kgit.signingKey", str(carol_private))
    api.release(plain_model, "m", formats="keras", repo=a)  # m@v3, signed by Carol
    git(a, "config", "kgit.signingKey", alice["private_key"])
    assert push(a).returncode == 0
    return World(
        base,
        origin,
        a,
        m,
        env_m,
        alice["fingerprint"],
        Path(alice["private_key"]),
        mallory["fingerprint"],
        git(m, "log", "-1", "--format=%H", "--", ".kgit/keys/mallory.pem"),
        carol,
    )


def _names_mallory(text: str, w: World) -> None:
    assert (
        f"signed by key {w.mallory[:16]}, added by commit {w.mallory_commit[:8]} without endorsement by a trusted key"
        in text
    ), text
    assert f"`kgit keys accept {w.mallory[:16]}`" in text, text


@pytest.mark.slow
def test_key_committed_without_endorsement_is_refused_everywhere(world: World, tmp_path: Path) -> None:
    w = world
    # the original clone: the key is in its work tree after a pull, but nobody trusted endorsed it
    tags = git(w.a, "tag", "-l")
    _names_mallory(one_line(run(w.a, "get", "m@v2", check=False).stderr), w)
    assert git(w.a, "tag", "-l") == tags and git(w.a, "status", "--porcelain") == ""
    dvc_pull(w.a, "m", "v2")
    before = snapshot(w.a)
    proc = run(w.a, "verify", "m@v2", "--json", check=False)
    assert proc.returncode == 1
    [result] = json.loads(proc.stdout)
    assert result["check"] == "signature"
    _names_mallory(result["error"], w)
    proc = run(w.a, "validate", "m@v2", "--recheck", "--json", check=False)
    assert proc.returncode == 1
    _names_mallory(json.loads(proc.stdout)[0]["error"], w)
    with pytest.raises(api.KgitError) as caught:
        api.load("m", "v2", repo=w.a)
    _names_mallory(str(caught.value), w)
    assert snapshot(w.a) == before
    listing = json.loads(run(w.a, "keys", "list", "--json").stdout)
    status = {k["fingerprint"]: k for k in listing["keys"]}
    assert status[w.alice]["status"] == "pinned" and status[w.mallory]["status"] == "untrusted"
    assert status[w.mallory]["added_by"] == w.mallory_commit
    assert run(w.a, "verify", "m@v1").returncode == 0  # Alice's release is fine

    # a fresh clone, first use: the key is in the tree it cloned, and still not trusted
    env_f = user_env(tmp_path / "home-f")
    f = clone(w.origin, tmp_path / "fresh")
    _names_mallory(one_line(run(f, "get", "m@v2", env=env_f, check=False).stderr), w)
    assert git(f, "status", "--porcelain") == ""
    dvc_pull(f, "m", "v2", env_f)
    before = snapshot(f)
    _names_mallory(one_line(run(f, "verify", "m@v2", env=env_f, check=False).stderr), w)
    _names_mallory(one_line(run(f, "validate", "m@v2", env=env_f, check=False).stderr), w)
    with pytest.raises(api.KgitError) as caught:
        api.load("m", "v2", repo=f)
    _names_mallory(str(caught.value), w)
    assert snapshot(f) == before
    pinned = json.loads((f / ".git/kgit/trust.json").read_text())
    assert w.mallory not in pinned["pinned"] and {w.alice, w.carol} <= set(pinned["pinned"])

    # accepting it is a local decision: that clone only, nothing committed
    out = run(f, "keys", "accept", w.mallory[:16], env=env_f).stderr
    assert "accepted in this clone" in out
    assert snapshot(f) == before
    assert run(f, "verify", "m@v2", env=env_f).returncode == 0
    keys = {k["fingerprint"]: k for k in json.loads(run(f, "keys", "list", "--json", env=env_f).stdout)["keys"]}
    assert keys[w.mallory]["status"] == "accepted" and keys[w.carol]["status"] == "endorsed"
    assert run(w.a, "verify", "m@v2", check=False).returncode == 1


@pytest.mark.slow
def test_key_endorsed_by_a_trusted_key_is_honoured_by_a_fresh_clone(world: World, tmp_path: Path) -> None:
    w = world
    env_g = user_env(tmp_path / "home-g")
    g = clone(w.origin, tmp_path / "fresh")
    assert run(g, "get", "m@v3", env=env_g).returncode == 0  # signed by Carol, endorsed by Alice
    [result] = json.loads(run(g, "verify", "m@v3", "--json", env=env_g).stdout)
    assert result["status"] == "passed"
    keys = {k["fingerprint"]: k for k in json.loads(run(g, "keys", "list", "--json", env=env_g).stdout)["keys"]}
    assert keys[w.carol]["status"] == "endorsed" and keys[w.carol]["endorsed_by"] == w.alice
    assert keys[w.mallory]["status"] == "untrusted"
    # the endorsement is a signature: pointing it at Mallory's key breaks it
    statement = next((g / keyring.ENDORSEMENTS_DIR).glob(f"{w.carol[:16]}-by-*.json"))
    forged = json.loads(statement.read_text())
    forged["key"] = w.mallory
    (g / keyring.ENDORSEMENTS_DIR / f"{w.mallory[:16]}-by-{w.alice[:16]}.json").write_text(json.dumps(forged))
    keys = {k["fingerprint"]: k for k in json.loads(run(g, "keys", "list", "--json", env=env_g).stdout)["keys"]}
    assert keys[w.mallory]["status"] == "untrusted"
    # removing Carol's key from the tree takes her trust away
    (g / ".kgit/keys/carol.pem").unlink()
    proc = run(g, "verify", "m@v3", env=env_g, check=False)
    assert proc.returncode == 1 and "not trusted" in one_line(proc.stderr)


@pytest.mark.slow
def test_policy_weakened_without_endorsement_keeps_the_pinned_policy(world: World, plain_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w = world
    m, env_m = w.m, w.env_m
    git(m, "pull", "-q", "--ff-only", "--tags", "origin", "main")
    # a hand-written `policy: off` (YAML's false, as older kgit wrote it) committed by Mallory
    (m / keyring.POLICY_FILE).write_text("policy: off\n")
    git(m, "commit", "-q", "-am", "signing: off")
    assert signing.policy(m) == "off"  # read as off, not refused
    shown = run(m, "keys", "policy", env=env_m)
    assert shown.stdout.strip() == "required" and "pinned policy required stays in force" in shown.stderr
    git(m, "config", "--unset", "kgit.signingKey")
    before = snapshot(m)
    with pytest.raises(api.KgitError, match="pinned policy required stays in force"):
        api.release(plain_model, "u", formats="keras", repo=m)
    assert snapshot(m) == before
    git(m, "reset", "-q", "--hard", "HEAD~1")

    # `kgit keys policy off` by someone without a trusted key: written quoted, accepted in that clone only
    out = run(m, "keys", "policy", "off", env=env_m).stderr
    assert "accepted in this clone only" in out and "kgit keys accept --policy off" in out, out
    assert 'policy: "off"' in (m / keyring.POLICY_FILE).read_text()
    api.release(plain_model, "u", formats="keras", repo=m)  # unsigned, and it works (attack 10)
    assert api.show("u", "v1", repo=m).metadata.signed_by is None
    assert push(m, env_m).returncode == 0

    # elsewhere the pinned policy still requires signatures
    git(w.a, "pull", "-q", "--ff-only", "--tags", "origin", "main")
    env_h = user_env(tmp_path / "home-h")
    h = clone(w.origin, tmp_path / "fresh")
    for repo, env in ((w.a, None), (h, env_h)):
        line = one_line(run(repo, "get", "u@v1", env=env, check=False).stderr)
        assert "u@v1 (keras) is not signed" in line and "pinned policy required stays in force" in line, line
        dvc_pull(repo, "u", "v1", env)
        before = snapshot(repo)
        proc = run(repo, "validate", "u@v1", "--json", env=env, check=False)
        assert proc.returncode == 1 and "pinned policy required stays in force" in json.loads(proc.stdout)[0]["error"]
        assert snapshot(repo) == before
    assert run(h, "keys", "policy", env=env_h).stdout.strip() == "required"

    # the same weakening endorsed by a trusted key (Alice's): honoured by every clone
    out = run(w.a, "keys", "policy", "off").stderr
    assert f"signed by your key {w.alice[:16]}" in out, out
    assert json.loads((w.a / keyring.POLICY_STATEMENT).read_text())["by"] == w.alice
    assert push(w.a).returncode == 0
    assert run(w.a, "get", "u@v1").returncode == 0
    git(h, "pull", "-q", "--ff-only", "--tags", "origin", "main")
    assert run(h, "get", "u@v1", env=env_h).returncode == 0
    h2 = clone(w.origin, tmp_path / "fresh2")
    assert run(h2, "get", "u@v1", env=env_h).returncode == 0
    assert run(h2, "keys", "policy", env=env_h).stdout.strip() == "off"


@pytest.mark.slow
def test_policy_off_is_written_quoted_and_a_bare_off_reads_as_off(git_repo: Path) -> None:
    run(git_repo, "keys", "init")
    run(git_repo, "keys", "policy", "off")
    text = (git_repo / keyring.POLICY_FILE).read_text()
    assert 'policy: "off"' in text and yaml.safe_load(text)["policy"] == "off"
    assert run(git_repo, "keys", "policy").stdout.strip() == "off"
    from kgit.store.git_ops import Repo

    assert signing.signing_key(Repo(git_repo)) is None  # a release goes ahead, unsigned
    (git_repo / keyring.POLICY_FILE).write_text("# as older kgit wrote it\npolicy: off\n")
    assert signing.policy(git_repo) == "off"
    assert run(git_repo, "keys", "policy").stdout.strip() == "off"
    git(git_repo, "commit", "-q", "-am", "bare off")
    assert "already off" in run(git_repo, "keys", "policy", "off").stderr
    # bad input: one line, nothing changed (keyring.json included)
    before, state = snapshot(git_repo), (git_repo / ".git/kgit/trust.json").read_text()
    for args in (
        ("keys", "accept"),
        ("keys", "accept", "xyz"),
        ("keys", "accept", "00000000"),
        ("keys", "accept", "--policy", "sometimes"),
        ("keys", "policy", "sometimes"),
    ):
        proc = run(git_repo, *args, check=False)
        assert proc.returncode == 1, args
        one_line(proc.stderr)
    assert snapshot(git_repo) == before and (git_repo / ".git/kgit/trust.json").read_text() == state


HOOK = """#!/bin/sh
exec "{python}" -c '
import pathlib, sys
from kgit.trust import keyring
problems = []
for line in sys.stdin:
    old, new, ref = line.split()
    problems += keyring.unendorsed_changes(pathlib.Path("."), old, new)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "dvc", "git"))
for p in problems + (["imported " + ", ".join(heavy)] if heavy else []):
    print("refused:", p, file=sys.stderr)
sys.exit(1 if problems or heavy else 0)
'
"""


@pytest.mark.slow
def test_unendorsed_changes_on_a_bare_repository(tmp_path: Path) -> None:
    origin = bare_origin(tmp_path)
    hook = origin / "hooks" / "pre-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(HOOK.format(python=sys.executable))
    hook.chmod(0o755)
    env_a, env_x = user_env(tmp_path / "home-a"), user_env(tmp_path / "home-x")
    a = new_repo(tmp_path, "README.md", "models\n")
    git(a, "remote", "add", "origin", str(origin))
    alice = json.loads(run(a, "keys", "init", "--require", "--json", env=env_a).stdout)["fingerprint"]
    assert push(a, env_a).returncode == 0, "a new branch whose first key commit has Alice's key"
    x = clone(origin, tmp_path / "x")

    def refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
        assert proc.returncode != 0 and all(word in proc.stderr for word in words), proc.stderr

    # a key added without endorsement: refused, on main and as a new branch
    mallory = json.loads(run(x, "keys", "init", "--name", "mallory", "--json", env=env_x).stdout)["fingerprint"]
    head_before = git(origin, "rev-parse", "main")
    added = git(x, "rev-parse", "HEAD")
    refused(
        push(x, env_x), f"key {mallory[:16]} (.kgit/keys/mallory.pem) added by commit {added[:8]} without endorsement"
    )
    refused(push(x, env_x, "HEAD:refs/heads/mallory"), f"key {mallory[:16]}")
    assert git(origin, "rev-parse", "main") == head_before and git(origin, "branch", "--list", "mallory") == ""
    assert len(keyring.unendorsed_changes(x / ".git", head_before, added)) == 1
    # ... nor by endorsing itself
    private = Path(git(x, "config", "kgit.signingKey"))
    root = json.loads((x / ".git/kgit/trust.json").read_text())["root"]
    rel, statement = keyring.key_endorsement(signing.load_private(private), mallory, mallory, root)
    keyring.write_statement(x, rel, statement)
    git(x, "add", ".kgit")
    git(x, "commit", "-q", "-m", "self-endorsed")
    refused(push(x, env_x), f"key {mallory[:16]}", "which is not trusted before this push")

    # the policy weakened without endorsement: hand-written, or with `kgit keys policy off`
    git(x, "reset", "-q", "--hard", "origin/main")
    (x / keyring.POLICY_FILE).write_text("policy: off\n")
    git(x, "commit", "-q", "-am", "off")
    refused(push(x, env_x), "weakened from required to off")
    git(x, "reset", "-q", "--hard", "origin/main")
    assert "accepted in this clone only" in run(x, "keys", "policy", "optional", env=env_x).stderr
    refused(push(x, env_x), "weakened from required to optional")

    # endorsed by Alice: accepted
    git(x, "reset", "-q", "--hard", "origin/main")
    (tmp_path / "mallory.pem").write_bytes(git(x, "show", f"{added}:.kgit/keys/mallory.pem").encode() + b"\n")
    out = run(a, "keys", "trust", str(tmp_path / "mallory.pem"), "--name", "mallory", env=env_a).stderr
    assert f"endorsed by your key {alice[:16]}" in out
    old = git(origin, "rev-parse", "main")
    assert push(a, env_a).returncode == 0
    assert keyring.unendorsed_changes(origin, old, git(a, "rev-parse", "HEAD")) == []
    assert keyring.unendorsed_changes(origin, None, git(a, "rev-parse", "HEAD")) == []
    run(a, "keys", "policy", "optional", env=env_a)
    assert push(a, env_a).returncode == 0
    run(a, "keys", "policy", "required", env=env_a)
    assert push(a, env_a).returncode == 0
    # replaying the old signed statement for "optional" after the policy went back to required
    git(a, "checkout", "HEAD~1", "--", keyring.POLICY_FILE, keyring.POLICY_STATEMENT)
    git(a, "commit", "-q", "-m", "replay")
    refused(push(a, env_a), "weakened from required to optional")
