"""Importing the user's own code: model factories, builders, custom classes.

No TensorFlow here: these only import what the user named, from sys.path with the project's own
folders first (``use_project``).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from kgit.core.errors import CustomObjectError, ModelSourceError, describe


def project_paths(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Where the project's own modules are imported from: the current folder, then the repository's
    root (so ``layers.py`` at the root imports the same from any subfolder)."""
    return list(dict.fromkeys([os.getcwd(), *([os.path.abspath(root)] if root is not None else [])]))


def use_project(root: str | os.PathLike[str] | None = None) -> None:
    """Put ``project_paths(root)`` first on sys.path (those not on it yet): the one way kgit makes the
    project's modules importable, for ``--builder``/``--from``/``--evaluate`` MODULE:FUNCTION, the
    modules a model file's custom classes name, and ``--custom-object``."""
    here = os.getcwd()
    present = {here if p == "" else p for p in sys.path}
    sys.path[:0] = [p for p in project_paths(root) if p not in present]


def resolve_attr(spec: str, what: str) -> Any:
    """Import ``module:attr`` (``module.attr`` accepted for convenience) from the current sys.path."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ModelSourceError(f"{what} {spec!r} is not of the form MODULE:NAME")
    use_project()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSourceError(f"{what} {spec!r}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # user code failed while importing
        raise ModelSourceError(f"{what} {spec!r}: importing {module_name!r} raised {describe(exc)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSourceError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def qualified_name(obj: Any, what: str) -> str:
    """``module:qualname`` of a function or class that another process can import."""
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if not module or not qual or "<" in qual:
        raise ModelSourceError(f"{what} {obj!r} must be a module-level function or class")
    if module == "__main__":
        raise ModelSourceError(
            f"{what} {qual} is defined in the running script (__main__), which no other process can import: "
            "move it into an importable module"
        )
    return f"{module}:{qual}"


def load_custom_objects(specs: list[str]) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    for spec in specs:
        obj = resolve_attr(spec, "custom object")
        objects[spec.replace(":", ".").rsplit(".", 1)[-1]] = obj
        objects[getattr(obj, "__name__", spec)] = obj
    return objects


def import_modules(modules: list[str]) -> None:
    """Import the modules that define a model's custom classes (registering them with Keras)."""
    if modules:
        use_project()
    for module in modules:
        if module == "__main__":
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CustomObjectError(
                f"the model uses custom classes from module {module!r}, which cannot be imported here ({exc}): "
                "install it or add it to PYTHONPATH"
            ) from None
