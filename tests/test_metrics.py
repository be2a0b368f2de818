"""Metrics with each release: recorded in metadata.json and the tag summary, read from git alone,
shown by list and diff; measured on the reloaded artifact with --evaluate. Real git, DVC, Keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import git, kgit, snapshot
from support.world import forge_tag, tag_message

import kgit as api
from kgit.core import metrics
from kgit.core.errors import KgitError
from kgit.registry import catalog
from kgit.store.git_ops import Repo


# -- parsing (no repository) ---------------------------------------------------------------------
def test_nested_metrics_are_flattened_with_dots_as_dvc_prints_them(tmp_path: Path) -> None:
    dvclive = tmp_path / "metrics.json"
    dvclive.write_text(json.dumps({"step": 9, "train": {"loss": 0.25, "accuracy": 0.91}, "val": {"accuracy": 0.88}}))
    assert metrics.read_file(dvclive) == {"step": 9.0, "train.loss": 0.25, "train.accuracy": 0.91, "val.accuracy": 0.88}
    yml = tmp_path / "metrics.yaml"
    yml.write_text("val:\n  loss: 3.5e-1\n  top-5/acc: 1\n")
    assert metrics.read_file(yml) == {"val.loss": 0.35, "val.top-5/acc": 1.0}
    assert metrics.parse_assignments(["val.accuracy=0.93", "loss = 1e-3"]) == {"val.accuracy": 0.93, "loss": 0.001}
    assert metrics.combine({"a": 1.0, "b": 2.0}, {"b": 3.0}) == {"a": 1.0, "b": 3.0}


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"val": {"accuracy": "high"}}', "val.accuracy is 'high' (str), not a number"),
        ('{"acc": true}', "acc is True (bool), not a number"),
        ('{"acc": [0.1, 0.2]}', "acc is [0.1, 0.2] (list), not a number"),
        ('{"acc": NaN}', "acc is nan, not a finite number"),
        ("acc: .inf\n", "acc is inf, not a finite number"),
        ('{"acc": null}', "acc is None (NoneType), not a number"),
        ('{"val": {}}', "val is empty"),
        ("[1, 2]", "must be a mapping"),
        ('{"a b": 1}', "'a b' is not a valid metric name"),
        ('{"val": {"acc": 1}, "val.acc": 2}', "val.acc is given twice"),
        ("", "is empty"),
        ("{" + ",".join(f'"m{i}": {i}' for i in range(101)) + "}", "more than 100 metrics"),
        ("a: &a [*a]\n", "YAML aliases"),
        ("x: [", "not valid YAML/JSON"),
    ],
)
def test_malformed_metric_files_are_refused_in_one_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(KgitError) as exc:
        metrics.read_file(path)
    assert says in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "item, says",
    [
        ("acc", "use KEY=NUMBER"),
        ("acc=high", "'high', not a number"),
        ("acc=nan", "not a finite number"),
        ("acc=inf", "not a finite number"),
        ("a>b=1", "not a valid metric name"),
        ("=1", "use KEY=NUMBER"),
    ],
)
def test_malformed_metric_options_are_refused(item: str, says: str) -> None:
    with pytest.raises(KgitError) as exc:
        metrics.parse_assignments([item])
    assert says in str(exc.value)


def test_evaluate_results_may_be_numpy_scalars() -> None:
    import numpy as np

    got = metrics.flatten({"acc": np.float32(0.5), "n": np.int64(3), "arr": np.array(0.25)}, scalars=True)
    assert got == {"acc": 0.5, "n": 3.0, "arr": 0.25}
    with pytest.raises(KgitError, match="not a number"):
        metrics.flatten({"acc": np.array([0.5, 0.6])}, scalars=True)


# -- a release with metrics ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, plain_model):  # type: ignore[no-untyped-def]
    """Three releases of one model: v1 and v2 with metrics (from a file and options), v3 without."""
    from conftest import new_repo

    base = tmp_path_factory.mktemp("scored")
    repo = new_repo(base, "README.md", "scored\n")
    api.init(repo, remote=str(base / "remote"))
    files = base / "files"
    files.mkdir()
    (files / "metrics.json").write_text(json.dumps({"val": {"accuracy": 0.8, "loss": 0.5}, "epochs": 3}))
    kgit(
        repo,
        "release",
        "sc",
        "--from",
        "support.zoo:plain_model",
        "-f",
        "keras",
        "--metrics",
        str(files / "metrics.json"),
        "--metric",
        "val.loss=0.45",
        check=True,
    )
    api.release(plain_model, "sc", formats="keras", repo=repo, metrics={"val": {"accuracy": 0.9, "loss": 0.3}})
    api.release(plain_model, "sc", formats="keras", repo=repo)
    return repo


@pytest.mark.slow
def test_metrics_are_in_metadata_and_tag_and_listed_from_git(scored: Path) -> None:
    repo = scored
    rels = {r.version: r for r in catalog.releases(Repo(repo), "sc")}
    assert rels["v1"].metrics == {"val.accuracy": 0.8, "val.loss": 0.45, "epochs": 3.0}  # --metric wins
    assert rels["v2"].metrics == {"val.accuracy": 0.9, "val.loss": 0.3} and rels["v2"].measured == ()
    assert rels["v3"].metrics == {} and rels["v3"].valid
    summary = tag_message(repo, "sc@v1.0.0").split("kgit-release: ", 1)[1]
    assert json.loads(summary)["metrics"] == {"val.accuracy": 0.8, "val.loss": 0.45, "epochs": 3.0}
    assert "metrics" not in json.loads(tag_message(repo, "sc@v3.0.0").split("kgit-release: ", 1)[1])
    meta = json.loads((repo / "artifacts/sc/keras/v2/metadata.json").read_text())
    assert meta["metrics"] == {"val.accuracy": 0.9, "val.loss": 0.3} and meta["measured"] == []
    assert api.show("sc", "v1", repo=repo).metadata.metrics["val.loss"] == 0.45
    listed = {r["version"]: r for r in json.loads(kgit(repo, "list", "sc", "--json", check=True).stdout)}
    assert listed["v2"]["metrics"] == {"val.accuracy": 0.9, "val.loss": 0.3} and listed["v2"]["measured"] == []


@pytest.mark.slow
def test_list_reads_metrics_without_tensorflow_or_dvc(scored: Path) -> None:
    code = (
        "import sys, kgit; rels = kgit.list_releases('sc', repo=sys.argv[1]); "
        "print(rels[1].metrics['val.accuracy'], 'tensorflow' in sys.modules, 'dvc' in sys.modules, "
        "'dvc.repo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(scored)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0.9", "False", "False", "False"]


@pytest.mark.slow
def test_a_tag_with_malformed_metrics_is_listed_invalid_not_crashing(scored: Path, tmp_path: Path) -> None:
    repo = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(scored), str(repo)], check=True)
    summary = json.loads(tag_message(repo, "sc@v2.0.0").split("kgit-release: ", 1)[1])
    commit = git(repo, "rev-list", "-n1", "sc@v2.0.0")
    bad = {"metrics": {"val.accuracy": "high"}, "measured": None}
    extras: list[dict[str, Any]] = [
        bad,
        {"metrics": [1]},
        {"metrics": {"a b": 1}},
        {"metrics": {"acc": 1}, "measured": ["x"]},
        {"metrics": {f"m{i}": 1 for i in range(101)}},
    ]
    for i, extra in enumerate(extras):
        version = f"v9.0.{i}"
        forged = {**summary, "version": version, **extra}
        forged["formats"] = {"keras": {**summary["formats"]["keras"], "path": f"artifacts/sc/keras/{version}"}}
        forge_tag(repo, f"sc@{version}", commit, f"kgit release sc {version}\n\nkgit-release: {json.dumps(forged)}\n")
    rels = {r.version: r for r in catalog.read(Repo(repo), "sc", remember=False).releases}
    for i in range(5):
        rel = rels[f"v9.0.{i}"]
        assert "its message's metrics are malformed" in rel.problems and rel.metrics == {}
    proc = kgit(repo, "list", "sc")
    assert proc.returncode == 0 and "invalid: " in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_python_metrics_are_refused_before_anything_happens(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(kgit_repo)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"acc": float("nan")}, "not a finite number"),
        ({"acc": "0.9"}, "not a number"),
        ({"val": {"acc": None}}, "val.acc is None"),
    ]
    for bad, says in cases:
        with pytest.raises(KgitError, match=says):
            api.release(plain_model, "bad", formats="keras", repo=kgit_repo, metrics=bad)
    assert snapshot(kgit_repo) == before


@pytest.mark.slow
def test_cli_metric_refusals_are_one_line_and_change_nothing(kgit_repo: Path, tmp_path: Path) -> None:
    before = snapshot(kgit_repo)
    (tmp_path / "m.yaml").write_text("val:\n  accuracy: high\n")
    for args, says in [
        (["--metric", "acc=nan"], "--metric acc is nan, not a finite number"),
        (["--metrics", str(tmp_path / "m.yaml")], "val.accuracy is 'high' (str), not a number"),
        (["--metrics", str(tmp_path / "absent.json")], "cannot read --metrics"),
    ]:
        proc = kgit(kgit_repo, "release", "bad", "--from", "support.zoo:plain_model", *args)
        assert proc.returncode == 1 and proc.stderr.startswith("kgit: error: ") and says in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    for args in (["--metric", "a b"], ["--sort", "acc>1"]):
        proc = kgit(kgit_repo, "list", *args)
        assert proc.returncode == 1 and "is not a valid metric name" in proc.stderr, proc.stderr
    assert snapshot(kgit_repo) == before


# -- --evaluate: measured on the model reloaded from the artifact, in the fresh process ------------
EVALMOD = """\
import os, sys
import numpy as np
from support import zoo

def evaluate(model):
    with open(os.environ["KGIT_TEST_EVAL_LOG"], "a") as fh:
        fh.write(f"{os.getpid()} {os.path.basename(sys.argv[0])} {type(model).__name__}\\n")
    x, y = zoo.data(32, seed=1)
    mse, mae = model.evaluate(x, y, verbose=0)
    return {"holdout": {"mse": mse, "mae": np.float32(mae)}, "n": np.int64(len(x))}

def words(model):
    return {"holdout": {"grade": "good"}}

def broken(model):
    raise RuntimeError("the holdout set is missing")
"""


@pytest.fixture
def eval_repo(kgit_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (kgit_repo / "evalmod.py").write_text(EVALMOD)
    git(kgit_repo, "add", "evalmod.py")
    git(kgit_repo, "commit", "-q", "-m", "evaluation")
    monkeypatch.setenv("KGIT_TEST_EVAL_LOG", str(tmp_path / "eval.log"))
    # the validation worker imports evalmod from the repository, whose files the tests compare: no
    # __pycache__ there, whatever this environment says about writing bytecode
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    return kgit_repo


@pytest.mark.slow
def test_evaluate_measures_the_reloaded_artifact_and_is_signed_with_it(eval_repo: Path, tmp_path: Path) -> None:
    repo = eval_repo
    kgit(repo, "keys", "init", "--require", check=True)
    proc = kgit(
        repo,
        "release",
        "ev",
        "--from",
        "support.zoo:plain_model",
        "-f",
        "savedmodel",
        "-f",
        "keras",
        "--evaluate",
        "evalmod:evaluate",
        "--metric",
        "train.loss=0.5",
        "--json",
        check=True,
    )
    record = json.loads(proc.stdout)
    assert set(record["metadata"]["measured"]) == {"holdout.mse", "holdout.mae", "n"}
    log = (tmp_path / "eval.log").read_text().split()
    # once, in the validation worker (not the releasing process), on a Keras model reloaded from savedmodel
    assert log[1:] == ["roundtrip_worker.py", "Sequential"] and int(log[0]) != os.getpid()
    rel = catalog.resolve(Repo(repo), "ev", "v1")
    assert rel.metrics["train.loss"] == 0.5 and rel.metrics["n"] == 32.0
    assert set(rel.measured) == {"holdout.mse", "holdout.mae", "n"}
    # the recorded numbers are what the released artifact gives
    import keras
    from support import zoo

    model = keras.models.load_model(repo / "artifacts/ev/keras/v1/model.keras")
    mse, mae = model.evaluate(*zoo.data(32, seed=1), verbose=0)
    assert rel.metrics["holdout.mse"] == pytest.approx(mse, rel=1e-5)
    assert rel.metrics["holdout.mae"] == pytest.approx(mae, rel=1e-5)
    for fmt in ("savedmodel", "keras"):  # every format's metadata carries them, and the signature covers them
        meta = json.loads((repo / f"artifacts/ev/{fmt}/v1/metadata.json").read_text())
        assert meta["metrics"] == rel.metrics and meta["evaluate"] == "evalmod:evaluate"
    verified = json.loads(kgit(repo, "verify", "--json", check=True).stdout)
    assert [r["status"] for r in verified] == ["passed", "passed"]
    shown = kgit(repo, "show", "ev@v1", check=True).stdout
    assert "holdout.mse" in shown and "(measured)" in shown


@pytest.mark.slow
def test_evaluate_failures_release_nothing(eval_repo: Path) -> None:
    repo = eval_repo
    before = snapshot(repo)
    for args, says in [
        (
            ["--evaluate", "evalmod:broken"],
            "--evaluate evalmod:broken on the keras artifact reloaded in a fresh "
            "process: it raised RuntimeError: the holdout set is missing",
        ),
        (["--evaluate", "evalmod:words"], "holdout.grade is 'good' (str), not a number"),
        (["--evaluate", "evalmod:evaluate", "--metric", "n=3"], "metric n is both given and measured"),
        (["--evaluate", "nomod:evaluate"], "cannot import module 'nomod'"),
    ]:
        proc = kgit(repo, "release", "ev", "--from", "support.zoo:plain_model", "-f", "keras", *args)
        assert proc.returncode == 1 and says in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("kgit: error: ") and "Traceback" not in proc.stderr
    assert snapshot(repo) == before


@pytest.mark.slow
def test_a_tag_whose_metrics_differ_from_the_release_metadata_is_refused(scored: Path, tmp_path: Path) -> None:
    repo = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(scored), str(repo)], check=True)
    message = tag_message(repo, "sc@v1.0.0").replace('"val.accuracy": 0.8', '"val.accuracy": 0.99')
    git(repo, "tag", "-d", "sc@v1.0.0")
    (repo / ".git/kgit/seen.db").unlink(missing_ok=True)  # a clone that never saw the honest tag
    forge_tag(repo, "sc@v1.0.0", git(repo, "rev-list", "-n1", "sc@v2.0.0") + "~1", message)
    with pytest.raises(KgitError, match="its message's metrics differ from those in artifacts/sc/keras/v1.dvc"):
        api.promote("sc@v1", "prod", repo=repo)
    assert git(repo, "tag", "-l", "sc#*") == ""
