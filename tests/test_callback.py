"""Releases from training: kgit.keras.ReleaseCallback with real Keras training, real git and DVC
(a local folder remote), the background releaser process, a training branch's work tree, a
MirroredStrategy over two logical CPUs, and a second clone that resumes from the release."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import bare_origin, git, snapshot
from conftest import kgit as kgit_cli

SCRIPT_SETUP = """
import json, sys
from pathlib import Path
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.experimental.enable_op_determinism()
import numpy as np
from support.training import Recorder, Score, data, model
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x, y = data()
"""

# Three improving epochs under a MirroredStrategy; then the model goes on for one more epoch from
# its last (and best) epoch, as the release should let anyone do.
TRAIN_MIRRORED = (
    SCRIPT_SETUP
    + """
from kgit.keras import ReleaseCallback
repo, out = Path(sys.argv[1]), Path(sys.argv[2])
with strategy.scope():
    m = model()
rec = Recorder()
cb = ReleaseCallback("mirrored", monitor="score", formats=["keras"], repo=repo)
m.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0, callbacks=[Score([0.1, 0.5, 0.9]), rec, cb])
m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
np.savez(out / "continued.npz", *m.get_weights())
(out / "train.json").write_text(json.dumps({
    "releases": cb.releases, "epochs": [o.epoch for o in cb.results], "errors": cb.errors,
    "calls": rec.calls, "replicas": strategy.num_replicas_in_sync}))
"""
)

RESUME_MIRRORED = (
    SCRIPT_SETUP
    + """
import kgit
with strategy.scope():
    m = kgit.load(sys.argv[1])
m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
np.savez(sys.argv[2], *m.get_weights())
"""
)


def _tags(repo: Path, name: str) -> list[str]:
    return git(repo, "tag", "-l", f"{name}@*").split()


def _weights_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def _run(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


# -- the fast tier: no TensorFlow ------------------------------------------------------------------
def test_metrics_from_logs_keep_finite_numbers_under_valid_names() -> None:
    from kgit.workflow.training import metrics_from_logs

    logs = {
        "loss": 0.5,
        "val_accuracy": np.float32(0.75),
        "val_loss": float("nan"),
        "lr": np.array(0.01),
        "note": "text",
        "bad key": 1.0,
        "flag": True,
        "steps": 10,
    }
    assert metrics_from_logs(logs) == {"loss": 0.5, "val_accuracy": 0.75, "lr": pytest.approx(0.01), "steps": 10.0}
    assert metrics_from_logs(logs, ["val_accuracy", "val_loss"]) == {"val_accuracy": 0.75}
    assert metrics_from_logs(None) == {}


def test_only_the_chief_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    from kgit.workflow.training import is_chief

    class Extended:
        def __init__(self, chief: bool) -> None:
            self.should_checkpoint = chief

    class Strategy:
        def __init__(self, chief: bool) -> None:
            self.extended = Extended(chief)

    class Model:
        def __init__(self, chief: bool) -> None:
            self.distribute_strategy = Strategy(chief)

    assert is_chief(Model(True)) and not is_chief(Model(False))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief(object())
    cluster = {"worker": ["a:1", "b:2"]}
    for task, chief in [
        ({"type": "worker", "index": 0}, True),
        ({"type": "worker", "index": 1}, False),
        ({"type": "chief", "index": 0}, True),
        ({"type": "evaluator", "index": 0}, False),
    ]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert is_chief(object()) is chief, task
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"chief": ["c:0"], **cluster}, "task": {"type": "worker", "index": 0}})
    )
    assert not is_chief(object())


def test_a_training_branch_must_be_free(git_repo: Path) -> None:
    from kgit.core.errors import KgitError
    from kgit.store.git_ops import Repo
    from kgit.workflow.training_branch import check_branch

    repo = Repo(git_repo)
    check_branch(repo, "training/run-42")
    with pytest.raises(KgitError, match="not a valid git branch name"):
        check_branch(repo, "training..run")
    with pytest.raises(KgitError, match="branch main is checked out here"):
        check_branch(repo, "main")
    git(git_repo, "worktree", "add", "-q", "-b", "elsewhere", str(git_repo.parent / "other"))
    with pytest.raises(KgitError, match="checked out in .*other"):
        check_branch(repo, "elsewhere")


def test_an_interrupted_release_in_a_training_work_tree_is_undone_there(git_repo: Path) -> None:
    """A release killed in the training branch's work tree left its journal in the clone's state folder,
    shared by every work tree. The next kgit command in the user's own work tree undoes it where it was
    made, and never touches the user's files at the same paths, nor their index."""
    from kgit.core.metadata import sha256_file
    from kgit.store import clone_state, txn
    from kgit.store.git_ops import Repo
    from kgit.workflow.training_branch import worktree_path

    repo = Repo(git_repo)
    tree_path = worktree_path(repo, "training/run-1")
    git(git_repo, "worktree", "add", "-q", "-b", "training/run-1", str(tree_path))
    tree = Repo(tree_path)
    rel = "artifacts/m/keras/v1"
    for root, text in ((tree.root, "placed by the release"), (git_repo, "the user's own file")):
        (root / rel).mkdir(parents=True)
        (root / rel / "model.keras").write_text(text)
    (git_repo / "README.md").write_text("staged by the user\n")
    git(git_repo, "add", "README.md")
    before = snapshot(git_repo)
    journal = txn.Journal(
        tag="m@v1.0.0",
        head_before=tree.head(),
        tag_message="",
        root=str(tree.root),
        created=[rel, f"{rel}.dvc"],
        folders={rel: {"model.keras": sha256_file(tree.root / rel / "model.keras")}},
        backups={"README.md": "a project\n"},
        written={"README.md": []},
    )
    journal.save(repo)

    with clone_state.repo_lock(repo):
        said = txn.recover(repo)
    assert said == "removed the traces of the interrupted release m@v1.0.0"
    assert not (tree.root / rel).exists() and not (tree.root / "artifacts").exists()
    assert snapshot(git_repo) == before
    assert (git_repo / rel / "model.keras").read_text() == "the user's own file"
    assert txn.Journal.load(repo) is None

    # the work tree is gone (removed by hand): what it held went with it, nothing here is touched
    journal.save(repo)
    git(git_repo, "worktree", "remove", "--force", str(tree.root))
    with clone_state.repo_lock(repo):
        said = txn.recover(repo)
    assert said is not None and "is gone" in said
    assert snapshot(git_repo) == before and txn.Journal.load(repo) is None

    # a release interrupted in this work tree, which was moved since: undone here, as always
    placed = git_repo / "artifacts" / "m" / "keras" / "v2"
    placed.mkdir(parents=True)
    (placed / "model.keras").write_text("placed by the release")
    txn.Journal(
        tag="m@v2.0.0",
        head_before=repo.head(),
        tag_message="",
        root=str(git_repo.parent / "moved-away"),
        created=["artifacts/m/keras/v2"],
        folders={"artifacts/m/keras/v2": {"model.keras": sha256_file(placed / "model.keras")}},
    ).save(repo)
    with clone_state.repo_lock(repo):
        said = txn.recover(repo)
    assert said == "removed the traces of the interrupted release m@v2.0.0"
    assert not placed.exists() and snapshot(git_repo) == before


# -- the slow tier: real training ------------------------------------------------------------------
@pytest.mark.slow
def test_the_best_epoch_is_released_with_its_metrics(kgit_repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from support.training import Recorder, data, model

    import kgit
    from kgit.keras import ReleaseCallback

    x, y = data()
    m, rec = model(), Recorder()
    cb = ReleaseCallback("clf", monitor="val_loss", formats=["keras"], repo=kgit_repo)
    history = m.fit(x, y, validation_split=0.25, epochs=5, batch_size=16, verbose=0, callbacks=[rec, cb]).history
    val = history["val_loss"]
    improving = [i + 1 for i in range(len(val)) if val[i] < min(val[:i], default=math.inf)]
    best = improving[-1]  # the first epoch with the lowest val_loss (auto mode: a loss is better lower)

    assert cb.errors == []
    released = [o.epoch for o in cb.results]
    assert released == sorted(set(released)) and set(released) <= set(improving) and released[-1] == best
    assert len(cb.releases) == len(released)
    assert len(_tags(kgit_repo, "clf")) == len(cb.releases)

    ref = cb.releases[-1]
    view = kgit.show(ref, repo=kgit_repo)
    assert view.metadata.metrics == {key: values[best - 1] for key, values in history.items()}
    assert f"epoch {best} of 5" in (view.metadata.notes or "")
    loaded = kgit.load(ref, repo=kgit_repo)
    _weights_equal(loaded.get_weights(), rec.weights[best])
    assert int(np.asarray(loaded.optimizer.iterations)) == rec.steps[best]  # the training state came with it
    err = capfd.readouterr().err
    assert f"kgit: released {ref} (epoch {best}, val_loss" in err
    assert not list((kgit_repo / ".git" / "kgit" / "training").iterdir())  # the run's snapshots are gone


@pytest.mark.slow
def test_mirrored_strategy_releases_once_and_a_second_clone_resumes_identically(
    kgit_repo: Path, tmp_path: Path
) -> None:
    from support.machine import Machine

    out = tmp_path / "out"
    out.mkdir()
    _run(TRAIN_MIRRORED, str(kgit_repo), str(out), cwd=tmp_path)
    trained = json.loads((out / "train.json").read_text())
    assert trained["replicas"] == 2 and trained["errors"] == []
    assert trained["calls"] == {"1": 1, "2": 1, "3": 1}
    # each release is one improving epoch, made once (not once per replica); the best is the last
    assert trained["epochs"] == sorted(set(trained["epochs"])) and trained["epochs"][-1] == 3
    assert len(_tags(kgit_repo, "mirrored")) == len(trained["releases"]) == len(trained["epochs"])
    ref = trained["releases"][-1]

    origin = bare_origin(tmp_path, kgit_repo)
    pushed = subprocess.run(["git", "push", "origin", "main"], cwd=kgit_repo, capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    b = Machine(tmp_path, "b")
    b.run("git", "clone", "-q", str(origin), str(b.repo), cwd=tmp_path)
    b.kgit("get", ref)
    _run(RESUME_MIRRORED, ref, str(out / "resumed.npz"), cwd=b.repo, env=b.env)
    with np.load(out / "resumed.npz") as resumed, np.load(out / "continued.npz") as continued:
        _weights_equal([resumed[k] for k in resumed.files], [continued[k] for k in continued.files])


@pytest.mark.slow
def test_early_stopping_the_best_epoch_is_released_at_train_end(kgit_repo: Path) -> None:
    import keras
    from support.training import Recorder, Score, data, model

    import kgit
    from kgit.keras import ReleaseCallback

    x, y = data()
    m, rec = model(), Recorder()
    stop = keras.callbacks.EarlyStopping(monitor="score", mode="max", patience=2, restore_best_weights=True)
    cb = ReleaseCallback(
        "early", monitor="score", every="train_end", formats=["keras"], promote_to="staging", repo=kgit_repo
    )
    history = m.fit(
        x, y, epochs=6, batch_size=16, verbose=0, callbacks=[Score([0.2, 0.6, 0.4, 0.3, 0.9, 0.9]), rec, stop, cb]
    ).history
    assert len(history["loss"]) == 4  # stopped after two epochs without improvement
    assert cb.errors == [] and [o.epoch for o in cb.results] == [2] and cb.releases == ["early@v1"]
    _weights_equal(m.get_weights(), rec.weights[2])  # EarlyStopping put the best weights back
    _weights_equal(kgit.load("early@v1", repo=kgit_repo).get_weights(), rec.weights[2])
    view = kgit.show("early@v1", repo=kgit_repo)
    assert view.metadata.metrics["score"] == 0.6
    assert cb.results[0].stage == "staging" and view.release.stages == ["staging"]


@pytest.mark.slow
def test_background_failures_are_reported_when_training_ends(
    kgit_repo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from support.training import Edit, Recorder, Score, data, model

    from kgit.keras import ReleaseCallback, TrainingReleaseError

    (kgit_repo / ".kgit").mkdir()
    (kgit_repo / ".kgit" / "gates.yaml").write_text('stages:\n  staging:\n    require: ["score >= 2"]\n')
    git(kgit_repo, "add", ".kgit")
    git(kgit_repo, "commit", "-q", "-m", "gate staging")
    x, y = data()

    # a gate refuses the promotion: released, reported, not raised; training went to its end
    rec = Recorder()
    cb = ReleaseCallback(
        "gated", monitor="score", every="train_end", formats=["keras"], promote_to="staging", repo=kgit_repo
    )
    model().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[Score([0.5, 0.7]), rec, cb])
    assert sorted(rec.calls) == [1, 2]
    assert cb.releases == ["gated@v1"] and len(cb.errors) == 1
    assert "not promoted to staging" in cb.errors[0] and "score >= 2" in cb.errors[0]
    assert git(kgit_repo, "tag", "-l", "gated#*") == ""
    err = capfd.readouterr().err
    assert "kgit: released gated@v1 (epoch 2, score 0.7); not promoted to staging:" in err

    # the work tree is edited while training: each release is refused; raised at the end, as asked
    rec = Recorder()
    cb = ReleaseCallback(
        "dirty", monitor=None, every="epoch_end", formats=["keras"], raise_on_error=True, repo=kgit_repo
    )
    with pytest.raises(TrainingReleaseError, match="uncommitted changes in README.md"):
        model().fit(
            x,
            y,
            epochs=3,
            batch_size=16,
            verbose=0,
            callbacks=[Score([0.1, 0.2, 0.3]), cb, Edit(kgit_repo / "README.md"), rec],
        )
    assert sorted(rec.calls) == [1, 2, 3]  # training completed
    assert cb.releases == [] and cb.errors and all("uncommitted changes" in e for e in cb.errors)
    assert _tags(kgit_repo, "dirty") == []
    err = capfd.readouterr().err
    assert "failed: uncommitted changes in README.md" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_training_branch_leaves_the_work_tree_and_branch_alone(kgit_repo: Path) -> None:
    from support.training import Edit, Score, data, model

    import kgit
    from kgit.keras import ReleaseCallback

    head = git(kgit_repo, "rev-parse", "HEAD")
    (kgit_repo / "scratch.txt").write_text("untracked notes\n")
    x, y = data()
    cb = ReleaseCallback("side", monitor="score", formats=["keras"], branch="training/run-42", repo=kgit_repo)
    model().fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[Score([0.1, 0.5, 0.9]), cb, Edit(kgit_repo / "README.md", at=1)],
    )
    assert cb.errors == [] and cb.releases and cb.results[-1].epoch == 3

    # the user's side: their edit made during training, their branch, HEAD and index as they were
    assert git(kgit_repo, "branch", "--show-current") == "main"
    assert git(kgit_repo, "rev-parse", "HEAD") == head
    assert git(kgit_repo, "diff", "--name-only") == "README.md"
    assert git(kgit_repo, "diff", "--cached", "--name-only") == ""
    assert git(kgit_repo, "ls-files", "--others", "--exclude-standard") == "scratch.txt"
    assert not (kgit_repo / "artifacts").exists()
    # the releases: on the branch, which starts at the user's commit; the work tree made for it is gone
    log = git(kgit_repo, "log", "--format=%s", f"{head}..training/run-42").splitlines()
    assert log == [f"Release side {r.split('@')[1]}" for r in reversed(cb.releases)]
    assert git(kgit_repo, "merge-base", head, "training/run-42") == head
    assert len(git(kgit_repo, "worktree", "list").splitlines()) == 1
    last = cb.releases[-1]
    assert git(kgit_repo, "rev-list", "-n1", str(cb.results[-1].tag)) == git(kgit_repo, "rev-parse", "training/run-42")
    # its data is in this clone's cache: merged, the release checks out without the remote
    md5 = kgit.show(last, repo=kgit_repo).release.formats["keras"]["md5"]
    assert (kgit_repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    git(kgit_repo, "checkout", "-q", "README.md")
    git(kgit_repo, "merge", "-q", "--ff-only", "training/run-42")
    os.rename(kgit_repo.parent / "remote", kgit_repo.parent / "remote-away")
    kgit_cli(kgit_repo, "get", last, check=True)
    assert (kgit_repo / "artifacts" / "side" / "keras" / last.split("@")[1] / "model.keras").is_file()
