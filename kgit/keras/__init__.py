"""Releasing from a Keras training run: ``kgit.keras.ReleaseCallback``.

    from kgit.keras import ReleaseCallback
    model.fit(x, y, validation_data=(xv, yv), epochs=20,
              callbacks=[ReleaseCallback("mnist", monitor="val_accuracy", promote_to="staging")])

The training loop only copies the model's variables when it has something to release; a background
process makes each release through kgit's normal release path (kgit.workflow.training). Importing
this package is cheap; ``ReleaseCallback`` imports Keras (through kgit.models) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ReleaseCallback", "TrainingReleaseError"]

if TYPE_CHECKING:
    from kgit.keras.callback import ReleaseCallback, TrainingReleaseError


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kgit.keras import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'kgit.keras' has no attribute {name!r}")
