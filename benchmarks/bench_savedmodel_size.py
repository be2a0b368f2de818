"""Where the bytes of a ``savedmodel`` release folder go, for a dense model of about N MB.

    .venv/bin/python benchmarks/bench_savedmodel_size.py            # ~32 MB of weights
    .venv/bin/python benchmarks/bench_savedmodel_size.py --mb 64 --keep

Builds a seeded Sequential of Dense layers (float32 weights of about --mb MB), compiles it with
Adam and trains one step (so the optimizer holds two slots per weight), writes it with kgit's own
``kgit.models.formats.save(model, "savedmodel", folder)`` and prints one table: each part of the folder
(``saved_model.pb``, ``variables/``, ``assets.extra/model.keras`` and, inside that zip, its weights
and its optimizer state), its size, and its size against the model's weights. For comparison, the
same model as a ``keras`` release (``model.keras``) is measured too. Then the time to write each
folder and to load the Keras model back from it as ``kgit.load`` does (checking that the weights and
optimizer variables come back equal).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MB = 1024 * 1024


def dense_model(mb: float):  # type: ignore[no-untyped-def]
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    width = int(((mb * MB / 4) / 3) ** 0.5)  # three width x width layers
    model = keras.Sequential(
        [keras.Input((width,), name="x")]
        + [keras.layers.Dense(width, activation="relu") for _ in range(3)]
        + [keras.layers.Dense(4)]
    )
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.train_on_batch(
        rng.standard_normal((8, width)).astype("float32"), rng.standard_normal((8, 4)).astype("float32")
    )
    return model


def check_same(model, loaded) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    for group in ("weights", "optimizer"):
        want = model.weights if group == "weights" else model.optimizer.variables
        got = loaded.weights if group == "weights" else loaded.optimizer.variables
        if len(want) != len(got) or not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(want, got)):
            raise SystemExit(f"the loaded model's {group} differ from the saved model's")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def h5_group_sizes(data: bytes) -> dict[str, int]:
    """Bytes of the datasets under each top-level group of an HDF5 file."""
    import h5py

    sizes: dict[str, int] = {}
    with h5py.File(io.BytesIO(data), "r") as fh:
        for key in fh:
            total = 0

            def add(_: str, obj: object) -> None:
                nonlocal total
                if isinstance(obj, h5py.Dataset):
                    total += obj.id.get_storage_size()

            fh[key].visititems(add)
            sizes[key] = total
    return sizes


def measure(folder: Path) -> list[tuple[str, int]]:
    rows = [("whole folder", folder_size(folder))]
    for child in sorted(folder.iterdir()):
        rows.append((child.name + ("/" if child.is_dir() else ""), folder_size(child)))
        if child.is_dir():
            for sub in sorted(child.rglob("*")):
                if sub.is_file():
                    rows.append(("  " + str(sub.relative_to(folder)), sub.stat().st_size))
    inner = folder / "assets.extra" / "model.keras"
    if inner.is_file():
        with zipfile.ZipFile(inner) as zf:
            for info in zf.infolist():
                rows.append((f"  model.keras: {info.filename}", info.file_size))
            for group, size in h5_group_sizes(zf.read("model.weights.h5")).items():
                rows.append((f"    model.weights.h5: {group}/", size))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=32.0, help="size of the model's weights, in MB (float32)")
    parser.add_argument("--keep", action="store_true", help="keep the written folders (their path is printed)")
    args = parser.parse_args()

    from kgit.models.formats import import_keras, load_keras_model, save

    import_keras()
    model = dense_model(args.mb)
    weights = sum(int(v.numpy().nbytes) for v in model.weights)
    optimizer = sum(int(v.numpy().nbytes) for v in model.optimizer.variables)
    scratch = Path(tempfile.mkdtemp(prefix="kgit-smsize-"))
    saved, keras_release = scratch / "savedmodel", scratch / "keras"
    timings: list[tuple[str, float]] = []
    for fmt, folder in (("savedmodel", saved), ("keras", keras_release)):
        folder.mkdir()
        start = time.perf_counter()
        save(model, fmt, folder)
        timings.append((f"{fmt}: write", time.perf_counter() - start))
        start = time.perf_counter()
        loaded = load_keras_model(folder, fmt, custom_objects={}, modules=[], builder=None, unsafe=False)
        timings.append((f"{fmt}: load back (as kgit.load)", time.perf_counter() - start))
        check_same(model, loaded)
    rows = [("model weights (in memory)", weights), ("optimizer state (in memory)", optimizer)]
    rows += [("savedmodel: " + name, size) for name, size in measure(saved)]
    rows.append(("keras release: model.keras", folder_size(keras_release / "model.keras")))
    width = max(len(name) for name, _ in rows)
    print(f"{'part':<{width}}  {'bytes':>12}  {'MB':>8}  {'x weights':>9}")
    for name, size in rows:
        print(f"{name:<{width}}  {size:>12,}  {size / MB:>8.1f}  {size / weights:>9.2f}")
    for name, seconds in timings:
        print(f"{name:<{width}}  {seconds:>10.2f} s")
    if args.keep:
        print(f"folders kept in {scratch}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
