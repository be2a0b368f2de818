"""Every .dvc file and YAML file kgit reads goes through one bounded reader: a ~1 KB "billion laughs"
file (YAML aliases nine levels deep) or a deeply nested one, in each file kgit reads, is refused at
once with one line by each command that reads it, client and server; nothing changes.

Timings are printed (`pytest -s`), never asserted: this machine's speed varies too much."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import assert_refused
from support.world import World, forge_tag, git, kgit, run, tag_message

from kgit.core import bounded_yaml

pytestmark = pytest.mark.slow  # a real release, DVC and a server hook

LAUGHS = "".join(
    f"{a}: &{a} [{', '.join([f'*{p}'] * 9 if p else ['lol'] * 9)}]\n" for p, a in zip(["", *"abcdefgh"], "abcdefghi")
)  # 9**9 values once expanded, about 400 bytes
DEEP = "deep: " + "[" * 200 + "]" * 200 + "\n"  # 200 levels (libyaml itself stops at 1,000)
V1 = "m@v1.0.0"
T = TypeVar("T")


def timed(what: str, run_it: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = run_it()
    print(f"{what}: {time.perf_counter() - start:.3f} s")
    return result


def test_the_reader_refuses_a_bomb_in_milliseconds() -> None:
    assert len(LAUGHS) < 1024
    for text, says in ((LAUGHS, "YAML aliases"), (DEEP, "nested too deeply"), ("a: &a [*a]\n", "YAML aliases")):
        start = time.perf_counter()
        with pytest.raises(bounded_yaml.LimitError, match=says):
            bounded_yaml.load(text, "bomb.yaml")
        with pytest.raises(bounded_yaml.LimitError, match=says):
            bounded_yaml.check(text, "bomb.yaml")
        print(f"{says} ({len(text)} bytes) refused in {(time.perf_counter() - start) * 1000:.1f} ms")
    with pytest.raises(bounded_yaml.LimitError, match="nested too deeply"):
        bounded_yaml.load_json("[" * 100_000 + "]" * 100_000, "deep.json")


@pytest.fixture
def w(guarded_world: World, tmp_path: Path) -> World:
    """A copy of the guarded origin with m@v1 released and pushed through it (tests/conftest.py)."""
    return guarded_world.copy(tmp_path / "w")


def one_line(proc: subprocess.CompletedProcess[str], says: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and lines[-1].startswith("kgit: error: "), proc.stderr
    assert says in lines[-1], lines[-1]
    return str(lines[-1])


def rejected_by_server(proc: subprocess.CompletedProcess[str], says: str) -> None:
    assert proc.returncode != 0 and "pre-receive hook declined" in proc.stderr, proc.stderr
    assert "remote: kgit: rejected:" in proc.stderr and says in proc.stderr, proc.stderr


@pytest.mark.parametrize("bomb,says", [(LAUGHS, "YAML aliases"), (DEEP, "nested too deeply")])
def test_a_released_dvc_file_at_a_tagged_commit(w: World, bomb: str, says: str) -> None:
    """A forged release m@v9 whose committed .dvc file is a bomb (its tag message is otherwise right)."""
    v1 = (w.repo / "artifacts/m/keras/v1.dvc").read_text()
    outs = v1.split("meta:")[0].replace("path: v1", "path: v9")
    (w.repo / "artifacts/m/keras/v9.dvc").write_text(bomb + outs + "meta:\n  kgit: x\n")
    git(w.repo, "add", "-f", "artifacts/m/keras/v9.dvc")
    git(w.repo, "commit", "-q", "--no-verify", "-m", "nine")
    message = tag_message(w.repo, V1).replace('"version": "v1"', '"version": "v9"').replace('/v1"', '/v9"')
    forge_tag(w.repo, "m@v9.0.0", "HEAD", message)
    where = "artifacts/m/keras/v9.dvc"

    listed = timed("kgit list", lambda: kgit(w.repo, "list", "--json"))
    assert listed.returncode == 0  # list reads the tags alone
    assert "m@v9.0.0" in listed.stdout
    line = one_line(timed("kgit show", lambda: kgit(w.repo, "show", "m@v9")), says)
    assert where in line
    one_line(timed("kgit promote", lambda: kgit(w.repo, "promote", "m@v9", "prod")), says)
    checked = timed("kgit validate", lambda: kgit(w.repo, "validate", "m@v9", "--json"))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
    assert says in checked.stdout + checked.stderr
    # the work tree holds it now: `kgit release` would have DVC parse it, and refuses first
    assert_refused(w.repo, "release", "m", "--from", "support.zoo:plain_model", expect=says, alone=True)
    pushed = timed("git push (pre-push)", lambda: w.push("main", "m@v9.0.0"))
    assert pushed.returncode != 0 and "push refused" in pushed.stderr and says in pushed.stderr, pushed.stderr
    before = w.origin_tags()
    rejected_by_server(
        timed("git push --no-verify (pre-receive)", lambda: w.push("--no-verify", "main", "m@v9.0.0")), says
    )
    assert w.origin_tags() == before


@pytest.mark.parametrize("name", ["dvc.yaml", "dvc.lock", "data.dvc"])
@pytest.mark.parametrize("bomb,says", [(LAUGHS, "YAML aliases"), (DEEP, "nested too deeply")])
def test_dvc_files_dvc_would_read(w: World, name: str, bomb: str, says: str) -> None:
    """A committed dvc.yaml, dvc.lock or other .dvc file that is a bomb: DVC alone parses it with no
    limit in `dvc add`, `dvc repro` and checkout (a 500-byte one kept `dvc add` busy for over a minute)."""
    path = w.repo / name
    text = path.read_text() if path.exists() else "outs:\n- path: data\n"
    path.write_text(bomb + text)
    git(w.repo, "add", name)
    git(w.repo, "commit", "-q", "--no-verify", "-m", f"bomb in {name}")
    line = assert_refused(w.repo, "release", "m", "--from", "support.zoo:plain_model", expect=says, alone=True)
    assert name in line
    start = time.perf_counter()
    assert_refused(w.repo, "release", "m", "--from", "support.zoo:plain_model", expect=name)
    print(f"kgit release, {name}: {time.perf_counter() - start:.3f} s")
    if name != "data.dvc":  # kgit init reads dvc.yaml and dvc.lock itself
        assert_refused(w.repo, "init", expect=says)
    # the pre-push hook, when it validates through `dvc repro`: a push of the release to another remote
    (w.repo / ".git" / "kgit" / "validated.json").unlink()
    other = w.base / "other.git"
    git(w.base, "init", "-q", "--bare", str(other))
    start = time.perf_counter()
    pushed = run(w.repo, "git", "push", str(other), "main", V1)
    print(f"git push (pre-push), {name}: {time.perf_counter() - start:.3f} s")
    assert pushed.returncode != 0 and "push refused" in pushed.stderr, pushed.stderr
    assert name in pushed.stderr and says in pushed.stderr, pushed.stderr
    assert git(other, "tag", "-l") == ""


@pytest.mark.parametrize("bomb,says", [(LAUGHS, "YAML aliases"), (DEEP, "nested too deeply")])
def test_gto_gates_and_signing_policy(w: World, bomb: str, says: str) -> None:
    (w.repo / ".gto").write_text(bomb + "stages: [dev, prod]\n")
    git(w.repo, "add", ".gto")
    git(w.repo, "commit", "-q", "-m", "gto")
    line = assert_refused(w.repo, "promote", "m@v1", "prod", expect=says)
    assert ".gto" in line
    git(w.repo, "rm", "-q", ".gto")
    (w.repo / ".kgit").mkdir(exist_ok=True)
    (w.repo / ".kgit/gates.yaml").write_text(bomb + "stages: {}\n")
    git(w.repo, "add", ".kgit/gates.yaml")
    git(w.repo, "commit", "-q", "--no-verify", "-m", "gates")
    for args in (["promote", "m@v1", "prod"], ["list", "--sort", "acc"]):
        start = time.perf_counter()
        assert ".kgit/gates.yaml" in assert_refused(w.repo, *args, expect=says)
        print(f"kgit {args[0]}, gates: {time.perf_counter() - start:.3f} s")
    git(w.repo, "rm", "-q", ".kgit/gates.yaml")
    (w.repo / ".kgit").mkdir(exist_ok=True)
    (w.repo / ".kgit/signing.yaml").write_text(bomb + "policy: optional\n")
    git(w.repo, "add", ".kgit/signing.yaml")
    git(w.repo, "commit", "-q", "--no-verify", "-m", "policy")
    line = assert_refused(w.repo, "release", "m", "--from", "support.zoo:plain_model", expect=says)
    assert ".kgit/signing.yaml" in line


def test_gates_pushed_to_the_server(w: World) -> None:
    """The hooks read the committed .kgit/gates.yaml when a stage tag is pushed: the client's at the
    pushed commit, the server's as on its branch before the push."""
    assert kgit(w.repo, "promote", "m@v1", "prod").returncode == 0
    (w.repo / ".kgit").mkdir(exist_ok=True)
    (w.repo / ".kgit/gates.yaml").write_text(LAUGHS + "stages: {}\n")
    git(w.repo, "add", ".kgit/gates.yaml")
    git(w.repo, "commit", "-q", "--no-verify", "-m", "gates")
    pushed = timed("git push (pre-push), gates", lambda: w.push("main", "m#prod#1"))
    assert pushed.returncode != 0 and "YAML aliases" in pushed.stderr, pushed.stderr
    assert (
        w.push("--no-verify", "--no-follow-tags", "main").returncode == 0
    )  # a plain commit: the server reads no gates
    rejected_by_server(
        timed("git push --no-verify (pre-receive), gates", lambda: w.push("--no-verify", "refs/tags/m#prod#1")),
        "YAML aliases",
    )
    assert "m#prod#1" not in w.origin_tags()


def test_a_released_dvc_file_edited_in_the_work_tree(w: World) -> None:
    dvc = w.repo / "artifacts/m/keras/v1.dvc"
    dvc.write_text(LAUGHS + dvc.read_text())
    checked = timed("kgit validate, work tree .dvc", lambda: kgit(w.repo, "validate", "--all", "--json"))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    result = json.loads(checked.stdout)[0]
    assert result["check"] == "release" and "YAML aliases" in result["error"]
    assert_refused(w.repo, "release", "m", "--from", "support.zoo:plain_model", expect="YAML aliases")


def test_serving_manifest(w: World, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    """kgit's own record of a TensorFlow Serving folder (JSON: bounded by size and depth)."""
    import kgit as api

    api.release(plain_model, "m", formats=["savedmodel"], repo=w.repo)
    out = tmp_path / "serving"
    assert kgit(w.repo, "serve-layout", "m@v2", "--out", str(out)).returncode == 0
    manifest = out / "kgit-serving.json"
    for text, says in (
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            json.dumps(
                {"schema_version": 1, "models": {"m": {"labels": {}, "versions": [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}}}
            ),
            "nested too deeply",
        ),
    ):
        manifest.write_text(text)
        start = time.perf_counter()
        proc = kgit(w.repo, "serve-layout", "m@v2", "--out", str(out))
        print(f"kgit serve-layout, manifest: {time.perf_counter() - start:.3f} s")
        assert says in one_line(proc, "is not a manifest kgit wrote")
        assert manifest.read_text() == text


def test_a_dataset_dvc_file(w: World) -> None:
    """`--dataset` reads the dataset's hash from its .dvc file (or dvc.lock)."""
    (w.repo / "data").mkdir()
    (w.repo / "data/x.csv").write_text("1\n")
    (w.repo / "data.dvc").write_text(LAUGHS + "outs:\n- md5: 0123\n  path: data\n")
    proc = timed(
        "kgit release --dataset",
        lambda: kgit(w.repo, "release", "m", "--from", "support.zoo:plain_model", "--dataset", "data"),
    )
    assert "data.dvc" in one_line(proc, "YAML aliases")
    assert git(w.repo, "tag", "-l") == V1
