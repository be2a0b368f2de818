"""Tiny models for the tests: built in code, seeded, trained for a step so optimizer state exists.

This module is importable by the validation worker (tests put its folder on sys.path), like a
user's own model package would be.
"""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="Course")
class ScaledDense(keras.layers.Layer):
    """The seed guide's custom layer."""

    def __init__(self, units, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale
        self.dense = keras.layers.Dense(units)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.scale * self.dense(inputs)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "scale": self.scale})
        return config


@keras.saving.register_keras_serializable(package="Course")
class WeightedMSE(keras.losses.Loss):
    """The seed guide's custom loss."""

    def __init__(self, weight=1.0, name="weighted_mse", **kwargs):
        super().__init__(name=name)
        self.weight = weight

    def call(self, y_true, y_pred):
        return self.weight * keras.ops.mean(keras.ops.square(y_true - y_pred))

    def get_config(self):
        return {"weight": self.weight, "name": self.name}


class Unregistered(keras.layers.Layer):
    """A custom layer nobody registered."""

    def call(self, inputs):
        return inputs * 2.0


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype("float32"), rng.standard_normal((n, 2)).astype("float32")


def guide_model(seed: int = 0, units: int = 8):
    """The guide's model: custom layer and custom loss, compiled and trained one epoch."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,), name="features")
    h = ScaledDense(units, scale=2.0)(inp)
    out = keras.layers.Dense(2, name="scores")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=WeightedMSE(2.0), metrics=["mae"])
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model


def guide_model_untrained():
    """Builder for weights-only releases: same architecture, fresh weights."""
    keras.utils.set_random_seed(123)
    inp = keras.Input((4,), name="features")
    h = ScaledDense(8, scale=2.0)(inp)
    out = keras.layers.Dense(2, name="scores")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=WeightedMSE(2.0), metrics=["mae"])
    return model


def plain_model(seed: int = 0):
    """A compiled Sequential with built-in layers and string loss/metrics (the H5 pitfall)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0)
    return model


def multi_io_model():
    """Dict inputs (float and int) and dict outputs."""
    keras.utils.set_random_seed(1)
    x = keras.Input((4,), name="x")
    ids = keras.Input((3,), name="ids", dtype="int32")
    e = keras.layers.Flatten()(keras.layers.Embedding(5, 2)(ids))
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(x), e])
    model = keras.Model({"x": x, "ids": ids}, {"a": keras.layers.Dense(2)(h), "b": keras.layers.Dense(1)(h)})
    model.compile(optimizer="sgd", loss={"a": "mse", "b": "mse"})
    return model


def list_io_model():
    """Two positional inputs, two outputs."""
    keras.utils.set_random_seed(2)
    a, b = keras.Input((3,), name="left"), keras.Input((2,), name="right")
    h = keras.layers.Concatenate()([a, b])
    return keras.Model([a, b], [keras.layers.Dense(1)(h), keras.layers.Dense(2)(h)])


def string_model():
    """A string input (StringLookup), so reference inputs must be generated as strings."""
    inp = keras.Input((2,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["kgit", "reference", "0"])(inp)
    out = keras.layers.Dense(1)(keras.ops.cast(ids, "float32"))
    return keras.Model(inp, out)


def lambda_model():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Lambda(lambda t: t * 3.0)(inp))


def unregistered_model():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, Unregistered()(inp))


def nan_model():
    inp = keras.Input((4,), name="x")
    layer = keras.layers.Dense(2)
    model = keras.Model(inp, layer(inp))
    layer.kernel.assign(np.full((4, 2), np.nan, dtype="float32"))
    return model
