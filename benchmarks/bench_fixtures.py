"""Fixtures of the benchmarks, built in a temp folder: real git, real DVC, real Keras models.

Repositories with many released versions are built quickly: one real ``kgit.release``, then its
folder is copied under new version names and tracked, committed and tagged the way a release does.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from bench_util import DVC, git, log, run, tool_env

MODEL = "bench"
# A ~5 MB model: 1000 inputs -> 1250 outputs, 1,251,250 float32 parameters.
MEDIUM = (1000, 1250)
# A ~100 MB model: 5000 inputs -> 5000 outputs, 25,005,000 float32 parameters.
LARGE = (5000, 5000)


# -- models -----------------------------------------------------------------------------------
def dense_model(n_in: int, n_out: int, seed: int = 0) -> Any:
    """One wide Dense layer, seeded and compiled (Adam, MSE): its size is 4 * (n_in + 1) * n_out bytes."""
    from kgit.models import formats

    keras = formats.import_keras()  # keeps TensorFlow's start-up lines off the terminal
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((n_in,), name="x"), keras.layers.Dense(n_out, name="dense")])
    model.compile(optimizer="adam", loss="mse")
    # as after training: the optimizer's slots exist (a compiled model whose optimizer was never built
    # is refused by kgit release, its training state would not load back)
    model.optimizer.build(model.trainable_variables)
    return model


def tiny_model() -> Any:
    return dense_model(8, 4)


def large_model() -> Any:
    """The ~100 MB model, for ``kgit release NAME --from bench_fixtures:large_model``."""
    return dense_model(*LARGE)


def describe(shape: tuple[int, int]) -> str:
    return f"{4 * (shape[0] + 1) * shape[1] / 1e6:.0f} MB model"


# -- repositories -----------------------------------------------------------------------------
def new_repo(path: Path, remote: Path) -> Path:
    """A git repository set up with ``kgit.init`` (a local-folder DVC remote), no release yet."""
    import kgit

    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "commit", "-q", "--allow-empty", "-m", "start")
    kgit.init(path, remote=str(remote))
    return path


def add_origin(repo: Path, origin: Path) -> None:
    git(origin.parent, "init", "-q", "--bare", "-b", "main", str(origin))
    git(repo, "remote", "add", "origin", str(origin))


def push(repo: Path, verify: bool = True) -> None:
    """``git push`` (commits and, through push.followTags, release tags); with ``verify`` kgit's
    pre-push hook validates the new versions and uploads their data."""
    args = ["git", "push", "-q", "-u", "origin", "main"] + ([] if verify else ["--no-verify"])
    run(args, repo, env=tool_env())


def derive_versions(repo: Path, src: Path, first: int, last: int, model: Any = None) -> list[tuple[Path, Any]]:
    """Copies of the release folder ``src`` as versions ``v{first}..v{last}``, each with its own
    metadata.json. With ``model``, every copy gets its own random weights (saved, with its reference
    outputs and file hashes recomputed), so that no two versions share their bytes."""
    import numpy as np

    from kgit.core.layout import REFERENCE_INPUTS_FILE, REFERENCE_OUTPUTS_FILE
    from kgit.core.metadata import Metadata, hash_folder, sha256_file

    made = []
    for i in range(first, last + 1):
        dst = src.with_name(f"v{i}")
        shutil.copytree(src, dst)
        meta = Metadata.read(dst)
        meta.version = f"v{i}"
        if model is not None:
            from kgit.models import formats
            from kgit.models.reference import load_npz, save_npz

            rng = np.random.default_rng(i)
            model.set_weights([(rng.standard_normal(w.shape) * 0.01).astype(w.dtype) for w in model.get_weights()])
            (dst / "model.keras").unlink()
            formats.save(model, meta.format, dst)
            outputs = formats.run_model(model, load_npz(dst / REFERENCE_INPUTS_FILE), meta.signature)
            save_npz(dst / REFERENCE_OUTPUTS_FILE, outputs)
            meta.reference.outputs_sha256 = sha256_file(dst / REFERENCE_OUTPUTS_FILE)
            meta.files = hash_folder(dst)
        (dst / "metadata.json").write_text(meta.to_json())
        made.append((dst, meta))
    return made


def track_and_tag(repo: Path, name: str, fmt: str, made: list[tuple[Path, Any]]) -> None:
    """``dvc add`` the folders (one call), then per version: kgit's metadata into the ``.dvc`` file,
    a release commit and an annotated release tag carrying kgit's summary."""
    from kgit.registry import catalog
    from kgit.store import dvc_ops, txn

    if not made:
        return
    dvc_ops.add(repo, [d for d, _ in made])
    for dst, meta in made:
        label = meta.version
        dvc_file = dst.with_name(dst.name + ".dvc")
        dvc_ops.write_meta(dvc_file, meta.to_dict(), f"kgit release {name} {label} ({fmt})")
        h = dvc_ops.out_hash(dvc_ops.read_dvc_file(dvc_file.read_text(), str(dvc_file)))
        rel = dst.relative_to(repo).as_posix()
        tag = f"{name}@{label}.0.0"
        git(repo, "add", f"{rel}.dvc", f"{dst.parent.relative_to(repo).as_posix()}/.gitignore")
        git(repo, "commit", "-q", "--no-verify", "-m", f"Release {name} {label}\n\n{txn.TRAILER}: {tag}")
        message = catalog.tag_message(
            name,
            label,
            {
                "formats": {fmt: {"path": rel, **h}},
                "created_at": meta.created_at,
                "dataset_id": None,
                "source_commit": meta.git.commit,
                "dirty": False,
                "kgit": meta.libraries.get("kgit"),
            },
        )
        git(repo, "tag", "-a", tag, "-F", "-", stdin=message)


def released_repo(repo: Path, remote: Path, shape: tuple[int, int], versions: int, distinct: bool) -> Path:
    """``repo`` with ``versions`` released versions of MODEL (keras format): v1 is a real release,
    the others copies of it (with their own weights if ``distinct``)."""
    import kgit

    new_repo(repo, remote)
    model = dense_model(*shape)
    first = kgit.release(model, MODEL, formats="keras", repo=repo)
    src = repo / first.formats["keras"]["path"]
    made = derive_versions(repo, src, 2, versions, model if distinct else None)
    track_and_tag(repo, MODEL, "keras", made)
    return repo


def listing_repo(repo: Path, remote: Path, versions: int) -> Path:
    """``versions`` releases as git sees them, for the commands that read git alone (list, show):
    v1 is a real release; v2..vN are ``.dvc`` files (kgit's metadata, v1's DVC output under a DVC
    hash of their own: two releases never share data) added in one commit, and their annotated
    release tags (kgit's summary) all point at that commit. Only v1 has data: listing and showing
    never read it."""
    import kgit
    from kgit.registry import catalog
    from kgit.store import txn
    from kgit.store.git_ops import Repo

    new_repo(repo, remote)
    first = kgit.release(tiny_model(), MODEL, formats="keras", repo=repo)
    rel_path = first.formats["keras"]["path"]
    v1_file = repo / f"{rel_path}.dvc"
    v1 = yaml.safe_load(v1_file.read_text())
    trailers = []
    for i in range(2, versions + 1):
        label = f"v{i}"
        meta = dict(v1["meta"]["kgit"], version=label, metrics=_metrics(i, versions), measured=[])
        outs = [dict(v1["outs"][0], path=label, md5=_fake_md5(label))]
        data = {"desc": f"kgit release {MODEL} {label} (keras)", "outs": outs, "meta": {"kgit": meta}}
        v1_file.with_name(f"{label}.dvc").write_text(
            yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)
        )
        trailers.append(f"{txn.TRAILER}: {MODEL}@{label}.0.0")
    git(repo, "add", "--", str(v1_file.parent.relative_to(repo)))
    message = f"Release {MODEL} v2..v{versions}\n\n" + "\n".join(trailers) + "\n"
    git(repo, "commit", "-q", "--no-verify", "-F", "-", stdin=message)
    commit = git(repo, "rev-parse", "HEAD")
    v1_summary = catalog.releases(Repo(repo), MODEL)[0]
    ident = git(repo, "var", "GIT_COMMITTER_IDENT").rsplit(" ", 2)[0]
    stream = []
    for i in range(2, versions + 1):
        label = f"v{i}"
        summary = {
            "formats": {
                "keras": {
                    **v1_summary.formats["keras"],
                    "path": str(Path(rel_path).with_name(label)),
                    "md5": _fake_md5(label),
                }
            },
            "created_at": v1_summary.created_at,
            "dataset_id": None,
            "source_commit": v1_summary.source_commit,
            "dirty": False,
            "kgit": kgit.__version__,
            "metrics": _metrics(i, versions),
            "measured": [],
        }
        body = catalog.tag_message(MODEL, label, summary).encode()
        stream.append(
            f"tag {MODEL}@{label}.0.0\nfrom {commit}\ntagger {ident} {int(time.time())} +0000\n"
            f"data {len(body)}\n".encode()
            + body
            + b"\n"
        )
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(stream), check=True)
    return repo


def _fake_md5(label: str) -> str:
    import hashlib

    return hashlib.md5(f"{MODEL} {label}".encode()).hexdigest() + ".dir"


def _metrics(i: int, versions: int) -> dict[str, float]:
    """Two metrics that drift over the versions (the report draws them); the tag and the .dvc agree."""
    return {
        "val.accuracy": round(0.5 + 0.4 * i / versions, 4),
        "val.loss": round(1.0 - 0.6 * i / versions + 0.05 * (i % 7), 4),
    }


def dvc_push_all(repo: Path) -> None:
    run([DVC, "push", "-q"], repo)


class Fixtures:
    """Each fixture is built on first use, under ``base``, and shared by the groups that need it."""

    def __init__(
        self, base: Path, hook_versions: int, list_versions: int, get_versions: int, tag_versions: int = 15000
    ) -> None:
        self.base = base
        self.tag_versions = tag_versions
        self.hook_versions = hook_versions
        self.list_versions = list_versions
        self.get_versions = get_versions
        self._built: dict[str, Any] = {}

    def _once(self, key: str, what: str, build: Any) -> Any:
        if key not in self._built:
            log(f"building {what}")
            t0 = time.perf_counter()
            self._built[key] = build()
            log(f"built {what} in {time.perf_counter() - t0:.1f}s")
        return self._built[key]

    def empty(self) -> Path:
        """A repository set up by ``kgit init`` with no release; copied by the release benchmarks."""
        return self._once(
            "empty", "an empty kgit repository", lambda: new_repo(self.base / "empty", self.base / "empty.dvc-remote")
        )

    def copy_of_empty(self, name: str) -> Path:
        dst = self.base / name
        shutil.copytree(self.empty(), dst, symlinks=True)
        return dst

    def listing(self) -> Path:
        n = self.list_versions
        return self._once(
            "listing",
            f"a repository with {n:,} released versions (tags + .dvc files)",
            lambda: listing_repo(self.base / "listing", self.base / "listing.dvc-remote", n),
        )

    def many_tags(self) -> tuple[Path, Path]:
        """``tag_versions`` releases as git sees them (see listing_repo), pushed to a bare origin
        (without kgit's hook: only v1 has data), then one more plain commit not pushed yet."""

        def build() -> tuple[Path, Path]:
            repo, origin = self.base / "tags", self.base / "tags-origin.git"
            listing_repo(repo, self.base / "tags.dvc-remote", self.tag_versions)
            add_origin(repo, origin)
            push(repo, verify=False)
            run(["git", "push", "-q", "--no-verify", "origin", "--tags"], repo, env=tool_env())
            (repo / "notes.txt").write_text("work\n")
            git(repo, "add", "notes.txt")
            git(repo, "commit", "-q", "--no-verify", "-m", "notes")
            return repo, origin

        return self._once("tags", f"a repository with {self.tag_versions:,} release tags, pushed", build)

    def hooks(self) -> tuple[Path, Path]:
        """``hook_versions`` released versions of a small model, pushed (with their data) to a bare origin."""

        def build() -> tuple[Path, Path]:
            repo, origin = self.base / "hooks", self.base / "hooks-origin.git"
            released_repo(repo, self.base / "hooks.dvc-remote", (8, 4), self.hook_versions, distinct=False)
            add_origin(repo, origin)
            push(repo)  # the pre-push hook validates the versions and uploads their data
            return repo, origin

        return self._once("hooks", f"a repository with {self.hook_versions} released versions, pushed", build)

    def fetching(self) -> tuple[Path, Path]:
        """``get_versions`` versions of a ~5 MB model, each with its own weights, pushed to a bare
        origin with all their data in the DVC remote; returns (origin, the repository it came from)."""

        def build() -> tuple[Path, Path]:
            repo, origin = self.base / "fetch", self.base / "fetch-origin.git"
            released_repo(repo, self.base / "fetch.dvc-remote", MEDIUM, self.get_versions, distinct=True)
            add_origin(repo, origin)
            push(repo, verify=False)
            dvc_push_all(repo)
            return origin, repo

        return self._once(
            "fetching", f"a repository with {self.get_versions} versions of a {describe(MEDIUM)}, pushed", build
        )

    def large_model_file(self) -> Path:
        """The ~100 MB model saved as a .keras file (outside any repository)."""

        def build() -> Path:
            path = self.base / "large.keras"
            dense_model(*LARGE).save(path)
            return path

        return self._once("large", f"a {describe(LARGE)} (.keras)", build)
