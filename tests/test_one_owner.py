"""One owner per mechanism, checked on the source with ``ast``: reading many git objects
(kgit.store.git_batch), reading YAML/JSON someone else wrote (kgit.core.bounded_yaml; ruamel only in
kgit.workflow.project, which rewrites dvc.yaml keeping its comments), the per-clone state under
``.git/kgit/`` (kgit.store.clone_state), formatting byte sizes (kgit.core.sizes) and the paths and
names of release folders (kgit.core.layout). Each rule is also shown to flag a small offending
module and to leave its owner alone. Git only: nothing here imports TensorFlow or DVC."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kgit

PACKAGE = Path(kgit.__file__).parent


@dataclass(frozen=True)
class Found:
    module: str
    function: str  # the enclosing function ("" at module level)
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} ({self.function or 'module'}): {self.what}"


def load(root: Path) -> dict[str, ast.Module]:
    """Every module of the package at ``root``, by dotted name."""
    trees = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        trees[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return trees


def _nodes(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """Every node with the name of the function it is in; string statements (docstrings) left out."""
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, function = stack.pop()
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        yield node, function
        stack.extend((child, function) for child in ast.iter_child_nodes(node))


def _strings(tree: ast.Module) -> Iterator[tuple[ast.Constant, str]]:
    for node, function in _nodes(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node, function


def _imports(tree: ast.Module, top: str) -> Iterator[tuple[ast.AST, str]]:
    for node, function in _nodes(tree):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and not node.level
            else []
        )
        if any(n == top or n.startswith(top + ".") for n in names):
            yield node, function


# -- the rules ------------------------------------------------------------------------------------
def batch_processes(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    """``git cat-file --batch``/``--batch-check``: its options, wherever a command is built."""
    for node, function in _strings(tree):
        if isinstance(node.value, str) and node.value.startswith("--batch"):
            yield node, function, f"{node.value!r}: a cat-file batch of its own"


def yaml_imports(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    for node, function in _imports(tree, "yaml"):
        yield node, function, "imports yaml"


def ruamel_imports(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    for node, function in _imports(tree, "ruamel"):
        yield node, function, "imports ruamel"


def json_reads(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    """``json.load(s)`` called, or ``load``/``loads`` imported from json."""
    for node, function in _nodes(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("load", "loads")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "json"
        ):
            yield node, function, f"json.{node.func.attr}"
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "json"
            and any(a.name in ("load", "loads") for a in node.names)
        ):
            yield node, function, "imports json.load(s)"


STATE_FILES = {
    "lock",
    "journal.json",
    "staging",
    "tagcache.json",
    "seen.db",
    "seen.json",
    "trust.json",
    "validated.json",
    "published.json",
}


def state_paths(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    """``common_dir`` (the git directory the state folder is in), the state folder itself, or the
    name of a file kept there."""
    for node, function in _nodes(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("common_dir", "state_dir"):
            yield node, function, f".{node.attr}"
        elif isinstance(node, ast.Name) and node.id == "state_dir":
            yield node, function, "state_dir"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in STATE_FILES - {"lock", "staging"}
        ):
            yield node, function, f"{node.value!r}: a state file's name"


_UNIT = r"[kKMGT]i?B"
_SIZE_TEXT = re.compile(rf"^ ?{_UNIT}(?![A-Za-z])|\d ?{_UNIT}(?![A-Za-z])")


def size_texts(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    """A unit of bytes after a formatted number (``f"{n / 1e6:.1f} MB"``), a literal size
    (``"1 MB"``) or a unit on its own (``("B", "KB", "MB")``)."""
    for node, function in _strings(tree):
        if isinstance(node.value, str) and (_SIZE_TEXT.search(node.value) or re.fullmatch(_UNIT, node.value)):
            yield node, function, f"{node.value[:40]!r}: a size formatted by hand"


_LAYOUT_NAMES = ("artifacts/", "metadata.json", "reference_inputs.npz", "reference_outputs.npz")
_LAYOUT_EXACT = {"artifacts", ".dvc", "dvc.yaml", "dvc.lock", "kgit-validate", "kgit.sig"}


def layout_names(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    """The release folders' paths and the names of their files (docstrings aside)."""
    for node, function in _strings(tree):
        if isinstance(node.value, str) and (node.value in _LAYOUT_EXACT or any(n in node.value for n in _LAYOUT_NAMES)):
            yield node, function, f"{node.value[:40]!r}: a release path or file name"


Finder = Callable[[ast.Module], Iterator[tuple[ast.AST, str, str]]]


@dataclass(frozen=True)
class Rule:
    name: str
    find: Finder
    owners: frozenset[str]  # modules that may (a name ending in "." names a package: all its modules)
    allowed: frozenset[tuple[str, str]] = frozenset()  # (module, function) that may too, each for a reason

    def owns(self, module: str) -> bool:
        return module in self.owners or any(module.startswith(o) for o in self.owners if o.endswith("."))

    def offences(self, trees: dict[str, ast.Module]) -> list[Found]:
        found = []
        for module, tree in trees.items():
            if self.owns(module):
                continue
            for node, function, what in self.find(tree):
                if (module, function) not in self.allowed:
                    found.append(Found(module, function, getattr(node, "lineno", 0), what))
        return sorted(found, key=str)


RULES = [
    Rule("git batch reader", batch_processes, frozenset({"kgit.store.git_batch"})),
    Rule("YAML library", yaml_imports, frozenset({"kgit.core.bounded_yaml"})),
    # the one place kgit rewrites a YAML file someone else owns, keeping its comments (dvc.yaml)
    Rule("ruamel writer", ruamel_imports, frozenset({"kgit.workflow.project"})),
    # kgit.compat.env_loader runs inside another environment's Python and imports nothing of kgit
    Rule(
        "JSON reader",
        json_reads,
        frozenset({"kgit.core.bounded_yaml", "kgit.compat.env_loader"}),
        frozenset(
            {
                # a model file's own Keras/HDF5 configuration, parsed by the models layer within its limits
                ("kgit.models.config_scan", "_json"),
                ("kgit.models.training_state", "_read_keras_training_state"),
                ("kgit.models.training_state", "strip_keras_file"),
                ("kgit.models.formats", "_h5_load_recompiled"),
                # a value made JSON-plain (dumped, then loaded back), nothing read
                ("kgit.models.model_source", "_json_safe"),
                # the validation worker's protocol: files kgit writes for itself in a private temporary folder
                ("kgit.core.forkserver", "serve"),
                ("kgit.models.roundtrip_worker", "_read_spec"),
                ("kgit.workflow.roundtrip", "roundtrip"),
                # a command-line value (--param KEY=JSON); the command line reaches kgit through the API only
                ("kgit.cli.releases", "_parse_params"),
            }
        ),
    ),
    Rule("per-clone state", state_paths, frozenset({"kgit.store.clone_state", "kgit.store.git_ops"})),
    Rule("size formatter", size_texts, frozenset({"kgit.core.sizes"})),
    # the command line's help texts may name files: it reaches kgit through the API only
    Rule("release layout", layout_names, frozenset({"kgit.core.layout", "kgit.cli.", "kgit.compat.env_loader"})),
]


@pytest.fixture(scope="module")
def trees() -> dict[str, ast.Module]:
    return load(PACKAGE)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_each_mechanism_has_one_owner(rule: Rule, trees: dict[str, ast.Module]) -> None:
    assert [str(f) for f in rule.offences(trees)] == []


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_every_owner_and_allowance_is_still_there(rule: Rule, trees: dict[str, ast.Module]) -> None:
    """An allowance for code that is gone (renamed, routed through the owner) is dropped, not kept."""
    assert sorted(o for o in rule.owners if not any(m == o or m.startswith(o) for m in trees)) == []
    used = {
        (module, function)
        for module in {m for m, _ in rule.allowed}
        if module in trees
        for _node, function, _what in rule.find(trees[module])
    }
    assert sorted(rule.allowed - used) == []


OFFENDERS = {
    "git batch reader": 'import subprocess\n\ndef blobs(ids):\n    return subprocess.run(["git", "cat-file", "--batch"], input=ids)\n',
    "YAML library": "def read(text):\n    import yaml\n    return yaml.safe_load(text)\n",
    "ruamel writer": "from ruamel.yaml import YAML\n",
    "JSON reader": "import json\n\ndef read(path):\n    return json.loads(path.read_text())\n",
    "per-clone state": 'def cache(repo):\n    return repo.common_dir / "kgit" / "tagcache.json"\n',
    "size formatter": 'def shown(n):\n    return f"{n / 1e6:.1f} MB"\n',
    "release layout": 'def folder(name, fmt, version):\n    return f"artifacts/{name}/{fmt}/{version}"\n',
}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_each_rule_flags_a_copy_and_spares_its_owner(rule: Rule, tmp_path: Path) -> None:
    package = tmp_path / "kgit"
    (package / "store").mkdir(parents=True)
    for folder in (package, package / "store"):
        (folder / "__init__.py").write_text('"""A package."""\n')
    (package / "store" / "sneaky.py").write_text(
        '"""Docstrings may name anything: artifacts/, 1 MB, --batch."""\n' + OFFENDERS[rule.name]
    )
    found = rule.offences(load(package))
    assert [(f.module, f.function or "module") for f in found] and {f.module for f in found} == {"kgit.store.sneaky"}, (
        found
    )
    owner = sorted(o for o in rule.owners if not o.endswith("."))[0]
    spared = {**load(package), owner: ast.parse(OFFENDERS[rule.name])}
    del spared["kgit.store.sneaky"]
    assert rule.offences(spared) == []
