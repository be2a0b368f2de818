"""Loading code is the loader's decision: a release made with --unsafe (a Python Lambda) runs its
code on a teammate's machine only when that teammate opts in, and a release whose configuration
names a module outside Keras' own and the release's declared ones is never loaded.

Two machines, honestly (separate clones, HOME and DVC caches; the shared git and DVC remotes), real
git, DVC, Keras and kgit's command line. The Lambda leaves a file in $HOME each time it runs, so
each machine shows whether the code ran there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import bare_origin, git, snapshot
from support.machine import Machine

pytestmark = pytest.mark.slow  # TensorFlow models and real pushes: the full suite, not the fast tier

LOAD = """
import sys, numpy as np, kgit
try:
    model = kgit.load(sys.argv[1], unsafe=sys.argv[2] == "unsafe")
except kgit.KgitError as exc:
    print("refused:", exc)
else:
    print("loaded:", np.asarray(model(np.ones((1, 4), "float32"))).tolist())
"""

# A teammate with push access who runs a modified kgit: the released .keras names a module of theirs
# (committed in the repository, so importable from a clone's root) and the release is not validated.
FORGE = """
import json, zipfile
import kgit
from kgit.models import formats
from kgit.workflow import releasing
from kgit.workflow.roundtrip import FolderResult

save = formats.save


def tampered(model, fmt, folder, **kw):
    save(model, fmt, folder, **kw)
    path = folder / "model.keras"
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer["module"] = "evil_marker"
            break
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


formats.save = tampered
releasing._validate = lambda staging, req: [FolderResult(str(staging / f), f, True) for f in req.formats]
print(kgit.release("support.zoo:plain_model", "forged", formats=["keras"]).tag)
"""


@dataclass
class World:
    base: Path
    origin: Path
    a: Machine  # releases with --unsafe; holds the signing key the clones pin
    b: Machine  # a teammate's fresh clone


def ran(m: Machine, marker: str = "lambda-ran") -> bool:
    return (m.home / marker).exists()


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit 1, no traceback, exactly one `kgit: error:` line, the last one."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("kgit: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A releases `lam` (signed) and `lam2` (unsigned), both with --unsafe, and pushes; B clones."""
    base = tmp_path_factory.mktemp("code")
    origin = bare_origin(base)
    a, b = Machine(base, "a"), Machine(base, "b")
    a.run("git", "clone", "-q", str(origin), str(a.repo), cwd=base)
    (a.repo / "train.py").write_text("# training code\n")
    a.run("git", "add", "train.py")
    a.run("git", "commit", "-q", "-m", "code")
    a.kgit("init", "--remote", str(base / "dvc-store"))
    a.kgit("keys", "init")  # policy optional: A's releases are signed
    a.kgit("release", "lam", "--from", "support.zoo:marker_lambda_model", "-f", "keras", "--unsafe")
    assert ran(a)  # the releaser opted in: the code ran on A's machine, in A's validation
    key = a.run("git", "config", "kgit.signingKey").stdout.strip()
    a.run("git", "config", "--unset", "kgit.signingKey")
    a.kgit("release", "lam2", "--from", "support.zoo:marker_lambda_model", "-f", "keras", "--unsafe")
    a.run("git", "config", "kgit.signingKey", key)
    pushed = a.run("git", "push", "-u", "origin", "main")
    # A's own releases were validated when made: the hook does not reload them, it uploads them
    assert "validating" not in pushed.stderr and "uploading lam2@v1 (keras), lam@v1 (keras)" in pushed.stderr, (
        pushed.stderr
    )
    b.run("git", "clone", "-q", str(origin), str(b.repo), cwd=base)
    b.kgit("hooks", "install")
    return World(base, origin, a, b)


def test_a_release_made_with_unsafe_runs_its_code_only_where_the_loader_opts_in(world: World) -> None:
    b = world.b
    # kgit get brings and verifies the bytes, runs nothing, and says what loading will ask
    got = b.kgit("get", "lam@v1")
    assert (
        "kgit: warning: lam@v1 (keras): layer 'triple' is a Python Lambda (arbitrary code): loading it runs that "
        "code, so kgit validate and kgit.load refuse it unless you pass --unsafe"
    ) in got.stderr
    b.kgit("get", "lam2@v1")
    assert not ran(b)

    # validate: refused in one line naming the layer and the fix, nothing changed, nothing ran
    before = snapshot(b.repo)
    line = error_line(b.kgit("validate", "lam@v1", check=False))
    assert (
        "lam@v1 (keras): layer 'triple' is a Python Lambda (arbitrary code): refused; run "
        "`kgit validate --unsafe lam@v1` (kgit.validate(..., unsafe=True)) only if you trust who released it"
    ) in line
    table = json.loads(b.kgit("validate", "lam@v1", "--json", check=False).stdout)
    assert [(r["check"], r["status"]) for r in table] == [("code", "failed")]
    assert snapshot(b.repo) == before and not ran(b)

    # kgit.load: the same refusal, raised as a KgitError
    out = b.run(sys.executable, "-c", LOAD, "lam@v1", "safe").stdout
    assert out.startswith(
        "refused: lam@v1 (keras): layer 'triple' is a Python Lambda (arbitrary code): refused; "
        "pass --unsafe (kgit.load(..., unsafe=True)) only if you trust who released it"
    ), out
    assert not ran(b)

    # B's pre-push hook never runs someone else's code: pushing A's releases on to another
    # repository needs them validated here first (the hook itself never opts in)
    mirror = world.base / "mirror.git"
    git(world.base, "init", "-q", "--bare", "--initial-branch=main", str(mirror))
    b.run("git", "remote", "add", "mirror", str(mirror))
    proc = b.run("git", "push", "--follow-tags", "mirror", "main", check=False)
    assert proc.returncode != 0 and "layer 'triple' is a Python Lambda (arbitrary code): refused" in proc.stderr, (
        proc.stderr
    )
    assert "push refused" in proc.stderr and not ran(b)
    assert git(mirror, "tag", "-l") == ""

    # this clone's own policy: releases made with --unsafe and signed by a key it trusts may run
    b.run("git", "config", "kgit.unsafeLoading", "signed")
    line = error_line(b.kgit("validate", "lam2@v1", check=False))  # made with --unsafe, but not signed
    assert "lam2@v1 (keras): layer 'triple' is a Python Lambda" in line and not ran(b)
    out = b.run(sys.executable, "-c", LOAD, "lam@v1", "safe").stdout  # signed by A, whose key B pinned
    assert out.startswith("loaded: [[3.0, 3.0, 3.0, 3.0]]"), out
    assert ran(b)
    b.run("git", "config", "--unset", "kgit.unsafeLoading")
    (b.home / "lambda-ran").unlink()

    # B opts in: the code runs on B's machine, validation passes and is remembered, the push goes
    passed = json.loads(b.kgit("validate", "--unsafe", "lam@v1", "lam2@v1", "--json").stdout)
    assert [r["status"] for r in passed] == ["passed", "passed"] and ran(b)
    (b.home / "lambda-ran").unlink()
    proc = b.run("git", "push", "--follow-tags", "mirror", "main")
    assert "validating" not in proc.stderr and not ran(b)  # validated here before: not reloaded
    assert sorted(git(mirror, "tag", "-l").split()) == ["lam2@v1.0.0", "lam@v1.0.0"]
    out = b.run(sys.executable, "-c", LOAD, "lam@v1", "unsafe").stdout
    assert out.startswith("loaded: [[3.0, 3.0, 3.0, 3.0]]"), out
    assert ran(b)


def test_a_release_naming_a_foreign_module_is_never_loaded(world: World) -> None:
    a, b = world.a, world.b
    (a.repo / "evil_marker.py").write_text(
        "import os, pathlib\npathlib.Path(os.environ['HOME'], 'evil-imported').touch()\n"
    )
    a.run("git", "add", "evil_marker.py")
    a.run("git", "commit", "-q", "-m", "helpers")
    assert a.run(sys.executable, "-c", FORGE).stdout.strip() == "forged@v1.0.0"
    a.run("git", "push", "origin", "main")  # A's own record says validated: the hook uploads it
    b.run("git", "pull", "-q", "--no-rebase", "--tags", "origin", "main")
    b.kgit("get", "forged@v1")  # the bytes are as released (and signed by A, a trusted key)

    expect = (
        "forged@v1 (keras): layer 'dense' names module 'evil_marker', which is neither Keras' nor declared by "
        "the release (importing it would run its code): refused, with or without --unsafe"
    )
    for extra in ([], ["--unsafe"]):
        assert expect in error_line(b.kgit("validate", *extra, "forged@v1", check=False))
    out = b.run(sys.executable, "-c", LOAD, "forged@v1", "unsafe").stdout
    assert out.startswith(f"refused: {expect}"), out
    assert not ran(b, "evil-imported")
