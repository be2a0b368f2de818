"""The TensorFlow/Keras runtime: importing it quietly, tensors to numpy, and the library versions a
release records."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np

from kgit.core.version import VERSION


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """TensorFlow's C++ logging writes to fd 2 regardless of TF_CPP_MIN_LOG_LEVEL: park it."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras(quiet: bool = True) -> Any:
    """Import TensorFlow and Keras (once), keeping their start-up noise off the terminal."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced() if quiet else contextlib.nullcontext():
        import keras
        import tensorflow as tf

        tf.constant(0)  # device initialisation logs once; do it while stderr is parked
    return keras


def keras_module() -> Any:
    """Keras (and TensorFlow), imported quietly but without touching a device: a training script may
    still configure them (``tf.config.set_logical_device_configuration``) after importing kgit.keras."""
    if "keras" not in sys.modules or "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _stderr_silenced():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    return sys.modules["keras"]


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def library_versions() -> dict[str, str]:
    import keras
    import numpy
    import tensorflow as tf

    libs = {
        "kgit": VERSION,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }
    for dist in ("dvc", "h5py"):
        try:
            libs[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return libs


# -- 3. the version -----------------------------------------------------------------------------
