"""Everything that touches TensorFlow or Keras: saving and loading each format, SavedModel
specifics, training state, the tf_keras flavour, reference inputs, the static config scan, user code,
and the worker that reloads a release in a fresh process. The only package allowed to import them."""
