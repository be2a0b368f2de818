"""``kgit compat --quick``: will a Keras version understand this model's configuration? A static check.

No environment is made and nothing is imported. The target Keras version comes from the request
(``keras==3.12.*``; a cached wheel that satisfies it is used as it is, else the request is resolved
with uv); its wheel is downloaded once (``pip download --no-deps``) into ``$XDG_CACHE_HOME/kgit/wheels``
and read with ``ast``: the layer classes ``keras.layers`` exports, each one's ``__init__`` arguments
along its base classes (the arguments ``Layer`` itself takes and pops included), and the dtype
policies ``keras.dtype_policies`` exports. The release's model configuration is read without
TensorFlow (kgit.models.config_scan) and every layer in it is held against them:

- a layer class the version does not have (``AdaptiveAveragePooling2D`` in Keras 3.12);
- an argument in a layer's configuration its class does not take there (``from_config`` would pass
  it to ``__init__``, which refuses it);
- a dtype policy class the version does not have.

What it cannot see (a changed behaviour, a missing op, weights that no longer fit) is for ``kgit
compat`` itself, which loads the model. Keras 3 targets only: tf_keras reads configurations its own way.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kgit.compat.checking import EnvRequest
from kgit.core import forkserver
from kgit.core.errors import KgitError, one_line
from kgit.core.metadata import METADATA_FILE
from kgit.registry import catalog
from kgit.registry.compat_records import canonical, parse_requirement
from kgit.store.git_ops import Repo

LAYERS_API = ("keras/layers/__init__.py", "keras/api/layers/__init__.py")
POLICIES_API = ("keras/dtype_policies/__init__.py", "keras/api/dtype_policies/__init__.py")
_WHEEL_RE = re.compile(r"^keras-([0-9][^-]*)-.*\.whl$")
MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})


def wheels_dir() -> Path:
    from kgit.compat.envs import cache_root

    return cache_root().parent / "wheels"


@dataclass
class Finding:
    where: str  # layer 'pool' (AdaptiveAveragePooling2D)
    what: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "what": self.what}


@dataclass
class QuickOutcome:
    request: EnvRequest
    keras: str | None  # the Keras version read (None: not a Keras 3 target)
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None

    @property
    def line(self) -> str:
        target = f"keras {self.keras}" if self.keras else "no Keras 3 version"
        if self.note:
            return f"{self.request.label} ({target}): not checked: {self.note}"
        if not self.findings:
            return f"{self.request.label} ({target}): nothing this version lacks (static check)"
        first = self.findings[0]
        more = f" (and {len(self.findings) - 1} more)" if len(self.findings) > 1 else ""
        return f"{self.request.label} ({target}): {first.where}: {first.what}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.request.label,
            "requested": list(self.request.specs),
            "keras": self.keras,
            "ok": not self.findings and not self.note,
            "findings": [f.to_dict() for f in self.findings],
            "note": self.note,
        }


@dataclass
class QuickReport:
    name: str
    version: str
    formats: list[str]
    outcomes: list[QuickOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not o.findings for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "formats": self.formats,
            "ok": self.ok,
            "environments": [o.to_dict() for o in self.outcomes],
        }


# -- the target's source --------------------------------------------------------------------------
class KerasSource:
    """A Keras wheel read as source: which layers and policies it exports, what each layer takes."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.zip = zipfile.ZipFile(wheel)
        self.names = set(self.zip.namelist())
        self._trees: dict[str, ast.Module | None] = {}

    @property
    def version(self) -> str:
        m = _WHEEL_RE.match(self.wheel.name)
        return m.group(1) if m else self.wheel.name

    def _tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            base = module.replace(".", "/")
            path = next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in self.names), None)
            self._trees[module] = ast.parse(self.zip.read(path)) if path else None
        return self._trees[module]

    def _exports(self, candidates: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Public name -> (module, name there) of an autogenerated API ``__init__``."""
        path = next((p for p in candidates if p in self.names), None)
        if path is None:
            return {}
        found = {}
        for node in ast.parse(self.zip.read(path)).body:
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    found[alias.asname or alias.name] = (node.module, alias.name)
        return found

    @cached_property
    def layers(self) -> dict[str, tuple[str, str]]:
        return self._exports(LAYERS_API)

    @cached_property
    def policies(self) -> dict[str, tuple[str, str]]:
        return self._exports(POLICIES_API)

    def _class(self, module: str, name: str) -> tuple[str, ast.ClassDef] | None:
        """(the module that defines it, its ClassDef), following ``from X import Y`` re-exports."""
        for _ in range(5):
            tree = self._tree(module)
            if tree is None:
                return None
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name == name:
                    return module, node
            source = next(
                (
                    (n.module, a.name)
                    for n in tree.body
                    if isinstance(n, ast.ImportFrom) and n.module
                    for a in n.names
                    if (a.asname or a.name) == name
                ),
                None,
            )
            if source is None:
                return None
            module, name = source
        return None

    def arguments(self, public: str) -> set[str] | None:
        """The keyword arguments layer class ``public`` accepts, along its bases while each passes
        ``**kwargs`` on (None: not known, e.g. a base outside the wheel)."""
        module, name = self.layers[public]
        accepted: set[str] = set()
        for _ in range(12):
            found = self._class(module, name)
            if found is None:
                return None
            module, cls = found
            init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            if init is not None:
                args = init.args
                accepted |= {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs] if a.arg != "self"}
                accepted |= (
                    {
                        c.args[0].value
                        for c in ast.walk(init)
                        if isinstance(c, ast.Call)
                        and isinstance(c.func, ast.Attribute)
                        and c.func.attr in ("pop", "get")
                        and isinstance(c.func.value, ast.Name)
                        and c.func.value.id == args.kwarg.arg
                        and c.args
                        and isinstance(c.args[0], ast.Constant)
                        and isinstance(c.args[0].value, str)
                    }
                    if args.kwarg
                    else set()
                )
                if args.kwarg is None or (name == "Layer" and module.endswith("layers.layer")):
                    return accepted  # Layer refuses any keyword argument it did not take or pop
            base = next((b for b in cls.bases if isinstance(b, (ast.Name, ast.Attribute))), None)
            if base is None:
                return accepted
            base_name = base.id if isinstance(base, ast.Name) else base.attr
            if base_name in ("object", "Operation", "KerasSaveable", "Tracker", "AutoTrackable"):
                return accepted
            tree = self._tree(module)
            origin = next(
                (
                    (n.module, a.name)
                    for n in (tree.body if tree else [])
                    if isinstance(n, ast.ImportFrom) and n.module
                    for a in n.names
                    if (a.asname or a.name) == base_name
                ),
                None,
            )
            module, name = origin if origin is not None else (module, base_name)
        return None


def keras_wheel(request: EnvRequest) -> Path | None:
    """The Keras 3 wheel the request targets, downloaded once; None if it asks for tf_keras only."""
    names = {canonical(parse_requirement(s)[0]): s for s in request.specs}
    if "keras" not in names and "tf-keras" in names:
        return None
    spec = names.get("keras")
    if spec is not None:
        _name, specifier = parse_requirement(spec)
        for wheel in sorted(wheels_dir().glob("keras-*.whl"), reverse=True):
            m = _WHEEL_RE.match(wheel.name)
            if m and specifier.contains(m.group(1), prereleases=True):
                return wheel
    from kgit.compat import envs

    pins, _notes = envs.resolve(request.specs)
    version = next((v for k, v in pins.items() if canonical(k) == "keras"), None)
    if version is None:
        return None
    cached = [w for w in wheels_dir().glob(f"keras-{version}-*.whl")]
    return cached[0] if cached else _download(f"keras=={version}")


def _download(spec: str) -> Path:
    """``pip download --no-deps`` one wheel into the wheel cache (through a temporary folder)."""
    target = wheels_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "--disable-pip-version-check",
                "-d",
                tmp,
                spec,
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
            env={**os.environ, "PIP_NO_INPUT": "1"},
            preexec_fn=forkserver.dies_with_this_process(),
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
            raise KgitError(
                f"could not download {spec} to read it: {one_line(lines[-1] if lines else 'no wheel', 200)} "
                "(is the package index reachable?)"
            )
        final = target / wheels[0].name
        os.replace(wheels[0], final)
        return final


# -- the model's configuration --------------------------------------------------------------------
def _layers(config: Any, where: str = "the model") -> Iterator[dict[str, Any]]:
    """Every layer object in a model configuration: entries of a model's ``layers`` list, and
    objects serialized from ``keras.layers`` (nested models included)."""
    stack = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack += reversed(value)
            continue
        if not isinstance(value, dict):
            continue
        inner = value.get("config")
        if isinstance(value.get("class_name"), str) and isinstance(inner, dict):
            module = value.get("module")
            if value["class_name"] in MODEL_CLASSES:
                stack += reversed(inner.get("layers") or [])
                continue
            if isinstance(module, str) and (module == "keras.layers" or module.startswith("keras.src.layers")):
                yield value
            elif module is None and value.get("registered_name") is None:
                yield value
        stack += [v for k, v in value.items() if k not in ("config",)]
        if isinstance(inner, dict):
            stack += [v for k, v in inner.items() if k != "layers"]


def _policies(config: Any) -> Iterator[str]:
    stack = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack += value
        elif isinstance(value, dict):
            cls = value.get("class_name")
            if (
                isinstance(cls, str)
                and cls.endswith("DTypePolicy")
                and isinstance(value.get("module"), str)
                and value["module"].split(".")[0] == "keras"
            ):
                yield cls
            stack += list(value.values())


def findings(config: Any, source: KerasSource, custom: set[str]) -> list[Finding]:
    """What in ``config`` (a model configuration) ``source``'s Keras does not have."""
    out: list[Finding] = []
    for layer in _layers(config):
        cls = layer["class_name"]
        name = layer["config"].get("name")
        where = f"layer {name!r} ({cls})" if isinstance(name, str) else f"a {cls} layer"
        if cls in custom or (layer.get("module") is None and cls not in source.layers):
            continue  # a custom class, or an object a legacy configuration does not label as a layer
        if cls not in source.layers:
            out.append(Finding(where, f"keras {source.version} has no layer class {cls}"))
            continue
        accepted = source.arguments(cls)
        if accepted is None:
            continue
        extra = sorted(k for k in layer["config"] if k not in accepted)
        if extra:
            out.append(
                Finding(
                    where, f"keras {source.version}'s {cls} takes no argument {', '.join(repr(k) for k in extra[:3])}"
                )
            )
    for cls in dict.fromkeys(_policies(config)):
        if cls not in source.policies:
            out.append(Finding(f"dtype policy {cls}", f"keras {source.version} has no dtype policy {cls}"))
    return list({(f.where, f.what): f for f in out}.values())


def _configs(repo: Repo, rel: catalog.Release) -> tuple[list[Any], list[str], set[str]]:
    """(the model configurations of the formats present here, those formats, the custom class names)."""
    from kgit.core.metadata import Metadata
    from kgit.models import config_scan, formats

    configs, present, custom = [], [], set()
    for fmt, info in rel.formats.items():
        folder = repo.root / str(info["path"])
        if not (folder / METADATA_FILE).exists():
            continue
        files = formats.config_files(folder, fmt)
        if not files:
            continue
        meta = Metadata.read(folder)
        custom |= {s.rpartition(":")[2].rpartition(".")[2] for s in meta.custom_objects}
        present.append(fmt)
        configs += config_scan.read_configs(files[0])[:1]  # the model's; an H5's training config is not layers
    return configs, present, custom


def check(repo: Repo, name: str, version: str, requests: Sequence[EnvRequest]) -> QuickReport:
    rel = catalog.resolve(repo, name, version)
    configs, present, custom = _configs(repo, rel)
    if not configs:
        raise KgitError(
            f"no model configuration of {rel.name}@{rel.version} is here to read: run "
            f"`kgit get {rel.name}@{rel.version}` first (the quick check reads the keras, h5 or "
            "savedmodel format's configuration)"
        )
    report = QuickReport(rel.name, rel.version, present)
    for request in requests:
        wheel = keras_wheel(request)
        if wheel is None:
            report.outcomes.append(
                QuickOutcome(
                    request,
                    None,
                    note="the quick check reads Keras 3 versions; run kgit compat without --quick for tf_keras",
                )
            )
            continue
        source = KerasSource(wheel)
        found = [f for config in configs for f in findings(config, source, custom)]
        report.outcomes.append(
            QuickOutcome(request, source.version, list({(f.where, f.what): f for f in found}.values()))
        )
    return report


def clear_wheels() -> None:
    shutil.rmtree(wheels_dir(), ignore_errors=True)
