"""Models for kgit compat's tests: one that loads in every environment, one built with a layer only a
later Keras 3 has, one whose graph uses an op only a later TensorFlow has."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def dense_model(seed: int = 0) -> keras.Model:
    """A small trained dense model (released as savedmodel, it loads wherever TensorFlow 2.21 runs)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8,), name="x")
    out = keras.layers.Dense(2, name="out")(keras.layers.Dense(4, activation="relu", name="hidden")(inp))
    model = keras.Model(inp, out)
    model.compile("adam", "mse")
    rng = np.random.default_rng(seed)
    model.fit(rng.random((16, 8)), rng.random((16, 2)), epochs=1, verbose=0)
    return model


def adaptive_pooling_model() -> keras.Model:
    """AdaptiveAveragePooling2D came with Keras 3.13: Keras 3.12 cannot rebuild this model."""
    inp = keras.Input((8, 8, 3), name="image")
    pooled = keras.layers.AdaptiveAveragePooling2D((2, 2), name="pool")(inp)
    return keras.Model(inp, keras.layers.Flatten(name="flat")(pooled))


@keras.saving.register_keras_serializable(package="Compat")
class GenericConv(keras.layers.Layer):
    """A convolution through TensorFlow's generic ``Conv`` op, which TensorFlow 2.12 does not have."""

    def build(self, input_shape):  # type: ignore[no-untyped-def]
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 4), initializer="glorot_uniform", name="kernel")

    def call(self, x):  # type: ignore[no-untyped-def]
        return tf.raw_ops.Conv(input=x, filter=tf.convert_to_tensor(self.kernel), strides=[1, 1, 1, 1], padding="SAME")


def generic_conv_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3), name="image")
    return keras.Model(inp, GenericConv(name="conv")(inp))
