"""Hashing each release file once: kgit's sha256 and DVC's md5 in one read, the md5 handed to DVC
through its state database, and what happens when a file changes after it was hashed."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import git, snapshot

from kgit.core.errors import KgitError
from kgit.core.fsutil import BLOCK, FileDigest, FolderDigests, digest_file
from kgit.store import dvc_ops


def _folder(base: Path, big: bytes) -> Path:
    """A folder like a release: one file of several blocks, one small file, one in a subfolder."""
    folder = base / "v1"
    (folder / "variables").mkdir(parents=True)
    (folder / "model.bin").write_bytes(big)
    (folder / "small.txt").write_text("reference\n")
    (folder / "variables" / "data").write_bytes(big[: BLOCK // 3])
    return folder


def _big(seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, size=3 * BLOCK + 12345, dtype=np.uint8).tobytes()


def _dvc_repo(base: Path) -> Path:
    import kgit

    repo = base / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    kgit.init(repo, remote=str(base / "remote"))
    return repo


def _dvc_md5(repo: Path, rel: str) -> tuple[str, int, int]:
    out = dvc_ops.out_hash(dvc_ops.read_dvc_file((repo / f"{rel}.dvc").read_text(), rel))
    return out["md5"], out["size"], out["nfiles"]


def _add(repo: Path, folder: Path, known: dict[Path, FileDigest] | None = None) -> tuple[str, int, int]:
    dvc_ops.add(repo, [folder], known=known)
    return _dvc_md5(repo, str(folder.relative_to(repo)))


def test_one_read_gives_sha256_md5_and_the_file_identity(tmp_path: Path) -> None:
    data = _big()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    d = digest_file(path)
    st = os.stat(path)
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.md5 == hashlib.md5(data).hexdigest()
    assert (d.size, d.ino, d.mtime_ns, d.ctime_ns) == (len(data), st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    assert d.describes(st)


def test_a_rewrite_is_seen_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 1000)
    d = digest_file(path)
    before = os.stat(path)
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime: only ctime tells
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert not d.describes(after)


def test_folder_digests_match_every_file_and_skip_the_excluded(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _big())
    (folder / "metadata.json").write_text("{}")
    found = FolderDigests(folder, exclude=("metadata.json",)).result()
    assert sorted(found) == ["model.bin", "small.txt", "variables/data"]
    for rel, d in found.items():
        data = (folder / rel).read_bytes()
        assert (d.sha256, d.md5) == (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())


def test_folder_digests_refuse_a_symlink(tmp_path: Path) -> None:
    folder = _folder(tmp_path, b"x" * 10)
    (folder / "link").symlink_to(folder / "small.txt")
    with pytest.raises(KgitError, match="symlink"):
        FolderDigests(folder)


@pytest.mark.slow  # real DVC repositories
def test_seeded_md5s_give_the_same_dvc_file_as_dvc_hashing_itself(tmp_path: Path) -> None:
    data = _big()
    plain = _dvc_repo(tmp_path / "plain")
    seeded = _dvc_repo(tmp_path / "seeded")
    want = _add(plain, _folder(plain / "artifacts", data))
    folder = _folder(seeded / "artifacts", data)
    known = {folder / rel: digest_file(folder / rel) for rel in ("model.bin", "small.txt", "variables/data")}
    with dvc_ops.open_repo(seeded) as repo:
        assert dvc_ops.seed_hashes(repo, seeded, known) == 3
    assert _add(seeded, folder, known) == want
    assert want[1:] == (len(data) + len("reference\n") + BLOCK // 3, 3)


@pytest.mark.slow  # real DVC repositories
def test_dvc_takes_the_seeded_md5_without_reading_the_file(tmp_path: Path) -> None:
    """The seed is used, not recomputed: an md5 that does not match the bytes (which digest_file
    can never produce) ends up in the .dvc file. This is why only digest_file's md5s are seeded."""
    data = _big()
    plain = _dvc_repo(tmp_path / "plain")
    seeded = _dvc_repo(tmp_path / "seeded")
    want = _add(plain, _folder(plain / "artifacts", data))
    folder = _folder(seeded / "artifacts", data)
    real = digest_file(folder / "model.bin")
    forged = FileDigest(
        real.sha256, hashlib.md5(b"other bytes").hexdigest(), real.size, real.ino, real.mtime_ns, real.ctime_ns
    )
    got = _add(seeded, folder, {folder / "model.bin": forged})
    assert got[0] != want[0] and got[1:] == want[1:]


@pytest.mark.slow  # real DVC repositories
def test_a_file_changed_after_hashing_is_not_seeded(tmp_path: Path) -> None:
    """Rewritten after hashing (same size, mtime put back): DVC hashes it itself, so the .dvc file
    describes the bytes on disk, not the ones kgit hashed."""
    before, after = _big(0), _big(1)
    plain = _dvc_repo(tmp_path / "plain")
    seeded = _dvc_repo(tmp_path / "seeded")
    want = _add(plain, _folder(plain / "artifacts", after))
    folder = _folder(seeded / "artifacts", before)
    model = folder / "model.bin"
    stale = digest_file(model)
    st = os.stat(model)
    model.write_bytes(after)
    (folder / "variables" / "data").write_bytes(after[: BLOCK // 3])
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    known = {model: stale, folder / "small.txt": digest_file(folder / "small.txt")}
    with dvc_ops.open_repo(seeded) as repo:
        assert dvc_ops.seed_hashes(repo, seeded, known) == 1  # small.txt only
    assert _add(seeded, folder, known) == want


@pytest.mark.slow
def test_release_records_sha256s_and_dvc_md5s_of_the_bytes_on_disk(
    kgit_repo: Path, plain_model: Any, tmp_path: Path
) -> None:
    import kgit
    from kgit.core.metadata import Metadata, hash_folder

    record = kgit.release(plain_model, "plain", formats=["keras", "savedmodel"], repo=kgit_repo)
    for fmt, info in record.formats.items():
        folder = kgit_repo / info["path"]
        meta = Metadata.read(folder)
        assert meta.files == hash_folder(folder) and len(meta.files) >= 3
        # DVC, hashing a copy itself in a repository with no seeds, gets the same tree hash
        fresh = _dvc_repo(tmp_path / f"fresh-{fmt}")
        copy = fresh / "artifacts" / "v1"
        shutil.copytree(folder, copy)
        assert _add(fresh, copy)[0] == info["md5"]
    results = kgit.validate([f"plain@{record.version}"], repo=kgit_repo, recheck=True)
    assert len(results) == 2 and all(r.ok for r in results), [r.reason() for r in results]


@pytest.mark.slow
def test_a_file_rewritten_during_validation_stops_the_release(kgit_repo: Path, plain_model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Hashing overlaps validation; a file that changes after it was written is refused, and the
    failed release leaves nothing behind."""
    import kgit
    from kgit.workflow import releasing

    validate = releasing._validate

    def validate_then_rewrite(staging: Path, req):  # type: ignore[no-untyped-def]
        results = validate(staging, req)
        with open(staging / "keras" / "model.keras", "ab") as fh:
            fh.write(b"\0")
        return results

    monkeypatch.setattr(releasing, "_validate", validate_then_rewrite)
    before = snapshot(kgit_repo)
    with pytest.raises(KgitError, match="changed"):
        kgit.release(plain_model, "plain", formats="keras", repo=kgit_repo)
    assert snapshot(kgit_repo) == before


@pytest.mark.slow
def test_optimizer_digest_reads_in_place_and_keeps_its_definition() -> None:
    """Releases made before record the digest of ``np.asarray`` copies: reading in place must give
    the same bytes, for plain and mixed-precision (LossScaleOptimizer) state."""
    import numpy as np
    from support import zoo

    from kgit.models import training_state

    def by_copies(model) -> str:  # type: ignore[no-untyped-def]
        digest = hashlib.sha256()
        for var in training_state.optimizer_variables(model.optimizer):
            arr = np.ascontiguousarray(np.asarray(var))
            digest.update(f"{arr.dtype.str}{arr.shape};".encode())
            digest.update(arr.tobytes())
        return digest.hexdigest()

    for model in (zoo.plain_model(), zoo.mixed_precision_model()):
        state = training_state.optimizer_state(model)
        assert state is not None and state["iterations"] > 0
        assert state["variables_sha256"] == by_copies(model)
        slot = next(v for v in training_state.optimizer_variables(model.optimizer) if len(v.shape) == 2)
        assert not training_state._host_values(slot).flags["OWNDATA"]  # a view, not a copy
