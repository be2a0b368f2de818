"""kgit: immutable, validated, versioned Keras model releases in your git repository, stored with DVC.

    import kgit
    record = kgit.release(model, "mnist", formats=["savedmodel", "keras"], dataset_id="mnist-2026-11")
    model = kgit.load("mnist", "v2")

Importing kgit is cheap: TensorFlow and DVC are imported only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgit.core.version import VERSION as __version__

__all__ = [
    "KgitError",
    "ReleaseRecord",
    "ReleaseView",
    "__version__",
    "check",
    "demote",
    "deprecate",
    "diff",
    "get",
    "history",
    "holders_at",
    "init",
    "list_releases",
    "load",
    "promote",
    "release",
    "report",
    "rollback",
    "serve_layout",
    "show",
    "validate",
    "verify",
]

if TYPE_CHECKING:
    from kgit.api import (
        ReleaseView,
        check,
        demote,
        deprecate,
        diff,
        get,
        history,
        holders_at,
        init,
        list_releases,
        load,
        promote,
        release,
        report,
        rollback,
        serve_layout,
        show,
        validate,
    )
    from kgit.core.errors import KgitError
    from kgit.workflow.releasing import ReleaseRecord


def __getattr__(name: str) -> Any:
    # Resolve the public API on first use, so `import kgit` stays fast for git-only commands.
    if name == "KgitError":
        from kgit.core.errors import KgitError

        return KgitError
    if name == "ReleaseRecord":
        from kgit.workflow.releasing import ReleaseRecord

        return ReleaseRecord
    if name in __all__:
        from kgit import api

        return getattr(api, name)
    raise AttributeError(f"module 'kgit' has no attribute {name!r}")
