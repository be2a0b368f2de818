"""Refusals that need no model come before anything heavy is loaded: `kgit release` with a name,
version, format, source or dataset that cannot be, or a version origin already has, and `kgit
validate -f` with a format that is not released or not here, answer without importing TensorFlow
(nor starting the validation process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bare_origin, git, snapshot

HEAVY = ("tensorflow", "keras", "tf_keras", "h5py", "kgit.models.model_source")
# a release that imports the round trip's module goes on to start the validation process
WORKER = "kgit.workflow.roundtrip"

# Runs kgit's command line once per argument list in one process (an import stays imported, so
# each command's record says what it or the commands before it imported) and prints, per command,
# its exit code, its stderr and the heavy modules imported so far.
DRIVER = """
import contextlib, io, json, sys
from kgit.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
    watched = json.loads(sys.argv[2])
    heavy = sorted(m for m in sys.modules if m in watched or m.split(".")[0] in watched)
    results.append({"args": args, "code": code, "stderr": err.getvalue(), "heavy": heavy})
print(json.dumps(results))
"""


def run_all(repo: Path, commands: list[list[str]]) -> dict[tuple[str, ...], dict[str, object]]:
    """Run ``commands`` in one fresh process in ``repo``; per command: code, stderr, heavy modules."""
    before = snapshot(repo)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands), json.dumps([*HEAVY, WORKER])],
        cwd=repo,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert snapshot(repo) == before  # nothing any refusal left behind
    return {tuple(r["args"]): r for r in json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An initialised repository with m@v1 (keras and h5) whose origin also has other@v1, and a
    file that looks like a model (it is never read)."""
    from support import synthetic

    import kgit

    base = tmp_path_factory.mktemp("cheap")
    other = synthetic.repo_at(base / "other")
    synthetic.release(other, "other", "v1")
    origin = bare_origin(base, other)
    git(other, "push", "-q", "origin", "main", "other@v1.0.0")
    repo = base / "repo"
    git(base, "clone", "-q", str(origin), str(repo))
    git(repo, "tag", "-d", "other@v1.0.0")  # only origin has it now
    git(repo, "rm", "-q", "-r", "artifacts")
    git(repo, "commit", "-q", "-m", "start afresh")
    kgit.init(repo, remote=str(base / "remote"))
    synthetic.release(repo, "m", "v1", ("keras", "h5"))
    (repo / "data.csv").write_text("x\n1\n")
    git(repo, "add", "data.csv")
    git(repo, "commit", "-q", "-m", "data")
    model = base / "model.keras"
    model.write_bytes(b"not read: every refusal below comes first")
    return repo, model


RELEASE_REFUSALS = [
    (("Bad Name",), "invalid model name 'Bad Name'"),
    (("m", "--version", "v1"), "m v1 is already released"),
    (("m", "--version", "v1.0.0"), "m v1.0.0 is already released"),
    (("m", "--version", "1.x"), "invalid version '1.x'"),
    (("m", "-f", "kears"), "unknown format 'kears': did you mean 'keras'?"),
    (("other",), "tag other@v1.0.0 already exists on origin"),
    (("other", "--version", "v1"), "tag other@v1.0.0 already exists on origin"),
    (("m", "--dataset", "data.csv"), "dataset data.csv is not tracked by DVC"),
    (("m", "--bump", "huge"), "invalid bump 'huge'"),
    (("m", "--from-missing"), "model source"),
    (("m", "--from-csv"), "unsupported model file"),
]
VALIDATE_REFUSALS = [
    (("m@v1", "-f", "keras"), "m@v1 (keras) is not present locally: fetch it with `kgit get m@v1 -f keras`"),
    (("m@v1", "-f", "savedmodel"), "m@v1 has no savedmodel format: it was released as keras, h5"),
    (("m@v1", "-f", "kers"), "unknown format 'kers': did you mean 'keras'?"),
    (("m@v2", "-f", "keras"), "m@v2 is not released"),
    (("-f", "keras"), "name the releases whose formats to check"),
]


def _release_args(case: tuple[str, ...], repo: Path, model: Path) -> list[str]:
    name, *rest = case
    source = {"--from-missing": str(model.with_name("nope.keras")), "--from-csv": str(repo / "data.csv")}
    if rest and rest[0] in source:
        return ["release", name, "--from", source[rest[0]]]
    return ["release", name, "--from", str(model), *rest]


@pytest.fixture(scope="module")
def answers(project: tuple[Path, Path]) -> dict[tuple[str, ...], dict[str, object]]:
    """Every refusal below, each command run in turn in one fresh process (releases first)."""
    repo, model = project
    commands = [_release_args(case, repo, model) for case, _ in RELEASE_REFUSALS]
    commands += [["validate", *case] for case, _ in VALIDATE_REFUSALS]
    return run_all(repo, commands)


def _check(answer: dict[str, object], expect: str, heavy: set[str]) -> None:
    stderr = str(answer["stderr"])
    assert answer["code"] == 1, answer
    assert stderr.count("\n") == 1 and stderr.startswith("kgit: error: "), stderr
    assert expect in stderr, stderr
    loaded = answer["heavy"]
    assert isinstance(loaded, list) and not heavy & set(loaded), loaded


@pytest.mark.parametrize(("case", "expect"), RELEASE_REFUSALS)
def test_release_refuses_before_loading_anything(
    project: tuple[Path, Path], answers: dict[tuple[str, ...], dict[str, object]], case: tuple[str, ...], expect: str
) -> None:
    repo, model = project
    # nothing heavy so far, and no release went as far as the validation process
    _check(answers[tuple(_release_args(case, repo, model))], expect, {*HEAVY, WORKER})


@pytest.mark.parametrize(("case", "expect"), VALIDATE_REFUSALS)
def test_validate_refuses_a_format_it_cannot_check(
    answers: dict[tuple[str, ...], dict[str, object]], case: tuple[str, ...], expect: str
) -> None:
    _check(answers[("validate",) + case], expect, set(HEAVY))
