"""The fixture ladder: isolated environment -> git repo -> kgit-initialised repo -> released repo.

Everything is real: git, DVC with a local-folder remote, TensorFlow, in temp folders.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from support.world import World

SUPPORT = Path(__file__).parent / "support"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No user config leaks in: own HOME, git identity, no system git config, empty templates."""
    home = tmp_path_factory.mktemp("home")
    templates = tmp_path_factory.mktemp("git-templates")
    saved = dict(os.environ)
    os.environ.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TEMPLATE_DIR": str(templates),
            "GIT_AUTHOR_NAME": "Kgit Tester",
            "GIT_AUTHOR_EMAIL": "tester@kgit.invalid",
            "GIT_COMMITTER_NAME": "Kgit Tester",
            "GIT_COMMITTER_EMAIL": "tester@kgit.invalid",
            "DVC_NO_ANALYTICS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "COLUMNS": "200",
            # the validation worker and CLI subprocesses import the test models like user code
            "PYTHONPATH": os.pathsep.join([str(SUPPORT.parent), str(ROOT)]),
        }
    )
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        os.environ.pop(var, None)
    subprocess.run(["git", "config", "--global", "init.defaultBranch", "main"], check=True)
    if str(SUPPORT.parent) not in sys.path:
        sys.path.insert(0, str(SUPPORT.parent))
    yield
    os.environ.clear()
    os.environ.update(saved)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def kgit(
    cwd: Path, *args: str, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `kgit` command line in a process of its own (as the user of ``env``, see
    ``user_env``), forked from one that imported kgit, DVC and TensorFlow (support.forked_cli); with
    ``check``, it must succeed."""
    from support.forked_cli import run_kgit

    proc = run_kgit(cwd, list(args), env)
    if check and proc.returncode != 0:
        raise AssertionError(f"kgit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_main(
    cwd: Path, *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run kgit's command line in this process (no subprocess: fast) in ``cwd``, stdin an empty pipe
    and stdout/stderr captured (not terminals, as in a pipe); returns (exit code, stdout, stderr)."""
    import io

    from kgit.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def user_env(home: Path) -> dict[str, str]:
    """The environment of another user on this machine: own HOME (keys, config), this kgit on PATH."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


def assert_refused(repo: Path, *args: str, expect: str, cwd: Path | None = None, alone: bool = False) -> str:
    """`kgit ARGS` (run in ``cwd``, default ``repo``) is refused as every refusal must be: exit 1, no
    traceback, exactly one `kgit: error:` line, last, containing ``expect`` (case-insensitive), and
    ``repo`` exactly as before. ``alone``: that line is all of stderr. Returns the error line."""
    before = snapshot(repo)
    proc = kgit(cwd or repo, *args)
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("kgit: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], proc.stderr
    if alone:
        assert len(lines) == 1, proc.stderr
    assert expect.lower() in errors[0].lower(), errors[0]
    assert snapshot(repo) == before
    return errors[0]


def bare_origin(base: Path, repo: Path | None = None) -> Path:
    """``base/origin.git``: an empty bare repository on branch main, what teams push to; added as
    ``repo``'s `origin` when ``repo`` is given."""
    origin = base / "origin.git"
    git(base, "init", "-q", "--bare", "--initial-branch=main", str(origin))
    if repo is not None:
        git(repo, "remote", "add", "origin", str(origin))
    return origin


def new_repo(base: Path, filename: str, content: str) -> Path:
    """``base/repo``: a fresh git repository with one committed file."""
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / filename).write_text(content)
    git(repo, "add", filename)
    git(repo, "commit", "-q", "-m", f"add {filename}")
    return repo


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    return new_repo(tmp_path, "README.md", "a project\n")


@pytest.fixture
def kgit_repo(git_repo: Path, tmp_path: Path) -> Path:
    import kgit

    kgit.init(git_repo, remote=str(tmp_path / "remote"))
    return git_repo


@pytest.fixture(scope="session")
def guide_model():  # type: ignore[no-untyped-def]
    from support import zoo

    return zoo.guide_model()


@pytest.fixture(scope="session")
def plain_model():  # type: ignore[no-untyped-def]
    from support import zoo

    return zoo.plain_model()


@pytest.fixture(scope="session")
def released(tmp_path_factory: pytest.TempPathFactory, guide_model):  # type: ignore[no-untyped-def]
    """A repository with one release of the guide's model in every format (read-only for tests)."""
    import kgit

    base = tmp_path_factory.mktemp("released")
    repo = new_repo(base, "data.csv", "x,y\n1,2\n")
    kgit.init(repo, remote=str(base / "remote"))
    record = kgit.release(
        guide_model,
        "guide",
        formats=["savedmodel", "keras", "h5", "weights"],
        repo=repo,
        builder="support.zoo:guide_model_untrained",
        dataset_id="guide-data-1",
        hyperparams={"epochs": 1, "batch_size": 8},
        notes="all formats",
    )
    return repo, record


def release_once(tmp_path_factory: pytest.TempPathFactory, model: Any) -> tuple[Path, Any]:
    """A kgit repository laid out as ``kgit_repo`` has it (repo/, remote/) with m@v1 released (keras),
    not pushed: for a module-scoped fixture that ``copy_project`` then copies per test."""
    import kgit as api

    base = tmp_path_factory.mktemp("released-once")
    repo = new_repo(base, "README.md", "a project\n")
    api.init(repo, remote=str(base / "remote"))
    return base, api.release(model, "m", formats="keras", repo=repo)


def copy_project(template: Path, dest: Path) -> Path:
    """The kgit repository and DVC remote folder in ``template`` (laid out as ``kgit_repo`` has them:
    repo/, remote/) copied into ``dest``: the copy's repository uses the copy's remote (in the
    untracked .dvc/config.local) and what the original validated stays validated
    (support.world.carry_validation). A fixture made once, then copied per test, instead of
    releasing again for each. Returns the copy's repository."""
    import shutil

    from support.world import carry_validation, point_dvc_remote

    for name in ("repo", "remote"):
        if (template / name).exists():
            shutil.copytree(template / name, dest / name, symlinks=True)
    repo = dest / "repo"
    point_dvc_remote(repo, dest / "remote")
    carry_validation(template / "repo", repo)
    return repo


def snapshot(repo: Path) -> dict[str, object]:
    """Everything a failed command must leave unchanged: work tree, index, HEAD, tags, DVC cache."""

    def listing(folder: Path) -> list[str]:
        if not folder.exists():
            return []
        return sorted(
            str(rel)
            for rel in (p.relative_to(folder) for p in folder.rglob("*"))
            if rel.parts[:1] != (".git",) and rel.parts[:2] != (".dvc", "tmp")
        )

    return {
        "status": git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "head": git(repo, "rev-parse", "HEAD"),
        "tags": git(repo, "tag", "-l"),
        "files": listing(repo),
        "cache": listing(repo / ".dvc" / "cache"),
        "dvc_yaml": (repo / "dvc.yaml").read_text() if (repo / "dvc.yaml").exists() else None,
    }


@pytest.fixture(scope="session")
def attack_world(tmp_path_factory: pytest.TempPathFactory, guide_model):  # type: ignore[no-untyped-def]
    """A guarded origin with real releases pushed, ana's and bob's clones (support.sandbox), and the
    invariant's record of what it accepted (support.invariant). Read-only: copy it per attack."""
    from support.invariant import Oracle
    from support.sandbox import build_world

    base = build_world(tmp_path_factory.mktemp("attack-world"), guide_model)
    return base, Oracle.record(base / "origin.git")


@pytest.fixture(scope="session")
def guarded_world(tmp_path_factory: pytest.TempPathFactory, plain_model: Any) -> World:
    """An origin guarded by `kgit server install --dvc-remote` (support.world), m@v1 (keras) released
    and pushed through both hooks. Read-only: each test works on a copy (``guarded_world.copy(...)``)."""
    from support.world import World

    import kgit as api

    w = World.create(tmp_path_factory.mktemp("guarded-world"))
    proc = kgit(w.base, "server", "install", str(w.origin), "--dvc-remote", str(w.store))
    assert proc.returncode == 0 and "installed kgit's pre-receive hook" in proc.stderr, proc.stderr
    api.release(plain_model, "m", formats=["keras"], repo=w.repo)
    proc = w.push("main")
    assert proc.returncode == 0, proc.stderr
    assert list(w.origin_tags()) == ["m@v1.0.0"]
    return w


# -- spreading the suite over workers (pytest-xdist `--dist loadgroup`, as scripts/test.sh runs it) --
# Tests that share an expensive fixture go to the same worker, so it is built once: the users of one of
# SHARED_FIXTURES (session-scoped) form one group per fixture, and the users of a module's own
# module-scoped fixture one group per module. Every other test is scheduled on its own, after the
# groups, so every worker stays busy to the end.
SHARED_FIXTURES = ("attack_world", "guarded_world", "released")


def _worker_group(item: pytest.Item) -> str | None:
    names = getattr(item, "fixturenames", ())
    for name in SHARED_FIXTURES:
        if name in names:
            return name
    fixtureinfo = getattr(item, "_fixtureinfo", None)
    defs = fixtureinfo.name2fixturedefs if fixtureinfo is not None else {}
    if any(d.scope in ("module", "class", "package") for ds in defs.values() for d in ds):
        return item.nodeid.split("::", 1)[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = _worker_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


# -- the fast tier (`pytest -m "not slow"`) -----------------------------------------------------------
FAST_TIER = False  # set by pytest_configure when only the fast tier runs


def pytest_configure(config: pytest.Config) -> None:
    global FAST_TIER
    FAST_TIER = config.getoption("markexpr") == "not slow"


def examples(n: int) -> int:
    """How many examples a property test generates: ``n`` in the whole suite (and in CI), a quarter
    in the fast tier, which is for the edit-test loop; the properties are the same."""
    return max(25, n // 4) if FAST_TIER else n


ALL_SLOW = re.compile(r"^pytestmark = pytest\.mark\.slow\b", re.MULTILINE)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fast tier does not even import a module whose every test is slow (``pytestmark =
    pytest.mark.slow`` at its top): it would deselect them all, after every worker paid for the
    module's imports (hypothesis, NumPy, the test worlds)."""
    if config.getoption("markexpr") != "not slow" or not collection_path.name.startswith("test_"):
        return None
    if collection_path.suffix == ".py" and ALL_SLOW.search(collection_path.read_text()):
        return True
    return None
