"""Object storage: an S3 DVC remote, end to end, against a real S3-protocol server (moto's, started
on 127.0.0.1 by the tests, checking credentials as S3 does). Two machines with their own HOME and
DVC cache share only the bare git repository and the bucket; credentials come from the standard AWS
environment variables, as on a developer's machine or a CI runner."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import git, snapshot
from support import s3
from support.machine import Machine, cache_files

BUCKET = "models"
PREFIX = "team/dvc"
URL = f"s3://{BUCKET}/{PREFIX}"

LOAD = """
import json, sys
import numpy as np
import kgit
model = kgit.load("m", "v1", format="keras")
x = np.load("artifacts/m/keras/v1/reference_inputs.npz")["x"]
print(json.dumps({"outputs": np.asarray(model(x, training=False)).tolist(), "compiled": bool(model.compiled)}))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3.S3Server]:
    srv = s3.start(tmp_path_factory.mktemp("moto"))
    srv.create_bucket(BUCKET)
    yield srv
    srv.stop()


def machine(base: Path, name: str, server: s3.S3Server, key: tuple[str, str] | None = None) -> Machine:
    m = Machine(base, name)
    m.env.update(server.env(key))
    return m


def setup_a(
    tmp_path: Path, server: s3.S3Server, model_file: Path, prefix: str = PREFIX, formats: tuple[str, ...] = ("keras",)
) -> tuple[Machine, Path]:
    """Machine A: a clone of a new bare origin, `kgit init` with the S3 remote, m@v1 released."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(origin))
    a = machine(tmp_path, "a", server)
    a.run("git", "clone", "-q", str(origin), str(a.repo), cwd=tmp_path)
    (a.repo / "train.py").write_text("# training code\n")
    a.run("git", "add", "train.py")
    a.run("git", "commit", "-q", "-m", "code")
    a.kgit("init", "--remote", f"s3://{BUCKET}/{prefix}", "--remote-option", f"endpointurl={server.endpoint}")
    a.kgit("release", "m", "--from", str(model_file), *[x for f in formats for x in ("-f", f)])
    return a, origin


def published(repo: Path) -> dict[str, list[str]]:
    path = repo / ".git" / "kgit" / "published.json"
    return json.loads(path.read_text()) if path.exists() else {}


def kgit_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("kgit:")]


def refused_in_one_line(push, *needles: str, uploading: bool = False) -> str:  # type: ignore[no-untyped-def]
    """The push failed with one `kgit: push refused: ...` line containing ``needles``, no traceback
    (after kgit's `uploading ...` line when the upload had started)."""
    assert push.returncode != 0, push.stderr
    lines = kgit_lines(push.stderr)
    if uploading:
        assert lines[0].startswith("kgit: uploading m@v1 (keras)"), push.stderr
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("kgit: push refused: "), push.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in push.stderr and "ERROR" not in push.stderr  # no DVC error dump either
    return str(lines[0])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, plain_model) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("model") / "m.keras"
    plain_model.save(path)
    return path


# -- kgit init with an S3 remote ------------------------------------------------------------------
def test_init_s3_remote_options_shared_and_personal(git_repo: Path) -> None:
    """Shared settings are committed in .dvc/config; credentials go to .dvc/config.local and are never shown."""
    a = Machine(git_repo.parent, "x")
    a.repo = git_repo
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
    proc = a.kgit(
        "init",
        "--remote",
        URL,
        "--remote-option",
        "endpointurl=http://127.0.0.1:9000",
        "--remote-option",
        "region=eu-west-1",
        "--remote-option",
        "access_key_id=AKIAEXAMPLE",
        "--remote-option",
        f"secret_access_key={secret}",
    )
    assert secret not in proc.stdout + proc.stderr and "AKIAEXAMPLE" not in proc.stderr
    assert "set secret_access_key = (hidden) for DVC remote kgit in .dvc/config.local" in proc.stderr
    committed = git(git_repo, "show", "HEAD:.dvc/config")
    assert URL in committed and "endpointurl = http://127.0.0.1:9000" in committed and "region = eu-west-1" in committed
    assert "secret" not in committed and "access_key_id" not in committed
    local = (git_repo / ".dvc" / "config.local").read_text()
    assert secret in local and "access_key_id = AKIAEXAMPLE" in local
    assert git(git_repo, "status", "--porcelain") == ""  # config.local is ignored
    again = a.kgit("init", "--remote", URL, "--remote-option", "endpointurl=http://127.0.0.1:9000", "--json")
    assert json.loads(again.stdout)["changes"] == []
    # a setting changed later: committed again, only that one
    moved = a.kgit("init", "--remote-option", "endpointurl=https://s3.example.com")
    assert "set endpointurl = https://s3.example.com" in moved.stderr
    assert "endpointurl = https://s3.example.com" in git(git_repo, "show", "HEAD:.dvc/config")


@pytest.mark.parametrize(
    "option, message",
    [
        ("bogus=1", "--remote-option bogus: DVC has no such setting for s3:// remotes (it has: access_key_id"),
        ("use_ssl=maybe", "--remote-option use_ssl: expected true or false"),
        ("no-equals", "invalid --remote-option 'no-equals'=...: use KEY=VALUE"),
    ],
)
def test_init_refuses_bad_remote_options_changing_nothing(git_repo: Path, option: str, message: str) -> None:
    from conftest import kgit

    before = snapshot(git_repo)
    proc = kgit(git_repo, "init", "--remote", URL, "--remote-option", option)
    assert proc.returncode == 1 and proc.stderr.startswith(f"kgit: error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(git_repo) == before and not (git_repo / ".dvc").exists()


def hide_plugin(base: Path) -> Path:
    """A folder to put first on PYTHONPATH so that `import dvc_s3` fails, as where it is not installed."""
    hide = base / "no-plugin" / "dvc_s3"
    hide.mkdir(parents=True, exist_ok=True)
    (hide / "__init__.py").write_text("raise ImportError('dvc-s3 is not installed here')\n")
    return hide.parent


def test_s3_remote_without_the_plugin_says_how_to_install_it(git_repo: Path, tmp_path: Path) -> None:
    """Where dvc-s3 is not installed (hidden here by a package that fails to import), one line."""
    from conftest import user_env

    env = user_env(tmp_path / "home")
    env["PYTHONPATH"] = f"{hide_plugin(tmp_path)}:{env['PYTHONPATH']}"
    before = snapshot(git_repo)
    proc = subprocess.run(
        [sys.executable, "-m", "kgit", "init", "--remote", URL],
        cwd=git_repo,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        f"kgit: error: DVC remote {URL} needs DVC's s3 plugin (dvc-s3), which is not installed: pip install 'kgit[s3]'"
    )
    assert snapshot(git_repo) == before


# -- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
def test_release_push_and_use_on_another_machine(tmp_path: Path, server: s3.S3Server, model_file: Path) -> None:
    a, origin = setup_a(tmp_path, server, model_file)
    assert kgit_lines(
        a.run(
            "python-m",
            "kgit",
            "server",
            "install",
            str(origin),
            "--dvc-remote",
            URL,
            "--dvc-remote-option",
            f"endpointurl={server.endpoint}",
        ).stderr
    )
    assert not server.keys(BUCKET, PREFIX)

    pushed = a.run("git", "push", "-u", "origin", "main")
    assert (
        "uploading m@v1 (keras)" in pushed.stderr and f"DVC remote kgit ({URL} at {server.endpoint})" in pushed.stderr
    )
    md5 = json.loads(a.kgit("list", "--json").stdout)[0]["formats"]["keras"]["md5"]
    keys = server.keys(BUCKET, PREFIX)
    assert f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}" in keys  # the folder's listing, and each file
    listing = json.loads(
        server.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}")["Body"].read()
    )
    assert len(keys) == 1 + len(listing)
    assert all(f"{PREFIX}/files/md5/{e['md5'][:2]}/{e['md5'][2:]}" in keys for e in listing)
    assert published(a.repo) == {URL: [md5]}
    assert git(origin, "tag", "-l") == "m@v1.0.0"

    # machine B: its own HOME and empty DVC cache; credentials from its environment
    b = machine(tmp_path, "b", server)
    b.run("git", "clone", "-q", str(origin), str(b.repo), cwd=tmp_path)
    assert cache_files(b.repo) == 0
    got = json.loads(b.kgit("get", "m@v1", "--json").stdout)
    assert got["formats"]["keras"]["fetched"] is True
    assert cache_files(b.repo) == len(listing) + 1
    reference = np.load(a.repo / "artifacts/m/keras/v1/reference_outputs.npz")["output_0"]
    loaded = json.loads(b.run(sys.executable, "-c", LOAD).stdout)
    assert loaded["compiled"] and np.max(np.abs(np.asarray(loaded["outputs"]) - reference)) <= 1e-6
    assert json.loads(b.kgit("check", "--json").stdout) == {"ok": True, "problems": []}

    # machine C: plain DVC, `dvc pull`; and `dvc artifacts get` without cloning
    c = machine(tmp_path, "c", server)
    c.run("git", "clone", "-q", str(origin), str(c.repo), cwd=tmp_path)
    c.run("python-m", "dvc", "pull")
    assert json.loads((c.repo / "artifacts/m/keras/v1/metadata.json").read_text())["version"] == "v1"
    out = tmp_path / "fetched"
    c.run("python-m", "dvc", "artifacts", "get", str(origin), "m", "--rev", "v1.0.0", "-o", str(out), cwd=tmp_path)
    assert (out / "model.keras").read_bytes() == (a.repo / "artifacts/m/keras/v1/model.keras").read_bytes()

    # the server hook checks the bucket too: a release pushed past the client hook, data not uploaded
    a.kgit("release", "m", "--from", str(model_file), "-f", "keras", "--param", "second=1")
    skipped = a.run("git", "push", "--no-verify", "origin", "main", check=False)
    assert skipped.returncode != 0 and "pre-receive hook declined" in skipped.stderr, skipped.stderr
    assert (
        f"remote: kgit: rejected: m@v2.0.0 (keras): 2 DVC object(s) are not in the DVC remote {URL}" in skipped.stderr
    ) or (
        f"remote: kgit: rejected: m@v2.0.0 (keras): 1 DVC object(s) are not in the DVC remote {URL}" in skipped.stderr
    ), skipped.stderr
    assert git(origin, "tag", "-l") == "m@v1.0.0"
    # through the client hook it uploads first, and the server accepts
    a.run("git", "push", "origin", "main")
    assert git(origin, "tag", "-l").split() == ["m@v1.0.0", "m@v2.0.0"]


@pytest.mark.slow
def test_server_hook_reads_the_endpoint_from_the_release_commit(
    tmp_path: Path, server: s3.S3Server, model_file: Path
) -> None:
    """Without --dvc-remote, the hook checks the remote of the pushed commit's .dvc/config, endpoint included."""
    a, origin = setup_a(tmp_path, server, model_file, prefix="from-commit")
    a.kgit("server", "install", str(origin))
    skipped = a.run("git", "push", "--no-verify", "origin", "main", check=False)
    assert "remote: kgit: rejected: m@v1.0.0 (keras)" in skipped.stderr
    assert f"are not in the DVC remote s3://{BUCKET}/from-commit" in skipped.stderr, skipped.stderr
    # the hook's credentials are its environment's (here, that of the local push): wrong ones, one line
    a.env.update(server.env(("AKIAWRONGWRONGWRONG0", "x" * 40)))
    denied = a.run("git", "push", "--no-verify", "origin", "main", check=False)
    rejections = [line.rstrip() for line in denied.stderr.splitlines() if line.startswith("remote: kgit: rejected:")]
    assert rejections == [
        f"remote: kgit: rejected: cannot check that m@v1.0.0's data was uploaded: DVC remote "
        f"s3://{BUCKET}/from-commit at {server.endpoint} refused the credentials (403 Forbidden): "
        "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or ~/.aws of the user "
        "this runs as) and that the key may read and write the bucket"
    ], denied.stderr
    assert git(origin, "tag", "-l") == ""
    a.env.update(server.env())
    a.run("git", "push", "origin", "main")
    assert git(origin, "tag", "-l") == "m@v1.0.0"


# -- failures: nothing recorded as published, one line each -----------------------------------------
@pytest.mark.slow
def test_server_gone_before_and_during_the_push(tmp_path: Path, server: s3.S3Server, model_file: Path) -> None:
    a, origin = setup_a(tmp_path, server, model_file, prefix="gone")
    # a server that went away: the pushed data is not sent, nor are the git refs
    closed = s3.free_port()
    a.run("python-m", "dvc", "remote", "modify", "--local", "kgit", "endpointurl", f"http://127.0.0.1:{closed}")
    push = a.run("git", "push", "origin", "main", check=False)
    refused_in_one_line(
        push,
        f"cannot reach DVC remote kgit (s3://{BUCKET}/gone at http://127.0.0.1:{closed})",
        "check that the server is up",
        "nothing was uploaded",
    )
    assert git(origin, "tag", "-l") == "" and published(a.repo) == {}

    # a server that goes away in the middle of the upload (at its first PUT)
    proxy = s3.DyingProxy(server.port)
    try:
        a.run("python-m", "dvc", "remote", "modify", "--local", "kgit", "endpointurl", proxy.endpoint)
        push = a.run("git", "push", "origin", "main", check=False)
        assert proxy.died.is_set()
    finally:
        proxy.close()
    refused_in_one_line(
        push,
        f"uploading to DVC remote kgit (s3://{BUCKET}/gone at {proxy.endpoint}) failed: cannot reach DVC remote kgit",
        "push again once that is fixed",
        uploading=True,
    )
    assert git(origin, "tag", "-l") == "" and published(a.repo) == {}

    # the server is back, but the URL names a bucket that does not exist
    a.run("python-m", "dvc", "remote", "modify", "--local", "--unset", "kgit", "endpointurl")
    a.run("python-m", "dvc", "remote", "modify", "--local", "kgit", "url", "s3://no-such-bucket/gone")
    push = a.run("git", "push", "origin", "main", check=False)
    refused_in_one_line(
        push,
        f"DVC remote kgit (s3://no-such-bucket/gone at {server.endpoint}): the bucket does not "
        "exist: create it, or fix the URL",
        uploading=True,
    )
    assert git(origin, "tag", "-l") == "" and published(a.repo) == {}

    # all fixed: the retry uploads and publishes
    a.run("python-m", "dvc", "remote", "modify", "--local", "--unset", "kgit", "url")
    a.run("git", "push", "origin", "main")
    assert git(origin, "tag", "-l") == "m@v1.0.0" and list(published(a.repo)) == [f"s3://{BUCKET}/gone"]


PROBE = """
import json, sys
import boto3, botocore
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
said = {}
for name, call in [
    ("head", lambda: s3.head_object(Bucket=sys.argv[2], Key="creds/no-such-object")),
    ("get", lambda: s3.get_object(Bucket=sys.argv[2], Key="creds/no-such-object")),
    ("list", lambda: s3.list_objects_v2(Bucket=sys.argv[2], Prefix="creds/")),
]:
    try:
        call()
        said[name] = "ok"
    except botocore.exceptions.ClientError as exc:
        said[name] = [exc.response["Error"].get("Code"), exc.response["Error"].get("Message")]
print(json.dumps(said))
"""


def what_the_key_gets(m: Machine, server: s3.S3Server) -> str:
    """For a failure message: what the server answers the key in ``m``'s environment (boto3, from the
    same environment), the AWS variables there (secrets left out), and the end of the server's log."""
    said = m.run(sys.executable, "-c", PROBE, server.endpoint, BUCKET, check=False)
    aws = {k: v for k, v in m.env.items() if k.startswith("AWS_") and "SECRET" not in k}
    return f"the key gets: {said.stdout.strip()} {said.stderr[-1000:]}\nenvironment: {aws}\nserver log:\n{server.log.read_text()[-3000:]}"


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[s3.S3Server]:
    """A server of its own: the credentials test judges moto's answers to one key after another,
    with no other test's traffic on the same server."""
    srv = s3.start(tmp_path / "moto")
    srv.create_bucket(BUCKET)
    yield srv
    srv.stop()


@pytest.mark.slow
def test_bad_credentials_refuse_push_and_get(tmp_path: Path, own_server: s3.S3Server, model_file: Path) -> None:
    server = own_server
    a, origin = setup_a(tmp_path, server, model_file, prefix="creds")
    wrong_secret = (server.access_key_id, "not-the-secret-0123456789")
    for key in [("AKIAWRONGWRONGWRONG0", "x" * 40), wrong_secret]:  # unknown key; known key, wrong secret
        a.env.update(server.env(key))
        push = a.run("git", "push", "origin", "main", check=False)
        line = refused_in_one_line(
            push,
            f"DVC remote kgit (s3://{BUCKET}/creds at {server.endpoint}) refused the "
            "credentials (403 Forbidden): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            "nothing was uploaded",
        )
        assert key[1] not in push.stderr and key[1] not in line
        assert git(origin, "tag", "-l") == "" and published(a.repo) == {}
    # a key that may read but not write: the upload itself is refused
    a.env.update(server.env(server.reader))
    push = a.run("git", "push", "origin", "main", check=False)
    assert "kgit: uploading" in push.stderr, f"{push.stderr}\n{what_the_key_gets(a, server)}"
    refused_in_one_line(push, "uploading to DVC remote kgit", "refused the credentials", uploading=True)
    assert git(origin, "tag", "-l") == "" and published(a.repo) == {} and not server.keys(BUCKET, "creds")

    # right key, but this machine lacks DVC's S3 plugin
    a.env.update(server.env())
    saved = a.env["PYTHONPATH"]
    a.env["PYTHONPATH"] = f"{hide_plugin(tmp_path)}:{saved}"
    push = a.run("git", "push", "origin", "main", check=False)
    refused_in_one_line(push, "needs DVC's s3 plugin (dvc-s3), which is not installed: pip install 'kgit[s3]'")
    assert git(origin, "tag", "-l") == "" and published(a.repo) == {}
    a.env["PYTHONPATH"] = saved

    a.run("git", "push", "origin", "main")
    assert git(origin, "tag", "-l") == "m@v1.0.0"

    # a teammate with a wrong key: `kgit get` says so in one line and leaves nothing behind
    b = machine(tmp_path, "b", server, ("AKIAWRONGWRONGWRONG0", "x" * 40))
    b.run("git", "clone", "-q", str(origin), str(b.repo), cwd=tmp_path)
    got = b.kgit("get", "m@v1", check=False)
    assert got.returncode == 1 and len(got.stderr.strip().splitlines()) == 1, got.stderr
    assert got.stderr.startswith(
        "kgit: error: fetching artifacts/m/keras/v1.dvc failed: DVC remote kgit "
        f"(s3://{BUCKET}/creds at {server.endpoint}) refused the credentials"
    ), got.stderr
    assert not (b.repo / "artifacts/m/keras/v1").exists() and git(b.repo, "status", "--porcelain") == ""


def test_server_install_options(tmp_path: Path) -> None:
    from conftest import kgit

    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    ok = kgit(
        tmp_path,
        "server",
        "install",
        str(origin),
        "--dvc-remote",
        URL,
        "--dvc-remote-option",
        "endpointurl=http://127.0.0.1:9000",
        "--dvc-remote-option",
        "region=eu-west-1",
    )
    assert ok.returncode == 0, ok.stderr
    assert git(origin, "config", "--get-all", "kgit.dvcRemoteOption").splitlines() == [
        "endpointurl=http://127.0.0.1:9000",
        "region=eu-west-1",
    ]
    same = kgit(
        tmp_path,
        "server",
        "install",
        str(origin),
        "--dvc-remote",
        URL,
        "--dvc-remote-option",
        "region=eu-west-1",
        "--dvc-remote-option",
        "endpointurl=http://127.0.0.1:9000",
    )
    assert "nothing changed" in same.stderr
    secret = kgit(tmp_path, "server", "install", str(origin), "--dvc-remote-option", "secret_access_key=abc123")
    assert secret.returncode == 1 and "credentials are not stored in the repository's config" in secret.stderr
    assert "abc123" not in secret.stderr
    bad = kgit(tmp_path, "server", "install", str(origin), "--dvc-remote-option", "endpoint=http://x")
    assert bad.returncode == 1 and "--remote-option endpoint: DVC has no such setting" in bad.stderr
    assert git(origin, "config", "--get-all", "kgit.dvcRemoteOption").splitlines() == [
        "endpointurl=http://127.0.0.1:9000",
        "region=eu-west-1",
    ]
    assert "removed kgit.dvcRemoteOption" in kgit(tmp_path, "server", "uninstall", str(origin)).stderr
    assert subprocess.run(["git", "config", "--get-all", "kgit.dvcRemoteOption"], cwd=origin).returncode == 1
