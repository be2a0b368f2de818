"""kgit compat in real environments made with uv from the package index: the installed Keras 3 and
TensorFlow, an older Keras 3 (3.12) with the same TensorFlow, tf_keras; a model that loads everywhere
and one built with a layer only Keras 3.13+ has; the cache; the records pushed through real hooks; the
require_compat gate; TF Serving's op check against TensorFlow 2.12."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_refused
from support.world import World, forge_tag, git, kgit, run
from test_compat_records import uv_cache

from kgit.registry.compat_records import CompatRecord, env_key

pytestmark = pytest.mark.slow


def installed() -> tuple[str, str]:
    from importlib.metadata import version

    return ".".join(version("keras").split(".")[:2]), ".".join(version("tensorflow").split(".")[:2])


KERAS, TF = installed()
ENVS = (
    f'current: ["keras=={KERAS}.*", "tensorflow=={TF}.*"]\n'
    f'older: ["keras==3.12.*", "tensorflow=={TF}.*"]\n'
    f'legacy: ["tf-keras=={TF}.*"]\n'
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A guarded origin; dense@v1 (savedmodel), newlayer@v1 (keras) and conv@v1 (savedmodel, TensorFlow's
    generic Conv op) released and pushed; .kgit/compat.yaml naming three environments."""
    from support import compat_models as cm

    import kgit as api

    base = tmp_path_factory.mktemp("compat-world")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "UV_CACHE_DIR")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("compat-cache"))  # kgit's environments: made here
    os.environ["UV_CACHE_DIR"] = uv_cache()  # the machine's wheels: TensorFlow downloaded once
    w = World.create(base)
    assert kgit(w.base, "server", "install", str(w.origin), "--dvc-remote", str(w.store)).returncode == 0
    (w.repo / ".kgit").mkdir()
    (w.repo / ".kgit" / "compat.yaml").write_text(ENVS)
    git(w.repo, "add", ".kgit/compat.yaml")
    git(w.repo, "commit", "-qm", "environments we promise")
    api.release(cm.dense_model(), "dense", formats=["savedmodel"], repo=w.repo)
    api.release(cm.adaptive_pooling_model(), "newlayer", formats=["keras"], repo=w.repo)
    api.release(
        cm.generic_conv_model(),
        "conv",
        formats=["savedmodel"],
        repo=w.repo,
        custom_objects=["support.compat_models:GenericConv"],
    )
    assert w.push("main").returncode == 0
    yield w
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def compat_json(repo: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = kgit(repo, "compat", *args, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip(), f"exit {proc.returncode}, no report on stdout: {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def by_env(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["environment"]: e for e in report["environments"]}


def test_a_model_loads_in_every_environment_and_the_results_are_recorded(world: World) -> None:
    started = time.monotonic()
    code, report = compat_json(world.repo, "dense@v1", "--env", "current", "--env", "older", "--env", "legacy")
    print(
        f"\nthree environments made and checked in {time.monotonic() - started:.1f} s: "
        + ", ".join(
            f"{e['environment']} {e['env_seconds']:.1f} s + run {e['run_seconds']:.1f} s"
            for e in report["environments"]
        )
    )
    envs = by_env(report)
    assert code == 0 and report["ok"], report
    assert {k: e["summary"] for k, e in envs.items()} == {"current": "loads", "older": "loads", "legacy": "loads"}
    assert envs["older"]["packages"]["keras"].startswith("3.12.") and envs["legacy"]["flavour"] == "tf_keras"
    assert envs["current"]["packages"]["keras"].startswith(KERAS + ".")
    assert {e["recorded"] for e in envs.values()} == {"recorded"}
    assert len({e["path"] for e in envs.values()}) == 3
    tags = git(world.repo, "tag", "-l", "dense@v1.0.0#compat#*").split()
    assert sorted(tags) == sorted(e["tag"] for e in envs.values())
    listed = {r["tag"]: r for r in json.loads(kgit(world.repo, "list", "--json").stdout)}
    assert sorted(c["result"] for c in listed["dense@v1.0.0"]["compat"]) == ["loads"] * 3
    shown = kgit(world.repo, "show", "dense@v1").stdout
    assert "older: keras 3.12." in shown and "legacy: keras" in shown and "tf-keras" in shown
    text = kgit(world.repo, "compat", "dense@v1", "--env", "older")
    assert (
        text.returncode == 0
        and text.stdout.startswith("older (keras 3.12.")
        and text.stdout.rstrip().endswith("): loads")
    )


def test_a_model_built_with_a_later_layer_fails_in_the_older_keras(world: World) -> None:
    code, report = compat_json(world.repo, "newlayer@v1", "--env", "current", "--env", "older", "--env", "legacy")
    envs = by_env(report)
    assert code == 1 and not report["ok"]
    assert envs["current"]["summary"] == "loads"
    assert envs["older"]["result"] == "fails" and "AdaptiveAveragePooling2D" in envs["older"]["error"], envs["older"]
    assert envs["legacy"]["result"] == "fails"  # tf_keras does not read Keras 3's .keras files
    proc = kgit(world.repo, "compat", "newlayer@v1", "--env", "older")
    assert proc.returncode == 1 and len(proc.stdout.splitlines()) == 1
    assert "fails (ValueError: Could not deserialize 'keras.layers.AdaptiveAveragePooling2D'" in proc.stdout
    kgit(world.repo, "compat", "newlayer@v1", "--quick", "--env", "older")  # downloads Keras 3.12's wheel once
    started = time.monotonic()
    quick = kgit(world.repo, "compat", "newlayer@v1", "--quick", "--env", "older")
    took = time.monotonic() - started
    assert (
        quick.returncode == 1
        and "keras 3.12." in quick.stdout
        and "has no layer class AdaptiveAveragePooling2D" in quick.stdout
    )
    assert kgit(world.repo, "compat", "newlayer@v1", "--quick", "--env", "current").returncode == 0
    print(f"\nkgit compat --quick (wheel cached): {took:.2f} s")


def test_a_second_run_reuses_the_environment(world: World) -> None:
    compat_json(world.repo, "dense@v1", "--env", "older")
    code, report = compat_json(world.repo, "dense@v1", "--env", "older", "--no-record")
    env = report["environments"][0]
    before = os.stat(env["path"])
    code, again = compat_json(world.repo, "dense@v1", "--env", "older")
    after = by_env(again)["older"]
    assert code == 0 and env["reused"] and after["reused"] and after["path"] == env["path"]
    assert os.stat(after["path"]).st_ino == before.st_ino and os.stat(after["path"]).st_mtime_ns == before.st_mtime_ns
    assert after["recorded"] == "already recorded"
    assert [p.name for p in Path(env["path"]).parent.iterdir() if p.name.startswith(".")] == []


def test_a_killed_creation_leaves_no_environment_and_the_next_run_makes_it(world: World) -> None:
    root = Path(os.environ["XDG_CACHE_HOME"]) / "kgit" / "envs"
    root.mkdir(parents=True, exist_ok=True)  # as the first environment of a run makes it
    before = {p.name for p in root.iterdir()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kgit",
            "compat",
            "dense@v1",
            "--with",
            "keras==3.13.*",
            "--with",
            f"tensorflow=={TF}.*",
            "--no-record",
        ],
        cwd=world.repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not any(".tmp-" in p.name for p in root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    # its helper (uv, creating the environment) is stopped where it is, then kgit is killed
    stopped: list[int] = []
    while not stopped and time.monotonic() < deadline:
        for pid in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
    assert stopped, "kgit compat started no helper process"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the helper dies with it (it would otherwise go on writing into what the next run cleans up)
    gone = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in stopped) and time.monotonic() < gone:
        time.sleep(0.05)
    left = [pid for pid in stopped if Path(f"/proc/{pid}").exists()]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"helper processes {left} outlived the killed kgit"
    new = {p.name for p in root.iterdir()} - before
    # no environment (a folder); the lock and the memo of resolved versions may be there
    assert [n for n in new if (root / n).is_dir() and not n.startswith(".")] == [], new
    code, report = compat_json(
        world.repo, "dense@v1", "--with", "keras==3.13.*", "--with", f"tensorflow=={TF}.*", "--no-record"
    )
    assert code == 0 and report["environments"][0]["reused"] is False
    assert not any(".tmp-" in p.name for p in root.iterdir())


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_errors_are_one_line(world: World, tmp_path: Path) -> None:
    assert_refused(world.repo, "compat", "dense@v1", "--with", "keras==3.99.0", expect="keras==3.99.0 does not exist")
    assert_refused(world.repo, "compat", "dense@v1", "--env", "nope", expect="defines no environment 'nope'")
    assert_refused(world.repo, "compat", "dense@v1", expect="name an environment")
    clone = world.clone("fresh")
    assert_refused(clone, "compat", "dense@v1", "--env", "older", expect="run `kgit get dense@v1`")


def test_records_travel_and_the_hooks_refuse_malformed_ones(world: World, tmp_path: Path) -> None:
    w = world.copy(tmp_path / "w")
    compat_json(w.repo, "dense@v1", "--env", "older")
    assert w.push("main").returncode == 0  # push.followTags sends the records with the branch
    records = [t for t in w.origin_tags() if "#compat#" in t]
    assert records and all(t.startswith(("dense@v1.0.0#compat#", "newlayer@v1.0.0#compat#")) for t in records)
    commit = git(w.repo, "rev-list", "-n1", "dense@v1.0.0")
    packages = {"keras": "3.12.0", "tensorflow": "2.21.0"}
    good = CompatRecord(
        "dense",
        "v1",
        env_key(packages, "3.11.7", "linux-x86_64"),
        "loads",
        packages,
        "3.11.7",
        "linux-x86_64",
        formats={"savedmodel": {"result": "loads", "max_diff": 0.0, "error": None}},
    )
    forged = good.message().replace('"keras": "3.12.0"', '"keras": "3.15.1"')  # a key that is not its packages'
    forge_tag(w.repo, good.tag_name(), commit, forged)
    proc = w.push(good.tag_name())
    assert proc.returncode != 0 and "is not the key of the environment" in proc.stderr, proc.stderr
    proc = w.push("--no-verify", good.tag_name())
    assert "remote: kgit: rejected: new compat record" in proc.stderr and good.tag_name() not in w.origin_tags()
    git(w.repo, "tag", "-d", good.tag_name())
    git(w.repo, "tag", good.tag_name(), commit)  # lightweight
    proc = w.push("--no-verify", good.tag_name())
    assert "is a lightweight tag with a compat record's name" in proc.stderr, proc.stderr
    git(w.repo, "tag", "-d", good.tag_name())
    other = git(w.repo, "rev-list", "-n1", "newlayer@v1.0.0")
    forge_tag(w.repo, good.tag_name(), other, good.message())  # on another release's commit
    proc = w.push("--no-verify", good.tag_name())
    assert "not at dense@v1.0.0's release commit" in proc.stderr, proc.stderr
    forge_tag(w.repo, good.tag_name(), commit, good.message())
    assert w.push(good.tag_name()).returncode == 0
    git(w.repo, "tag", "-d", records[0])
    proc = run(w.repo, "git", "push", "--no-verify", "origin", f":refs/tags/{records[0]}")
    assert "deleting the compat record tag" in proc.stderr and records[0] in w.origin_tags()
    assert kgit(w.repo, "check", "--no-data").returncode == 0


def test_require_compat_gates_a_promotion(world: World, tmp_path: Path) -> None:
    w = world.copy(tmp_path / "w")
    compat_json(w.repo, "newlayer@v1", "--env", "older")
    compat_json(w.repo, "dense@v1", "--env", "older")
    (w.repo / ".kgit" / "gates.yaml").write_text("stages:\n  prod:\n    require_compat: [older]\n")
    git(w.repo, "add", ".kgit/gates.yaml")
    git(w.repo, "commit", "-qm", "prod must load in the older Keras")
    assert w.push("main").returncode == 0
    err = assert_refused(w.repo, "promote", "newlayer@v1", "prod", expect="has no compat record that loads in older")
    assert "recorded there: keras 3.12." in err and "fails" in err
    assert kgit(w.repo, "promote", "dense@v1", "prod").returncode == 0
    assert w.push("main").returncode == 0 and "dense#prod#1" in w.origin_tags()
    commit = git(w.repo, "rev-list", "-n1", "newlayer@v1.0.0")
    forge_tag(w.repo, "newlayer#prod#1", commit, "by hand")
    proc = w.push("newlayer#prod#1")
    assert proc.returncode != 0 and "no compat record that loads in older" in proc.stderr
    proc = w.push("--no-verify", "newlayer#prod#1")
    assert "remote: kgit: rejected: new stage tag newlayer#prod#1" in proc.stderr and "compat older" in proc.stderr


def test_serve_layout_refuses_ops_an_older_tf_serving_lacks(world: World, tmp_path: Path) -> None:
    out = tmp_path / "tfs"
    err = assert_refused(
        world.repo,
        "serve-layout",
        "conv@v1",
        "dense@v1",
        "--out",
        str(out),
        "--tf-serving-version",
        "2.12",
        expect="TensorFlow Serving 2.12",
    )
    assert "conv@v1.0.0 uses Conv" in err and "dense@v1.0.0" not in err
    assert not out.exists()
    proc = kgit(world.repo, "serve-layout", "conv@v1", "dense@v1", "--out", str(out), "--tf-serving-version", TF)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"only ops TensorFlow Serving {TF} has" in proc.stderr
        and (out / "conv" / "1000000" / "saved_model.pb").exists()
    )
