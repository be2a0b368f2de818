"""What a model source names, told from its text alone: no TensorFlow, no import, so a release
whose source does not exist is refused before anything heavy is loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kgit.core.errors import ModelSourceError

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


def source_kind(source: Any) -> str:
    """``"model"`` (an object: kgit.models.model_source checks it is a Keras model), ``"path"`` (an
    existing model file or folder) or ``"callable"`` (``MODULE:FUNCTION``); ModelSourceError for a
    path that does not exist or a file that is no model file."""
    if not isinstance(source, (str, os.PathLike)):
        return "model"
    text = os.fspath(source)
    path = Path(text)
    if path.exists():
        if not path.is_dir() and path.suffix not in MODEL_FILE_SUFFIXES:
            raise ModelSourceError(f"{path}: unsupported model file (expected .keras, .h5 or a SavedModel folder)")
        return "path"
    if ":" in text and not text.endswith((".keras", ".h5")):
        return "callable"
    raise ModelSourceError(
        f"model source {text!r} does not exist (expected a .keras/.h5 file, a SavedModel folder or MODULE:FUNCTION)"
    )
