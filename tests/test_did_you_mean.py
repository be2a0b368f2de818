"""A name that is not known (model, version, stage, format, metric key, sort key) is refused in one
line that suggests the one probably meant, from one helper (kgit.core.errors.did_you_mean)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_main, snapshot

from kgit.core.errors import closest, did_you_mean


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mnist v1, v2 and v2.1.0 (keras; with metrics accuracy and val.loss), v2 in prod; cats v1."""
    from support import synthetic

    repo = synthetic.repo_at(tmp_path_factory.mktemp("did-you-mean") / "repo")
    for version, acc in (("v1", 0.9), ("v2", 0.93), ("v2.1.0", 0.95)):
        synthetic.release(repo, "mnist", version, meta={"metrics": {"accuracy": acc, "val.loss": 1 - acc}})
    synthetic.release(repo, "cats", "v1")
    synthetic.promote(repo, "mnist", "v2", "prod", 1)
    return repo


def test_the_helper_suggests_only_what_is_close() -> None:
    assert closest("mnsit", ["mnist", "cats"]) == "mnist"
    assert closest("zebra", ["mnist", "cats"]) is None
    assert did_you_mean("acuracy", ["accuracy", "loss"], "x") == "did you mean 'accuracy'?"
    assert did_you_mean("zzz", ["accuracy"], "they have accuracy") == "they have accuracy"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("show", "mnsit@v2"), "no model 'mnsit': did you mean 'mnist'?"),
        (("show", "mnist@v22"), "mnist@v22 is not released: did you mean mnist@v2?"),
        (("show", "mnist@v2.1.1"), "did you mean mnist@v2.1.0?"),
        (("show", "mnist#prdo"), "no version of mnist is in stage 'prdo': did you mean mnist#prod?"),
        (("show", "mnist@v2", "-f", "kears"), "unknown format 'kears': did you mean 'keras'?"),
        (("show", "mnist@v2", "-f", "h5"), "mnist@v2 has no h5 format: it was released as keras"),
        (("get", "mnist@v2", "-f", "savemodel"), "did you mean 'savedmodel'?"),
        (("history", "mnits"), "no model 'mnits': did you mean 'mnist'?"),
        (("list", "mnsit"), "no model 'mnsit': did you mean 'mnist'?"),
        (("list", "--sort", "acuracy"), "--sort: no metric 'acuracy' in any release: did you mean 'accuracy'?"),
        (
            ("list", "mnist", "-m", "val.los"),
            "--metric: no metric 'val.los' in the releases of mnist: did you mean 'val.loss'?",
        ),
        (
            ("list", "cats", "--sort", "accuracy"),
            "no metric 'accuracy' in the releases of cats: they record no metrics",
        ),
        (
            ("diff", "mnist@v1", "mnist@v2", "-m", "accurcy"),
            "--metric: no metric 'accurcy' in mnist@v1 or mnist@v2: did you mean 'accuracy'?",
        ),
        (
            ("diff", "mnist@v1", "mnist@v2", "-m", "acc"),
            "no metric 'acc' in mnist@v1 or mnist@v2: they have accuracy, val.loss",
        ),
        (("diff", "mnist@v1", "mnsit@v2"), "did you mean 'mnist'?"),
        (("report", "mnsit"), "did you mean 'mnist'?"),
        (("deprecate", "mnist@v11"), "did you mean mnist@v1?"),
        (("rollback", "mnist", "prod", "--to", "v22"), "did you mean mnist@v2?"),
        (("show", "zebra@v1"), "no releases of model 'zebra': see `kgit list`"),
        (("show", "mnist@v7"), "mnist@v7 is not released (latest: v1.0.0, v2.0.0, v2.1.0)"),
    ],
)
def test_unknown_names_are_refused_with_a_suggestion(
    registry: Path,
    args: tuple[str, ...],
    expect: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = snapshot(registry)
    code, out, err = run_main(registry, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("kgit: error: "), err
    assert expect in err, err
    assert snapshot(registry) == before


def test_known_names_still_work(
    registry: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(
        registry, "list", "--sort", "accuracy", "-m", "val.loss", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0
    versions = [line.split()[1] for line in out.splitlines()[1:]]
    assert versions[:3] == ["v2.1.0", "v2", "v1"]  # best accuracy first; cats (no metrics) last
    code, out, _ = run_main(
        registry, "diff", "mnist@v1", "mnist@v2", "-m", "accuracy", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0 and "accuracy" in out and "val.loss" not in out
    code, out, _ = run_main(
        registry, "diff", "mnist@v1", "mnist@v2", "-m", "accuracy", "--json", monkeypatch=monkeypatch, capsys=capsys
    )
    diffed = json.loads(out)
    assert [m["key"] for m in diffed["metrics"]] == ["accuracy"]
    assert [c["key"] for c in diffed["changes"] if c["section"] == "metrics"] == ["accuracy"]


def test_a_gate_on_a_misspelt_metric_names_the_one_meant(
    registry: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(
        registry, "promote", "mnist@v2.1.0", "prod", "--require", "acuracy>=0.9", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 1 and "has no metric acuracy (it has: " in err and "; did you mean accuracy?" in err, err


def test_a_typo_in_a_command_or_option_is_one_line_with_a_suggestion(
    registry: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(registry, "lst", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err == "kgit: error: No such command 'lst'. Did you mean 'list'? (see `kgit -h`)\n"
    code, _, err = run_main(registry, "list", "--jsn", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "--json" in err and "kgit list -h" in err
