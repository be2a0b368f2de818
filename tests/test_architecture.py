"""The code's shape, checked: the import contract in pyproject.toml (layers, where TensorFlow and DVC
may be imported, the command line through the API only, no cycles) holds, and it catches breaches."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kgit
from kgit import api

PACKAGE = Path(kgit.__file__).parent
ROOT = PACKAGE.parent
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
LAYERS = ["core", "store", "registry", "trust", "models", "workflow", "guard", "serving", "reporting", "cli", "keras"]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # grimp reads the package from sys.path: the copy under test comes first
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_the_import_contract_is_kept() -> None:
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_contract_catches_each_kind_of_breach(tmp_path: Path) -> None:
    """A copy of the package with one breach of each rule, function-level imports included: every
    contract reports it."""
    copy = tmp_path / "kgit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    breaches = {
        "registry/versions.py": "def _f():\n    import tensorflow\n",  # TensorFlow outside kgit.models
        "registry/seen.py": "def _g():\n    import dvc.repo\n",  # DVC outside the DVC adapter
        "store/git_ops.py": "def _h():\n    from kgit.registry import catalog\n",  # a lower layer reaching up
        "cli/app.py": "def _i():\n    from kgit.store import git_ops\n",  # the CLI past the API
        "core/errors.py": "def _j():\n    from kgit.core import fsutil\n",  # fsutil imports errors: a cycle
        "keras/background.py": "def _k():\n    import keras\n",  # the training callback past kgit.models
        "keras/releaser.py": "def _l():\n    from kgit.cli import app\n",  # the two top layers are independent
    }
    for rel, code in breaches.items():
        with (copy / rel).open("a") as fh:
            fh.write("\n\n" + code)
    proc = _lint(tmp_path)
    assert proc.returncode == 1
    out = proc.stdout
    assert "Contracts: 0 kept, 5 broken." in out, out[-3000:]
    for needle in (
        "kgit.registry.versions -> tensorflow",
        "kgit.registry.seen -> dvc ",
        "kgit.keras.background -> keras",
        "kgit.keras.releaser -> kgit.cli.app",
        "kgit.store.git_ops -> kgit.registry.catalog",
        "kgit.cli.app -> kgit.store.git_ops",
        "No cycles are allowed in kgit.core",
    ):
        assert needle in out, needle


def test_every_layer_is_a_package_that_says_what_it_owns() -> None:
    for layer in LAYERS:
        doc = (PACKAGE / layer / "__init__.py").read_text()
        assert doc.startswith('"""') and len(doc) > 80, layer
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "api.py"]


def test_every_public_api_function_is_documented() -> None:
    missing = [name for name in api.__all__ if not (getattr(api, name).__doc__ or "").strip()]
    assert missing == []


def test_no_module_is_named_like_a_public_function() -> None:
    """`import kgit.validate` would replace the function `kgit.validate` with the module for everyone:
    modules take other names (releasing, validating, diffing...)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    }
    assert sorted(modules & set(kgit.__all__)) == []
