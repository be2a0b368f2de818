"""Tiny models for the tests: built in code, seeded, trained for a step so optimizer state exists.

This module is importable by the validation worker (tests put its folder on sys.path), like a
user's own model package would be.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="Course")
class ScaledDense(keras.layers.Layer):
    """The seed guide's custom layer."""

    def __init__(self, units: int, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale
        self.dense = keras.layers.Dense(units)

    def build(self, input_shape: Any) -> None:
        self.dense.build(input_shape)

    def call(self, inputs: Any) -> Any:
        return self.scale * self.dense(inputs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"units": self.units, "scale": self.scale})
        return config


@keras.saving.register_keras_serializable(package="Course")
class WeightedMSE(keras.losses.Loss):
    """The seed guide's custom loss."""

    def __init__(self, weight: float = 1.0, name: str = "weighted_mse", **kwargs: Any) -> None:
        super().__init__(name=name)
        self.weight = weight

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.weight * keras.ops.mean(keras.ops.square(y_true - y_pred))

    def get_config(self) -> dict[str, Any]:
        return {"weight": self.weight, "name": self.name}


class Unregistered(keras.layers.Layer):
    """A custom layer nobody registered."""

    def call(self, inputs: Any) -> Any:
        return inputs * 2.0


def data(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype("float32"), rng.standard_normal((n, 2)).astype("float32")


def guide_model(seed: int = 0, units: int = 8) -> keras.Model:
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


def guide_model_untrained() -> keras.Model:
    """Builder for weights-only releases: same architecture, fresh weights."""
    keras.utils.set_random_seed(123)
    inp = keras.Input((4,), name="features")
    h = ScaledDense(8, scale=2.0)(inp)
    out = keras.layers.Dense(2, name="scores")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=WeightedMSE(2.0), metrics=["mae"])
    return model


def plain_model(seed: int = 0) -> keras.Model:
    """A compiled Sequential with built-in layers and string loss/metrics (the H5 pitfall)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,), name="x"), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0)
    return model


def multi_io_model() -> keras.Model:
    """Dict inputs (float and int) and dict outputs."""
    keras.utils.set_random_seed(1)
    x = keras.Input((4,), name="x")
    ids = keras.Input((3,), name="ids", dtype="int32")
    e = keras.layers.Flatten()(keras.layers.Embedding(5, 2)(ids))
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(x), e])
    model = keras.Model({"x": x, "ids": ids}, {"a": keras.layers.Dense(2)(h), "b": keras.layers.Dense(1)(h)})
    model.compile(optimizer="sgd", loss={"a": "mse", "b": "mse"})
    return model


def list_io_model() -> keras.Model:
    """Two positional inputs, two outputs."""
    keras.utils.set_random_seed(2)
    a, b = keras.Input((3,), name="left"), keras.Input((2,), name="right")
    h = keras.layers.Concatenate()([a, b])
    return keras.Model([a, b], [keras.layers.Dense(1)(h), keras.layers.Dense(2)(h)])


def string_model() -> keras.Model:
    """A string input (StringLookup), so reference inputs must be generated as strings."""
    inp = keras.Input((2,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["kgit", "reference", "0"])(inp)
    out = keras.layers.Dense(1)(keras.ops.cast(ids, "float32"))
    return keras.Model(inp, out)


def lambda_model() -> keras.Model:
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Lambda(lambda t: t * 3.0)(inp))


def marker_lambda_model() -> keras.Model:
    """A Lambda whose code leaves a file ``lambda-ran`` in $HOME each time it runs (Keras runs it when it
    rebuilds the model): shows on whose machine a release's code ran."""
    inp = keras.Input((4,), name="x")
    mark = lambda t: (__import__("pathlib").Path(__import__("os").environ["HOME"], "lambda-ran").touch(), t * 3.0)[1]  # noqa: E731
    return keras.Model(inp, keras.layers.Lambda(mark, name="triple")(inp))


def unregistered_model() -> keras.Model:
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, Unregistered()(inp))


def nan_model() -> keras.Model:
    inp = keras.Input((4,), name="x")
    layer = keras.layers.Dense(2)
    model = keras.Model(inp, layer(inp))
    layer.kernel.assign(np.full((4, 2), np.nan, dtype="float32"))
    return model


# -- models whose training state Keras does not bring back by itself, and models without inputs ----
@contextlib.contextmanager
def global_policy(name: str) -> Iterator[None]:
    """The dtype policy is process-global: set it for building one model, then put it back."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def mixed_precision_model() -> keras.Model:
    """mixed_float16: compile() wraps the optimizer in a LossScaleOptimizer (4 more variables)."""
    keras.utils.set_random_seed(3)
    with global_policy("mixed_float16"):
        inp = keras.Input((4,), name="features")
        h = keras.layers.Dense(8, activation="relu")(inp)
        out = keras.layers.Dense(2, dtype="float32", name="scores")(h)
        model = keras.Model(inp, out)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model


HUB_VOCAB = 24


def hub_inputs(n: int = 4, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(0, HUB_VOCAB, (n, 6)).astype("int32"),
        "segment_ids": np.zeros((n, 6), "int32"),
        "padding_mask": np.ones((n, 6), "int32"),
    }
    return x, rng.integers(0, 2, (n,))


def hub_classifier() -> keras.Model:
    """A tiny KerasHub task (BertTextClassifier, built from a config): it overrides compile()."""
    import keras_hub

    keras.utils.set_random_seed(4)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=HUB_VOCAB,
        num_layers=1,
        num_heads=1,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=6,
        dropout=0.0,
    )
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None, dropout=0.0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = hub_inputs()
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    return model


def hub_backbone_data(n: int = 4, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    x, _ = hub_inputs(n, seed)
    rng = np.random.default_rng(seed + 1)
    return x, {
        "sequence_output": rng.standard_normal((n, 6, 8)).astype("float32"),
        "pooled_output": rng.standard_normal((n, 8)).astype("float32"),
    }


def hub_backbone() -> keras.Model:
    """A tiny KerasHub backbone (BertBackbone from a config, dict outputs), compiled with a loss on
    each output and trained one step, as pre-training would."""
    import keras_hub

    keras.utils.set_random_seed(12)
    model = keras_hub.models.BertBackbone(
        vocabulary_size=HUB_VOCAB,
        num_layers=1,
        num_heads=1,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=6,
        dropout=0.0,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={"sequence_output": "mse", "pooled_output": "mse"})
    model.train_on_batch(*hub_backbone_data())
    return model


@keras.saving.register_keras_serializable(package="Zoo")
class TinySubclassed(keras.Model):
    """A registered subclassed model: no keras.Input, built by training."""

    def __init__(self, units: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.head = keras.layers.Dense(units)

    def call(self, inputs: Any) -> Any:
        return self.head(self.hidden(inputs))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


def subclassed_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    model = TinySubclassed()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model


WORDS = ["red", "green", "blue", "cyan"]


def lookup_data(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.choice(WORDS, (n, 2)), rng.standard_normal((n, 1)).astype("float32")


def strings(x: np.ndarray) -> Any:
    """Keras' fit/train_on_batch take string batches as tensors, not NumPy unicode arrays."""
    import tensorflow as tf

    return tf.constant(x)


def string_lookup_model() -> keras.Model:
    """Strings -> StringLookup -> Embedding: outputs differ only for words in the vocabulary."""
    keras.utils.set_random_seed(6)
    inp = keras.Input((2,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=WORDS)(inp)
    h = keras.layers.Flatten()(keras.layers.Embedding(len(WORDS) + 1, 3)(ids))
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = lookup_data()
    model.fit(strings(x), y, epochs=1, batch_size=4, verbose=0)
    return model


def text_vectorization_model() -> keras.Model:
    """Sentences -> TextVectorization -> Embedding -> pooling."""
    keras.utils.set_random_seed(7)
    inp = keras.Input((1,), dtype="string", name="text")
    vec = keras.layers.TextVectorization(output_sequence_length=4, vocabulary=WORDS)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(len(WORDS) + 2, 3)(vec(inp)))
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = lookup_data()
    model.fit(strings(sentences(x)), y, epochs=1, batch_size=4, verbose=0)
    return model


def sentences(words: np.ndarray) -> np.ndarray:
    return np.array([[" ".join(row)] for row in words])


@keras.saving.register_keras_serializable(package="Zoo")
class OwnCompile(keras.Model):
    """A model class whose compile() takes its own arguments, so it cannot be recompiled from the
    compile config Keras saved: its optimizer state cannot be restored."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)

    def call(self, inputs: Any) -> Any:
        return self.dense(inputs)

    def compile(self, learning_rate: float = 0.01) -> None:
        super().compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss="mse")


def own_compile_model() -> keras.Model:
    keras.utils.set_random_seed(8)
    model = OwnCompile()
    model.compile(0.01)
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model


def tf_keras_model() -> Any:
    """A Keras 2 (tf_keras) model, compiled and trained one epoch."""
    import tf_keras

    tf_keras.utils.set_random_seed(9)
    inp = tf_keras.Input((4,), name="features")
    h = tf_keras.layers.Dense(8, activation="relu")(inp)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(2, name="scores")(h))
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse")
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model


def tf_keras_model_untrained() -> Any:
    """Builder for weights-only releases of tf_keras_model."""
    import tf_keras

    inp = tf_keras.Input((4,), name="features")
    h = tf_keras.layers.Dense(8, activation="relu")(inp)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(2, name="scores")(h))
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse")
    return model


def application_data(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32"), np.eye(10, dtype="float32")[rng.integers(0, 10, n)]


def application_model() -> keras.Model:
    """Third-party model code: keras.applications' MobileNetV3Small (random weights, 32x32 images,
    no dropout so a training step is deterministic), compiled and trained one step. Eager steps:
    tracing its train function costs more than the step itself (about 5 s per model)."""
    keras.utils.set_random_seed(11)
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, minimalistic=True, weights=None, classes=10, dropout_rate=0.0
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(*application_data())
    return model
