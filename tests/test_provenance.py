"""Provenance that tells the truth (kgit.workflow.provenance): whether the code that made a model was
committed, the script or module it came from, and a warning when a release repeats an earlier
version's weights.

Fast tier: real git repositories and real imports of real modules, releases made by hand as `kgit
release` leaves them in git (tests/support/synthetic). The slow test at the end makes real releases
from a training script and from `kgit release --from MODULE:FUNCTION`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, kgit
from support import synthetic

from kgit.core.metadata import Metadata, SourceInfo
from kgit.store.git_ops import Repo
from kgit.workflow import provenance


@pytest.fixture
def code_repo(tmp_path: Path) -> Iterator[Path]:
    """A repository of training code, importable: train.py and util.py committed, then util.py
    changed, layers.py never added, new.py staged but not committed, a package under .venv."""
    repo = synthetic.repo_at(tmp_path / "code")
    (repo / "train.py").write_text("import layers, util, new_mod, weird_name\n\ndef build():\n    return 1\n")
    (repo / "util.py").write_text("X = 1\n")
    (repo / "weird_name.py").write_text("# a module\n")
    site = repo / ".venv/lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (site / "installed_pkg.py").write_text("Y = 2\n")
    git(repo, "add", "train.py", "util.py", "weird_name.py")
    git(repo, "commit", "-q", "-m", "training code")
    (repo / "util.py").write_text("X = 2\n")
    (repo / "layers.py").write_text("Z = 3\n")
    (repo / "new_mod.py").write_text("W = 4\n")
    git(repo, "add", "new_mod.py")
    names = ("train", "util", "layers", "new_mod", "weird_name", "installed_pkg")
    sys.path[:0] = [str(repo), str(site)]
    try:
        yield repo
    finally:
        sys.path.remove(str(repo))
        sys.path.remove(str(site))
        for name in names:
            sys.modules.pop(name, None)


def test_the_modules_imported_from_the_repository_are_checked_against_head(code_repo: Path) -> None:
    import installed_pkg  # noqa: F401  (an installed package inside the repository's .venv)
    import train  # noqa: F401

    root = Repo(code_repo).root
    files = provenance.loaded_files(root)
    assert files == ["layers.py", "new_mod.py", "train.py", "util.py", "weird_name.py"]
    info = provenance.source_info(Repo(code_repo), "train:build", None, None)
    head = git(code_repo, "rev-parse", "HEAD")
    assert info == SourceInfo(
        commit=head, entry="train.py", dirty=True, modified=["util.py"], untracked=["layers.py", "new_mod.py"]
    )
    assert info.summary("main") == (
        f"{head[:12]} on main + 3 uncommitted files: util.py (modified), layers.py (untracked), new_mod.py (untracked)"
    )
    assert info.entry_text() == "train.py (committed)"
    # commit everything: the same code is now clean, and a staged change counts as a change
    git(code_repo, "add", "-A", ".")
    git(code_repo, "reset", "-q", ".venv")
    git(code_repo, "commit", "-q", "-m", "all of it")
    info = provenance.collect(Repo(code_repo), "train.py", files)
    assert (info.dirty, info.modified, info.untracked) == (False, [], [])
    (code_repo / "train.py").write_text("# tuned\n")
    git(code_repo, "add", "train.py")
    info = provenance.collect(Repo(code_repo), "train.py", files)
    assert (info.dirty, info.modified, info.entry_text()) == (True, ["train.py"], "train.py (modified)")
    assert info.uncommitted == ["train.py (modified)"]


def test_a_repository_without_commits_has_everything_untracked(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a b[1].py").write_text("")  # a name git would read as a pattern
    info = provenance.collect(Repo(repo), "a b[1].py", [])
    assert info == SourceInfo(None, "a b[1].py", True, [], ["a b[1].py"])
    assert info.summary() == "no commit + 1 uncommitted file: a b[1].py (untracked)"


def test_the_entry_is_the_source_module_the_calling_script_or_the_builder(code_repo: Path, tmp_path: Path) -> None:
    import train  # noqa: F401

    root = Repo(code_repo).root
    elsewhere = tmp_path / "notebook.py"
    elsewhere.write_text("")
    inside = str(code_repo / "train.py")
    assert provenance.entry(root, "train:build", None, None) == "train.py"
    # from Python: the running script if it is in the repository, else the calling code's file
    assert provenance.entry(root, object(), None, provenance.Caller(inside, str(elsewhere))) == "train.py"
    assert provenance.entry(root, object(), None, provenance.Caller(str(elsewhere), inside)) == "train.py"
    assert provenance.entry(root, object(), None, provenance.Caller(None, str(elsewhere))) == str(elsewhere.resolve())
    assert provenance.entry(root, object(), None, provenance.Caller(None, "<stdin>")) == "<stdin>"
    # the command line, from a file: the builder's module if any, else unknown
    assert provenance.entry(root, "model.keras", "train:build", None) == "train.py"
    assert provenance.entry(root, "model.keras", None, None) is None
    outside = provenance.collect(Repo(code_repo), "<stdin>", [])
    assert outside.dirty and outside.entry_outside and outside.untracked == []
    assert outside.summary().endswith("; the model came from <stdin>, outside the repository")
    assert provenance.source_warning(outside) == (
        "the model came from <stdin>, outside the repository: recorded in the release's source"
    )


def release() -> provenance.Caller | None:
    return provenance.caller()  # noqa: E704  (stands for kgit.release: its caller is asked for)


def test_the_caller_is_the_users_code_never_kgits_command_line() -> None:
    call = release()
    assert call is not None and call.frame_file == __file__
    main = sys.modules["__main__"]
    assert call.main_file == getattr(main, "__file__", None)
    # called through kgit's command line: no script of the user's is running
    namespace = {"__name__": "kgit.cli.releases", "release": release}
    exec("def command():\n    return release()\n", namespace)
    command = namespace["command"]
    assert callable(command) and command() is None


def test_metadata_without_a_source_block_still_reads() -> None:
    from kgit.core.metadata import GitInfo

    old = {
        "schema_version": 1,
        "name": "m",
        "version": "v1",
        "format": "keras",
        "formats": ["keras"],
        "created_at": "2026-11-01T00:00:00Z",
        "git": {"commit": "a" * 40, "branch": "main", "dirty": False},
        "dataset": {},
        "hyperparameters": {},
        "training": {},
        "libraries": {},
        "signature": {"inputs": [], "outputs": []},
        "reference": {
            "inputs_file": "i",
            "inputs_sha256": "",
            "outputs_file": "o",
            "outputs_sha256": "",
            "atol": 0,
            "generated": True,
        },
        "files": {},
    }
    meta = Metadata.from_dict(old)
    assert meta.source is None and meta.weights_sha256 is None and meta.git == GitInfo("a" * 40, "main", False)
    source = SourceInfo("a" * 40, "train.py", True, ["train.py"], [])
    again = Metadata.from_dict(
        json.loads(Metadata.from_dict({**old, "source": source.__dict__, "weights_sha256": "f" * 64}).to_json())
    )
    assert again.source == source and again.weights_sha256 == "f" * 64


# -- what release tags and the registry show --------------------------------------------------------
SOURCE = {"commit": "a" * 40, "entry": "train.py", "dirty": True, "modified": ["train.py"], "untracked": ["layers.py"]}
SHORT = {"entry": "train.py", "dirty": True, "uncommitted": 2}


def test_the_tag_carries_the_source_in_short_and_list_shows_it(tmp_path: Path) -> None:
    repo = synthetic.repo_at(tmp_path / "repo")
    synthetic.release(repo, "m", "v1")  # before kgit recorded the source
    synthetic.release(repo, "m", "v2", claims={"source": SHORT}, meta={"source": SOURCE})
    synthetic.release(repo, "m", "v3", claims={"source": {**SHORT, "dirty": False}}, meta={"source": SOURCE})
    synthetic.release(repo, "m", "v4", claims={"source": {"entry": 3}}, meta={"source": SOURCE})
    listed = {r["version"]: r for r in json.loads(kgit(repo, "list", "--json", check=True).stdout)}
    assert listed["v1"]["source"] is None and listed["v1"]["status"] == "valid"
    assert listed["v2"]["source"] == SHORT and listed["v2"]["status"] == "valid"
    assert listed["v4"]["status"] == "invalid: its message's source is malformed"
    # a tag re-made by hand to look clean contradicts the metadata in git
    shown = kgit(repo, "show", "m@v3")
    assert (
        shown.returncode == 1
        and "its message's source differs from the one in artifacts/m/keras/v3.dvc's metadata" in shown.stderr
    )
    # and the server hook rejects it, --no-verify or not
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(origin))
    kgit(tmp_path, "server", "install", str(origin), check=True)
    git(repo, "remote", "add", "origin", str(origin))
    proc = subprocess.run(
        ["git", "push", "--no-verify", "origin", "main", "refs/tags/m@v3.0.0"], cwd=repo, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert (
        "remote: kgit: rejected: new tag m@v3.0.0 is not a valid release: its message's source differs from the "
        "one in artifacts/m/keras/v3.dvc's metadata"
    ) in proc.stderr
    # the same from the tag cache (more than a few tags are read through it), twice
    for i in range(5, 70):
        synthetic.promote(repo, "m", "v1", f"s{i}", i)
    for _ in range(2):
        listed = {r["version"]: r for r in json.loads(kgit(repo, "list", "--json", check=True).stdout)}
        assert listed["v2"]["source"] == SHORT and listed["v1"]["source"] is None


def test_equal_weights_are_found_from_the_digests_in_git(tmp_path: Path) -> None:
    repo = synthetic.repo_at(tmp_path / "repo")
    synthetic.release(repo, "m", "v1")  # no digest recorded: never compared
    synthetic.release(repo, "m", "v2", meta={"weights_sha256": "1" * 64})
    synthetic.release(repo, "m", "v3", meta={"weights_sha256": "2" * 64})
    synthetic.release(repo, "m", "v4", meta={"weights_sha256": "1" * 64})
    synthetic.release(repo, "other", "v1", meta={"weights_sha256": "2" * 64})
    git_repo = Repo(repo)
    assert provenance.same_weights(git_repo, "m", "1" * 64) == ["v2", "v4"]
    assert provenance.same_weights(git_repo, "m", "2" * 64) == ["v3"]  # another model's versions do not count
    assert provenance.same_weights(git_repo, "m", "3" * 64) == provenance.same_weights(git_repo, "m", None) == []
    assert provenance.duplicate_warning("m", ["v2", "v4"]) == (
        "the weights and optimizer state equal m@v2's and m@v4's: nothing was trained since? (released anyway; "
        "`kgit deprecate` the new version if it was a mistake)"
    )
    assert provenance.duplicate_warning("m", []) is None
    assert (provenance.duplicate_warning("m", ["v1", "v2", "v3", "v4", "v5"]) or "").startswith(
        "the weights and optimizer state equal m@v3's, m@v4's and m@v5's (and 2 earlier versions): "
    )


# -- real releases -----------------------------------------------------------------------------------
TRAIN = """\
import os

import keras

import kgit
from layers import make


def build():
    keras.utils.set_random_seed(int(os.environ.get("SEED", "1")))
    model = make()
    model.compile(optimizer="adam", loss="mse")
    model.fit(keras.ops.ones((4, 3)), keras.ops.zeros((4, 2)), epochs=1, verbose=0)
    return model


if __name__ == "__main__":
    record = kgit.release(build(), "m", formats=["keras"])
    print(record.version)
"""
LAYERS = """\
import keras


def make():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))
"""


@pytest.mark.slow
def test_releases_record_their_code_and_warn_about_repeated_weights(kgit_repo: Path, tmp_path: Path) -> None:
    repo = kgit_repo
    (repo / "train.py").write_text(TRAIN)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "training script")
    (repo / "layers.py").write_text(LAYERS)  # imported by train.py, never added
    head = git(repo, "rev-parse", "HEAD")

    # 1. the training script calls kgit.release: the entry is the script, layers.py is not in git
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ["PYTHONPATH"]])}
    proc = subprocess.run([sys.executable, "train.py"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "v1"
    assert (
        "KgitWarning: m@v1.0.0: the code that made the model is not all committed: layers.py (untracked)" in proc.stderr
    )
    v1 = json.loads(kgit(repo, "show", "m@v1", "--json", check=True).stdout)
    assert v1["source"] == {
        "commit": head,
        "entry": "train.py",
        "dirty": True,
        "modified": [],
        "untracked": ["layers.py"],
    }
    assert len(v1["weights_sha256"]) == 64
    in_data = json.loads((repo / "artifacts/m/keras/v1/metadata.json").read_text())
    assert in_data["source"] == v1["source"] and in_data["weights_sha256"] == v1["weights_sha256"]

    # 2. the same model again, from the command line: the weights equal v1's
    proc = kgit(repo, "release", "m", "--from", "train:build", "--format", "keras", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "kgit: warning: the weights and optimizer state equal m@v1's: nothing was trained since?" in " ".join(
        proc.stderr.split()
    )
    assert "layers.py (untracked)" in proc.stderr

    # 3. layers.py committed, train.py changed and not committed (--allow-dirty)
    git(repo, "add", "layers.py")
    git(repo, "commit", "-q", "-m", "layers")
    head = git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# tuned\n")
    proc = kgit(
        repo,
        "release",
        "m",
        "--from",
        "train:build",
        "--format",
        "keras",
        "--allow-dirty",
        "--json",
        env={**env, "SEED": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["warnings"] == [
        "the code that made the model is not all committed: train.py (modified); recorded "
        "in the release's source (commit them before releasing for a release that names "
        "its code)"
    ]  # other weights: no repeat
    shown = kgit(repo, "show", "m@v3", check=True).stdout
    assert f"source           {head[:12]} on main + 1 uncommitted file: train.py (modified)" in shown
    assert "entry            train.py (modified)" in shown
    listed = {r["version"]: r["source"] for r in json.loads(kgit(repo, "list", "--json", check=True).stdout)}
    assert listed == {
        "v1": {"entry": "train.py", "dirty": True, "uncommitted": 1},
        "v2": {"entry": "train.py", "dirty": True, "uncommitted": 1},
        "v3": {"entry": "train.py", "dirty": True, "uncommitted": 1},
    }

    # 4. all committed: clean, no warning; the report shows each version's source
    git(repo, "commit", "-q", "-am", "tuned")
    proc = kgit(repo, "release", "m", "--from", "train:build", "--format", "keras", "--json", env={**env, "SEED": "3"})
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["warnings"] == [] and record["metadata"]["source"]["dirty"] is False
    assert "entry            train.py (committed)" in kgit(repo, "show", "m@v4", check=True).stdout
    kgit(repo, "report", "--out", str(tmp_path / "site"), check=True)
    page = (tmp_path / "site/models/m/v3.html").read_text()
    assert "+ 1 uncommitted file: train.py (modified)" in page and "train.py (modified)</td>" in page
    assert "(committed)" in (tmp_path / "site/models/m/v4.html").read_text()
    assert (tmp_path / "site/models/m.html").read_text().count('class="badge uncommitted"') == 3
