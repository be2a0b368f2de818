"""What loading a model would run, read from its configuration alone (kgit.models.config_scan): fast, no
TensorFlow. Configurations are written here as Keras 3 and tf_keras write them (field for field),
in real .keras zips, H5 files (h5py) and tf_keras' keras_metadata.pb protocol buffers."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kgit.core.errors import ModelSourceError, UnsafeModelError
from kgit.models import config_scan

OPT_IN = "pass --unsafe (kgit.load(..., unsafe=True)) only if you trust who released it"


def layer(class_name: str, name: str, module: str | None = "keras.layers", **config: Any) -> dict[str, Any]:
    return {
        "module": module,
        "class_name": class_name,
        "config": {"name": name, "trainable": True, **config},
        "registered_name": None,
        "inbound_nodes": [],
    }


def lambda_fn() -> dict[str, Any]:
    """A Python lambda as Keras 3 serializes it: marshalled bytecode, base64."""
    return {
        "class_name": "__lambda__",
        "config": {"code": "4wEAAAAAAAAAAAAAAAIAAAADAAAA8wwAAACXAHwAZAF6BQAAUwA=", "defaults": None, "closure": None},
    }


def functional(*layers: dict[str, Any], compile_config: dict[str, Any] | None = None) -> dict[str, Any]:
    model = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": "Functional",
        "config": {
            "name": "functional",
            "trainable": True,
            "layers": [layer("InputLayer", "x", batch_shape=[None, 4], dtype="float32"), *layers],
        },
    }
    if compile_config is not None:
        model["compile_config"] = compile_config
    return model


def dense(name: str = "dense", module: str = "keras.layers") -> dict[str, Any]:
    return layer(
        "Dense",
        name,
        module,
        units=2,
        kernel_initializer={
            "module": "keras.initializers",
            "class_name": "GlorotUniform",
            "config": {"seed": None},
            "registered_name": None,
        },
    )


def refusal(config: Any, *, declared: Sequence[str] | None = (), allow_code: bool = False) -> str | None:
    return config_scan.refusal(
        "mnist@v3 (keras)", config_scan.scan(config, declared), allow_code=allow_code, fix=OPT_IN
    )


def write_keras(path: Path, config: Any) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"")
    return path


# -- code: refused unless the loader opts in --------------------------------------------------------
def test_a_lambda_layer_is_refused_naming_the_layer_unless_the_loader_opts_in() -> None:
    config = functional(layer("Lambda", "triple", function=lambda_fn(), arguments={}), dense())
    assert refusal(config) == (
        "mnist@v3 (keras): layer 'triple' is a Python Lambda (arbitrary code): refused; "
        "pass --unsafe (kgit.load(..., unsafe=True)) only if you trust who released it"
    )
    assert refusal(config, allow_code=True) is None
    assert refusal(functional(dense())) is None


def test_bytecode_anywhere_else_is_code_too() -> None:
    """A serialized Python function outside a Lambda layer (here: the loss), and tf_keras' legacy form."""
    config = functional(dense(), compile_config={"optimizer": "adam", "loss": lambda_fn()})
    assert "holds a serialized Python function (bytecode): refused" in str(refusal(config))
    legacy = {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": [
                {
                    "class_name": "MyLayer",
                    "config": {"name": "mine", "function": ["4wEAAAAA", None, None], "function_type": "lambda"},
                }
            ],
        },
    }
    assert "layer 'mine' holds a serialized Python function (bytecode)" in str(refusal(legacy))
    assert refusal(legacy, allow_code=True) is None


def test_what_keras_safe_mode_refuses_besides_lambdas_is_code() -> None:
    tfsm = functional(layer("TFSMLayer", "outside", filepath="/srv/other/savedmodel", call_endpoint="serve"))
    assert "layer 'outside' loads the SavedModel '/srv/other/savedmodel' from outside the release" in str(refusal(tfsm))
    vocab = functional(layer("StringLookup", "words", vocabulary="/etc/passwd"))
    assert "layer 'words' reads its vocabulary from the file '/etc/passwd'" in str(refusal(vocab))
    assert refusal(vocab, allow_code=True) is None
    assert refusal(functional(layer("StringLookup", "words", vocabulary=["red", "green"]))) is None


# -- never allowed, opt-in or not ---------------------------------------------------------------------
def test_a_module_outside_the_allow_list_is_refused_even_with_opt_in() -> None:
    config = functional(dense("dense", module="evil_marker"))
    line = refusal(config, allow_code=True)
    assert line == (
        "mnist@v3 (keras): layer 'dense' names module 'evil_marker', which is neither Keras' nor declared "
        "by the release (importing it would run its code): refused, with or without --unsafe"
    )
    assert refusal(config, declared=["evil_marker"]) is None  # a custom object the release declares
    assert refusal(functional(dense(module="support.zoo")), declared=["support"]) is None  # a submodule of one
    assert refusal(functional(dense(module="supportx.zoo")), declared=["support"]) is not None
    for module in ("keras.layers", "keras_hub.src.models.bert.bert_backbone", "tf_keras.layers", "tensorflow.keras"):
        assert refusal(functional(dense(module=module))) is None, module
    for module in ("kerasx", "keras_evil.layers", "tensorflow_evil", "os", "__main__"):
        assert refusal(functional(dense(module=module))) is not None, module
    # the releaser's own model (declared None): the custom-object rules decide, not this check
    assert config_scan.scan(config, None) == []


def test_a_never_finding_wins_over_an_allowed_lambda() -> None:
    config = functional(layer("Lambda", "triple", function=lambda_fn()), dense(module="os"))
    assert "names module 'os'" in str(refusal(config, allow_code=True))


@pytest.mark.parametrize(
    "smuggled",
    [
        # a Lambda whose function is Keras' own switch: safe mode off for everything loaded after it
        layer(
            "Lambda",
            "switch",
            function={
                "module": "keras.config",
                "class_name": "function",
                "config": "enable_unsafe_deserialization",
                "registered_name": None,
            },
        ),
        layer("Dense", "dense", units=2, safe_mode=False),
        layer(
            "Dense",
            "dense",
            units=2,
            activation={
                "module": "keras.utils",
                "class_name": "function",
                "config": "get_file",
                "registered_name": None,
            },
        ),
        layer(
            "Dense",
            "dense",
            units=2,
            activation={
                "module": "tensorflow.io",
                "class_name": "function",
                "config": "write_file",
                "registered_name": None,
            },
        ),
    ],
)
def test_a_config_that_switches_safe_mode_off_or_calls_a_loader_is_refused_even_with_opt_in(
    smuggled: dict[str, Any],
) -> None:
    line = refusal(functional(smuggled), allow_code=True)
    assert line is not None and line.endswith("refused, with or without --unsafe"), line
    assert f"layer '{smuggled['config']['name']}'" in line


def test_numpy_object_arrays_and_malformed_names_are_refused() -> None:
    numbers = {"class_name": "__numpy__", "config": {"value": [1, 2], "dtype": "float32"}}
    objects = {"class_name": "__numpy__", "config": {"value": [1, 2], "dtype": "object"}}
    assert refusal(functional(layer("Dense", "d", units=2, bias=numbers))) is None
    assert "holds a NumPy array of dtype 'object'" in str(
        refusal(functional(layer("Dense", "d", units=2, bias=objects)))
    )
    bad = dense()
    bad["module"] = ["os", "system"]
    assert "has a malformed 'module' (list, not a name)" in str(refusal(functional(bad)))


# -- reading the files, fast and without TensorFlow -------------------------------------------------
def test_configs_are_read_from_keras_zips_h5_files_and_tf_keras_metadata(tmp_path: Path) -> None:
    import h5py

    config = functional(layer("Lambda", "triple", function=lambda_fn()))
    assert config_scan.read_configs(write_keras(tmp_path / "model.keras", config)) == [config]
    h5 = tmp_path / "model.h5"
    tf_keras_lambda = {
        "class_name": "Lambda",
        "config": {"name": "triple", "function": ["4wEA", None, None], "function_type": "lambda", "module": "__main__"},
    }
    with h5py.File(h5, "w") as fh:
        fh.attrs["model_config"] = json.dumps(
            {"class_name": "Functional", "config": {"name": "model", "layers": [tf_keras_lambda]}}
        )
        fh.attrs["training_config"] = json.dumps(
            {"loss": {"module": "evil_loss", "class_name": "function", "config": "loss"}}
        )
    found = config_scan.scan_files([h5], [])
    assert [f.describe("m") for f in found][:2] == [
        "m: layer 'triple' is a Python Lambda (arbitrary code)",
        "m: layer 'triple' holds a serialized Python function (bytecode)",
    ]
    assert any("names module 'evil_loss'" in f.what for f in found)

    # tf_keras SavedModel: SavedMetadata {repeated SavedObject nodes = 1}, SavedObject {metadata = 5, ...}
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _varint(len(payload)) + payload

    node = bytes([2 << 3, 7]) + field(3, b"root.layer-1") + field(5, json.dumps(tf_keras_lambda).encode())
    pb = tmp_path / "keras_metadata.pb"
    pb.write_bytes(
        field(1, node) + field(1, bytes([2 << 3, 0]) + field(5, b'{"class_name": "InputLayer", "config": {}}'))
    )
    assert "layer 'triple' is a Python Lambda" in str(
        config_scan.refusal("m", config_scan.scan_files([pb], []), allow_code=False, fix=OPT_IN)
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_unreadable_configurations_are_one_line_errors(tmp_path: Path) -> None:
    deep = tmp_path / "deep.keras"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("config.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelSourceError, match="nested too deeply"):
        config_scan.read_configs(deep)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelSourceError, match="cannot read the model's configuration"):
        config_scan.read_configs(tmp_path / "junk.keras")
    (tmp_path / "keras_metadata.pb").write_bytes(b"\x0a\xff\xff\x01")
    with pytest.raises(ModelSourceError, match="truncated"):
        config_scan.read_configs(tmp_path / "keras_metadata.pb")


def test_the_load_funnel_refuses_before_tensorflow_is_imported(tmp_path: Path) -> None:
    """kgit.models.formats.load_keras_model (what kgit.load and the validation process call) on a hand-edited
    .keras naming a module that would run code: refused naming the layer, before TensorFlow, Keras or
    that module is imported."""
    folder = tmp_path / "release"
    folder.mkdir()
    write_keras(folder / "model.keras", functional(dense("dense", module="evil_marker")))
    (tmp_path / "evil_marker.py").write_text("import pathlib\npathlib.Path(__file__).with_name('imported').touch()\n")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kgit.models import formats\n"
        "from kgit.core.errors import UnsafeModelError\n"
        "try:\n"
        "    formats.load_keras_model(Path(sys.argv[1]), 'keras', custom_objects={}, modules=[], builder=None,\n"
        "                             unsafe=True, label='m@v1 (keras)')\n"
        "except UnsafeModelError as exc:\n"
        "    print(exc)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'evil_marker') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    said, imported = proc.stdout.strip().splitlines()
    assert (
        said.startswith("m@v1 (keras): layer 'dense' names module 'evil_marker'") and "with or without --unsafe" in said
    )
    assert imported == "[]"
    assert not (tmp_path / "imported").exists()


def test_the_scan_is_fast_and_imports_no_tensorflow() -> None:
    """A configuration of 5,000 layers (a large real model has hundreds) is scanned in well under a
    second, in a process that never imports TensorFlow or Keras."""
    script = (
        "import sys, time\n"
        "from kgit.models import config_scan\n"
        "layers = [{'module': 'keras.layers', 'class_name': 'Dense', 'registered_name': None,\n"
        "           'config': {'name': f'd{i}', 'units': 4, 'kernel_initializer': {'module': 'keras.initializers',\n"
        "                      'class_name': 'GlorotUniform', 'config': {'seed': None}, 'registered_name': None}},\n"
        "           'inbound_nodes': [{'args': [{'class_name': '__keras_tensor__', 'config': {'shape': [None, 4]}}]}]}\n"
        "          for i in range(5000)]\n"
        "layers.append({'module': 'keras.layers', 'class_name': 'Lambda', 'config': {'name': 'last'}})\n"
        "config = {'module': 'keras', 'class_name': 'Functional', 'config': {'name': 'big', 'layers': layers}}\n"
        "start = time.perf_counter()\n"
        "found = config_scan.scan(config, [])\n"
        "print(time.perf_counter() - start, [f.where for f in found],\n"
        "      [m for m in ('tensorflow', 'keras', 'h5py') if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    seconds, rest = proc.stdout.split(" ", 1)
    assert rest.strip() == "[\"layer 'last'\"] []"
    assert float(seconds) < 1.0


def test_check_files_raises_the_refusal(tmp_path: Path) -> None:
    path = write_keras(tmp_path / "model.keras", functional(layer("Lambda", "triple", function=lambda_fn())))
    with pytest.raises(
        UnsafeModelError, match=r"^m: layer 'triple' is a Python Lambda \(arbitrary code\): refused; fix$"
    ):
        config_scan.check_files([path], label="m", declared=[], allow_code=False, fix="fix")
    config_scan.check_files([path], label="m", declared=[], allow_code=True, fix="fix")


def test_declared_modules_are_the_release_s_and_the_loader_s() -> None:
    from kgit.models import formats

    class Mine:
        pass

    assert formats.declared_modules(
        ["support.zoo"], {"Mine": Mine}, ["pkg.layers:Thing", "other.mod.Fn", "__main__:X"]
    ) == ["support.zoo", "pkg.layers", "other.mod", __name__]
