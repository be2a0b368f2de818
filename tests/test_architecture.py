"""The code's shape, checked: the command line goes through the Python API only, and heavy
libraries stay out of the modules that only read git."""

from __future__ import annotations

import ast
from pathlib import Path

import kgit
from kgit import api

PACKAGE = Path(kgit.__file__).parent
# What a CLI module may import from kgit: the API, the CLI's own helpers, the errors it maps to exit
# codes, and the package itself (for __version__).
CLI_MAY_IMPORT = {"kgit", "kgit.api", "kgit.errors"}


def _kgit_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kgit":
            if node.module == "kgit":  # `from kgit import api` is the module kgit.api
                found += [(node.lineno, "kgit" if a.name == "__version__" else f"kgit.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "kgit"]
    return found


def test_the_cli_calls_nothing_but_the_api() -> None:
    offenders = [
        f"{path.name}:{line} imports {module}"
        for path in sorted((PACKAGE / "cli").glob("*.py"))
        for line, module in _kgit_imports(path)
        if module not in CLI_MAY_IMPORT and not module.startswith("kgit.cli")
    ]
    assert offenders == []


def test_the_rule_catches_a_cli_module_reaching_past_the_api(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from kgit import registry\nfrom kgit.git_ops import Repo\nfrom kgit import api\n")
    assert [m for _, m in _kgit_imports(sneaky)] == ["kgit.registry", "kgit.git_ops", "kgit.api"]


def test_every_public_api_function_is_documented() -> None:
    missing = [name for name in api.__all__ if not (getattr(api, name).__doc__ or "").strip()]
    assert missing == []


def test_no_module_is_named_like_a_public_function() -> None:
    """`import kgit.validate` would replace the function `kgit.validate` with the module for everyone:
    modules take other names (releasing, validating, diffing...)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert sorted(modules & set(kgit.__all__)) == []
