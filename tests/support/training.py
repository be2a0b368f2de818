"""A small model, its data and test callbacks for releases from training (kgit.keras.ReleaseCallback)."""

from __future__ import annotations

import keras
import numpy as np


def data(n: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x[:, :4].sum(axis=1) > 0).astype("int32")


def model(seed: int = 0):  # type: ignore[no-untyped-def]
    """A compiled two-layer classifier (no dropout: training from a given state is deterministic)."""
    keras.utils.set_random_seed(seed)
    m = keras.Sequential(
        [
            keras.Input((8,), name="features"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


class Score(keras.callbacks.Callback):
    """Puts a chosen ``score`` into each epoch's logs: the test decides which epochs improve. Place it
    before the callbacks that read it."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = list(values)

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        if logs is not None:
            logs["score"] = float(self.values[epoch])


class Recorder(keras.callbacks.Callback):
    """Each epoch's weights and optimizer step as the model had them at the epoch's end (1-based)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[int, list[np.ndarray]] = {}
        self.steps: dict[int, int] = {}
        self.calls: dict[int, int] = {}

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self.weights[epoch + 1] = [np.array(w) for w in self.model.get_weights()]
        self.steps[epoch + 1] = int(np.asarray(self.model.optimizer.iterations))
        self.calls[epoch + 1] = self.calls.get(epoch + 1, 0) + 1


class Edit(keras.callbacks.Callback):
    """Changes a tracked file of the repository while training runs (at the end of epoch ``at``, or
    when training begins if ``at`` is None), as a user editing code would."""

    def __init__(self, path, at: int | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.path, self.at = path, at

    def _edit(self) -> None:
        self.path.write_text(self.path.read_text() + "edited while training\n")

    def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
        if self.at is None:
            self._edit()

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        if self.at == epoch + 1:
            self._edit()
