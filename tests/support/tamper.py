"""Ways to damage a released folder in the work tree, each one a different check must catch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def tamper_byte(folder: Path) -> None:
    target = folder / "model.keras"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def edit_metadata(folder: Path) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    meta["hyperparameters"] = {"lr": 123}
    (folder / "metadata.json").write_text(json.dumps(meta))


def change_reference_outputs(folder: Path) -> None:
    ref = dict(np.load(folder / "reference_outputs.npz"))
    ref = {k: v + 1.0 for k, v in ref.items()}
    with open(folder / "reference_outputs.npz", "wb") as fh:
        np.savez(fh, **ref)


def delete_file(folder: Path) -> None:
    (folder / "reference_inputs.npz").unlink()
