"""Does a release load elsewhere: other Keras and TensorFlow versions, tf_keras, TensorFlow Serving.

- kgit.compat.envs: isolated environments made with uv from the package index, cached by the
  versions they resolve to (``$XDG_CACHE_HOME/kgit/envs/KEY``), built under a temporary name and
  renamed into place;
- kgit.compat.env_loader: the script an environment's own Python runs by path (no kgit import, so it
  works with any Keras): loads the artifacts, reruns the reference inputs, compares;
- kgit.compat.checking: ``kgit compat``: one result per environment, recorded as compat tags
  (kgit.registry.compat_records);
- kgit.compat.quick: ``kgit compat --quick``: the model's configuration against a Keras version's own
  source, read from its wheel without importing it;
- kgit.compat.graph_ops: the ops a SavedModel's graph uses against the ops a TensorFlow version has.

Never imports TensorFlow or Keras itself: they run only inside the environments.
"""
