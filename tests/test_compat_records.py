"""kgit compat without environments: the record tags' grammar and parsing, .kgit/compat.yaml, the
require_compat gate, the quick check against real Keras wheels, and the one-line errors of making an
environment (a version the index does not have, no index reachable, a failed creation)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from kgit.compat import envs, quick
from kgit.compat.checking import EnvRequest
from kgit.core.errors import KgitError
from kgit.registry import compat_envs, compat_records, gates
from kgit.registry.compat_records import CompatRecord, env_key, passes, record_from_tag, unmet
from kgit.registry.versions import Version, compat_tag, is_lookalike, parse_compat
from kgit.store.git_ops import Repo, TagInfo

PACKAGES = {"keras": "3.12.4", "tensorflow": "2.21.0", "numpy": "2.4.6"}
KEY = env_key(PACKAGES, "3.11.7", "linux-x86_64")


def uv_cache() -> str:
    """The machine's uv cache (outside the tests' own HOME), so wheels are downloaded once."""
    return os.environ.get("UV_CACHE_DIR") or str(Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "uv")


def record(result: str = "loads", **changes: object) -> CompatRecord:
    fmt_result = {
        "result": result,
        "max_diff": 0.0 if result != "fails" else None,
        "error": "TypeError: boom" if result == "fails" else None,
    }
    rec = CompatRecord(
        "m",
        "v1",
        KEY,
        result,
        dict(PACKAGES),
        "3.11.7",
        "linux-x86_64",
        max_diff=fmt_result["max_diff"],  # type: ignore[arg-type]
        error=fmt_result["error"],  # type: ignore[arg-type]
        formats={"savedmodel": fmt_result},
        requested=["keras==3.12.*"],
    )
    for k, v in changes.items():
        setattr(rec, k, v)
    return rec


def parsed(
    rec: CompatRecord, message: str | None = None, name: str | None = None, annotated: bool = True
) -> CompatRecord:
    out = record_from_tag(
        TagInfo(name or rec.tag_name(), "c" * 40, "t", "2026-01-01", message or rec.message(), "o" * 40, annotated)
    )
    assert out is not None
    return out


# -- grammar -------------------------------------------------------------------------------------
def test_compat_tags_round_trip_and_look_alikes_are_refused() -> None:
    tag = compat_tag("mnist", Version(3), KEY)
    assert tag == f"mnist@v3.0.0#compat#{KEY}"
    assert parse_compat(tag) == ("mnist", Version(3), KEY)
    assert not is_lookalike(tag)
    for bad in (
        f"mnist@v3.0.0#compat#{KEY.upper()}",
        "mnist@v3.0.0#compat#abc",
        f"mnist@v03.0.0#compat#{KEY}",
        f"Mnist@v3.0.0#compat#{KEY}",
        f"mnist@v3.0.0#compat#{KEY}0",
        f"mnist@v3.0.0#compat!#{KEY}",
    ):
        assert parse_compat(bad) is None and is_lookalike(bad), bad


def test_the_guards_treat_compat_tags_as_kgit_tags() -> None:
    from kgit.guard import invariants

    ref = f"refs/tags/{compat_tag('m', Version(1), KEY)}"
    assert invariants.is_protected_tag(ref)
    said = invariants.protected_tag_change(ref, "a" * 40, invariants.ZERO)
    assert said is not None and "compat record" in said


# -- records -------------------------------------------------------------------------------------
def test_a_record_reads_back_as_written() -> None:
    rec = parsed(
        record(
            "loads-but-differs",
            max_diff=3e-4,
            formats={"savedmodel": {"result": "loads-but-differs", "max_diff": 3e-4, "error": None}},
        )
    )
    assert rec.valid, rec.problems
    assert rec.text == "loads-but-differs (max diff 3e-4)"
    assert rec.describe_env(["keras"]) == "keras 3.12.4"
    assert parsed(record("fails")).text == "fails (TypeError: boom)"


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"packages": {**PACKAGES, "keras": "3.15.1"}}, "is not the key of the environment"),
        (
            {"result": "loads", "formats": {"keras": {"result": "fails", "max_diff": None, "error": "x"}}},
            "its formats say fails",
        ),
        ({"formats": {"onnx": {"result": "loads"}}}, "no known formats"),
        ({"name": "other"}, "its name says"),
        ({"env": "Not A Name"}, "not an environment name"),
    ],
)
def test_a_record_that_contradicts_its_tag_or_itself_is_invalid(change: dict[str, object], problem: str) -> None:
    good = record()
    body = {**good.body(), **change}
    import json

    message = f"kgit compat\n\n{compat_records.COMPAT_MARK_LINE} {json.dumps(body)}\n"
    rec = parsed(good, message, name=good.tag_name())
    assert not rec.valid and problem in rec.problems[0], rec.problems


def test_lightweight_and_messageless_records_are_invalid() -> None:
    assert "lightweight" in parsed(record(), annotated=False).problems[0]
    assert "no `kgit-compat:`" in parsed(record(), "just a note\n").problems[0]


def test_passes_needs_a_valid_loading_record_meeting_every_specifier() -> None:
    rec = parsed(record())
    assert passes(rec, ["keras==3.12.*"]) and passes(rec, ["keras>=3.10", "tensorflow==2.21.*"])
    assert not passes(rec, ["tensorflow==2.18.*"]) and unmet(rec, ["tensorflow==2.18.*", "keras==3.*"]) == [
        "tensorflow==2.18.*"
    ]
    assert not passes(rec, ["tf-keras==2.21.*"])
    assert not passes(
        parsed(
            record(
                "loads-but-differs",
                max_diff=1.0,
                formats={"keras": {"result": "loads-but-differs", "max_diff": 1.0, "error": None}},
            )
        ),
        ["keras==3.12.*"],
    )


# -- .kgit/compat.yaml and the gate --------------------------------------------------------------
def test_compat_yaml_environments_and_their_errors() -> None:
    envs_ = compat_envs.parse('serving: ["tensorflow==2.18.*"]\nlegacy: "tf-keras==2.21.*"\n')
    assert envs_ == {"serving": ["tensorflow==2.18.*"], "legacy": ["tf-keras==2.21.*"]}
    with pytest.raises(KgitError, match="not an environment name"):
        compat_envs.parse('Serving: ["tensorflow==2.18.*"]')
    with pytest.raises(KgitError, match="no URLs"):
        compat_envs.parse('serving: ["tensorflow @ https://example.invalid/tf.whl"]')
    with pytest.raises(KgitError, match="defines no environment 'prod-tf' .it has: legacy, serving"):
        compat_envs.lookup(envs_, "prod-tf")


def commit_files(repo: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    subprocess.run(["git", "add", *files], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "rules"], cwd=repo, check=True)


def test_require_compat_takes_the_environment_committed_with_the_gates(git_repo: Path) -> None:
    from kgit.registry.catalog import Release

    commit_files(
        git_repo,
        {
            ".kgit/gates.yaml": "stages:\n  prod:\n    require_compat: [serving]\n",
            ".kgit/compat.yaml": 'serving: ["keras==3.12.*", "tensorflow==2.21.*"]\n',
        },
    )
    rules = gates.read(Repo(git_repo)).rules_for("m", "prod")
    assert [(r.text, r.specs) for r in rules] == [("compat serving", ("keras==3.12.*", "tensorflow==2.21.*"))]
    rel = Release("m", "v1", "m@v1.0.0", "c" * 40, {}, None, None, None, "t")
    failed = gates.failures(rules, rel, None, gates.Gates())
    assert len(failed) == 1 and "has no compat record that loads in serving" in failed[0]
    assert "kgit compat m@v1 --env serving" in failed[0]
    rel.compat = [parsed(record("fails"))]
    failed = gates.failures(rules, rel, None, gates.Gates())
    assert "recorded there: keras 3.12.4, tensorflow 2.21.0: fails (TypeError: boom)" in failed[0]
    rel.compat = [parsed(record())]
    assert gates.failures(rules, rel, None, gates.Gates()) == []
    commit_files(git_repo, {".kgit/compat.yaml": 'other: ["keras==3.12.*"]\n'})
    with pytest.raises(
        gates.GateError,
        match="requires compat serving, but .kgit/compat.yaml .at [0-9a-f]{8}. defines no environment 'serving'",
    ):
        gates.read(Repo(git_repo))


def test_a_gates_file_naming_a_bad_environment_is_refused() -> None:
    with pytest.raises(gates.GateError, match="require_compat"):
        gates.parse("stages:\n  prod:\n    require_compat: [Not-OK]\n")


# -- the quick check on real wheels -----------------------------------------------------------------
@pytest.fixture(scope="session")
def keras_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, quick.KerasSource]:
    """Keras 3.12 and 3.15 as the quick check reads them: their wheels, downloaded once per session."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        return {v: quick.KerasSource(quick._download(f"keras=={v}")) for v in ("3.12.0", "3.15.1")}
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved


def layer(cls: str, **config: object) -> dict[str, object]:
    return {
        "module": "keras.layers",
        "class_name": cls,
        "config": {"name": cls.lower(), "trainable": True, **config},
        "registered_name": None,
    }


def model_config(*layers: dict[str, object]) -> dict[str, object]:
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {"name": "m", "layers": list(layers)},
        "registered_name": "Functional",
    }


def test_quick_check_finds_what_keras_3_12_lacks(keras_wheels: dict[str, quick.KerasSource]) -> None:
    old, new = keras_wheels["3.12.0"], keras_wheels["3.15.1"]
    policy = {"module": "keras", "class_name": "AWQDTypePolicy", "config": {"name": "awq"}, "registered_name": None}
    config = model_config(
        layer("InputLayer", batch_shape=[None, 8, 8, 3], dtype="float32", sparse=False, ragged=False),
        layer("AdaptiveAveragePooling2D", output_size=[2, 2], data_format="channels_last"),
        layer("Dense", units=2, activation="relu", use_bias=True, quantization_config=None, dtype=policy),
        layer(
            "Conv2D",
            filters=2,
            kernel_size=[3, 3],
            strides=[1, 1],
            padding="valid",
            data_format="channels_last",
            dilation_rate=[1, 1],
            groups=1,
            activation="linear",
            use_bias=True,
        ),
    )
    found = {(f.where, f.what) for f in quick.findings(config, old, set())}
    assert found == {
        (
            "layer 'adaptiveaveragepooling2d' (AdaptiveAveragePooling2D)",
            "keras 3.12.0 has no layer class AdaptiveAveragePooling2D",
        ),
        ("layer 'dense' (Dense)", "keras 3.12.0's Dense takes no argument 'quantization_config'"),
        ("dtype policy AWQDTypePolicy", "keras 3.12.0 has no dtype policy AWQDTypePolicy"),
    }
    assert quick.findings(config, new, set()) == []


def test_quick_check_passes_what_both_versions_have_and_skips_custom_layers(
    keras_wheels: dict[str, quick.KerasSource],
) -> None:
    custom: dict[str, object] = {
        "module": "support.zoo",
        "class_name": "ScaledDense",
        "config": {"name": "s", "brand_new": 1},
        "registered_name": "Course>ScaledDense",
    }
    config = model_config(
        layer("Dense", units=2, activation="relu", use_bias=True, kernel_initializer=None),
        layer("Flatten", data_format=None),
        custom,
    )
    assert quick.findings(config, keras_wheels["3.12.0"], {"ScaledDense"}) == []
    assert (
        quick.findings(model_config(layer("Dense", units=2, made_up=True)), keras_wheels["3.12.0"], set())[0].what
        == "keras 3.12.0's Dense takes no argument 'made_up'"
    )


def test_quick_check_uses_a_cached_wheel_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keras_wheels: dict[str, quick.KerasSource]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    quick.wheels_dir().mkdir(parents=True)
    wheel = keras_wheels["3.12.0"].wheel
    (quick.wheels_dir() / wheel.name).write_bytes(wheel.read_bytes())
    monkeypatch.setenv("UV_DEFAULT_INDEX", "http://127.0.0.1:9/simple")  # nothing answers there
    assert quick.keras_wheel(EnvRequest(("keras==3.12.*",))) == quick.wheels_dir() / wheel.name


# -- making environments: one line each ------------------------------------------------------------
@pytest.fixture
def env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", uv_cache())
    return tmp_path / "cache" / "kgit" / "envs"


def test_a_version_the_index_does_not_have_is_one_line(env_cache: Path) -> None:
    with pytest.raises(envs.EnvError) as info:
        envs.environment(["keras==3.99.0"])
    message = str(info.value)
    assert "\n" not in message and "keras==3.99.0 does not exist on the package index" in message
    assert "pip index versions keras" in message
    assert (
        not env_cache.exists()
        or not any(env_cache.iterdir())
        or list(env_cache.iterdir()) == [env_cache / "resolved.json"]
    )


def test_no_index_reachable_is_one_line(env_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_DEFAULT_INDEX", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("UV_NO_CACHE", "1")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(envs.EnvError) as info:
        envs.environment(["keras==3.12.*"])
    assert "\n" not in str(info.value) and str(info.value).startswith("no package index reachable"), info.value


def test_a_failed_creation_says_so_and_leaves_nothing(env_cache: Path) -> None:
    env = envs.Environment("0" * 16, env_cache / ("0" * 16), {"keras": "3.99.0"}, ["keras==3.99.0"], "3.11", "x")
    env_cache.mkdir(parents=True)
    with pytest.raises(envs.EnvError) as info:
        envs._create(env)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("creating the environment for keras==3.99.0 failed")
    assert str(info.value).endswith(f"nothing was left behind in {env_cache}")
    assert list(env_cache.iterdir()) == []


def test_a_killed_creation_is_swept_by_the_next(env_cache: Path) -> None:
    env_cache.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = env_cache / f".{'1' * 16}.tmp-{dead.pid}"
    (stale / "lib").mkdir(parents=True)
    envs._sweep(env_cache)
    assert not stale.exists()


def test_specifiers_are_checked_before_anything_runs() -> None:
    with pytest.raises(KgitError, match="is not a package requirement"):
        envs.check_specs(["keras=3.12"])
    with pytest.raises(KgitError, match="at least one package"):
        envs.check_specs([])
