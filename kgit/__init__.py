"""kgit: immutable, validated, versioned Keras model releases in your git repository, stored with DVC.

    import kgit
    kgit.init(".")                   # once per repository: DVC, a default remote, git hooks
    record = kgit.release(model, "mnist", formats=["savedmodel", "keras"], dataset_id="mnist-2026-11")
    model = kgit.load("mnist@v2")    # or "mnist@latest", "mnist#prod", or "mnist", version="v2"

The public API, by task (``help(kgit.release)`` and so on for each):

    make releases     init, release
    read them         list_releases, show, history, diff, report   (git only: no TensorFlow, no download)
    use them          get (fetch one version's data), load (its Keras model), serve_layout (TF Serving)
    check them        validate (reload and compare), verify (signatures), check (what the server hook checks)
    storage           gc (drop the data of releases a policy does not keep), collected_releases
    stages            promote, rollback, demote, deprecate
    types             ReleaseRecord (what release returns), ReleaseView (what show returns), KgitError

Every expected failure raises KgitError, whose one-line message says what failed and what to do
next. The command line (``kgit --help``) calls these same functions. Importing kgit is cheap:
TensorFlow and DVC are imported only when a function needs them.
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
    "collected_releases",
    "demote",
    "deprecate",
    "diff",
    "gc",
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
        collected_releases,
        demote,
        deprecate,
        diff,
        gc,
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


def __dir__() -> list[str]:
    # The public API is resolved lazily (``__getattr__``): list it too, for dir(), completion and help().
    return sorted(set(__all__) | set(globals()))
