"""Packed releases: each large tensor its own DVC object, so versions share what did not change.

Every format kgit writes is cut into its skeleton and tensor objects and assembles back byte for
byte; a missing or altered piece is refused, never half-written. Then real releases: a model whose
backbone is frozen adds only its head to storage, the remote holds the backbone once, and on a fresh
clone the release folder loads with plain Keras after `kgit get`, and after a plain `dvc pull` once
`kgit validate` (or `kgit get`) has assembled it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _backbone_model(seed: int = 0) -> Any:
    """A frozen 256x256 backbone (256 KiB of weights) under a small trainable head, trained a step."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    inp = keras.Input((256,), name="x")
    hidden = keras.layers.Dense(256, name="backbone", trainable=False)(inp)
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(hidden))
    model.compile("adam", "mse")
    model.fit(np.random.rand(16, 256), np.random.rand(16, 4), verbose=0)
    return model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["keras", "h5", "weights", "savedmodel"])
def test_every_format_packs_and_assembles_byte_for_byte(fmt: str, tmp_path: Path) -> None:
    from kgit.core import packing
    from kgit.core.errors import KgitError
    from kgit.models import formats
    from kgit.models import packing as model_packing

    folder = tmp_path / fmt
    folder.mkdir()
    formats.save(_backbone_model(), fmt, folder)
    saved = {p.relative_to(folder).as_posix(): _sha256(p) for p in folder.rglob("*") if p.is_file()}
    known: dict[str, Any] = {}
    files = model_packing.pack(folder, known)
    assert files, "nothing was packed"
    for rel, entry in files.items():
        assert entry["sha256"] == saved[rel]
        tensors = [p for p in entry["pieces"] if p[0] is not None]
        assert any(n == 256 * 256 * 4 for _ref, n in tensors), (rel, [n for _r, n in tensors])  # the backbone kernel
    _check_known_sha256s(folder, files, known)
    manifest = packing.read_manifest(folder)
    assert manifest == files
    # gone, then made again from the pieces: the same bytes
    for rel in files:
        (folder / rel).unlink()
    checked: dict[str, Any] = {}
    assert sorted(packing.assemble(folder, checked)) == sorted(files)
    assert {rel: _sha256(folder / rel) for rel in files} == {rel: saved[rel] for rel in files}
    # what assembling read and checked is what checking the folder would compute: it is not read again
    assert set(checked) == set(known) | {packing.skeleton_path(rel) for rel in files}
    assert all(k.sha256 == _sha256(folder / rel) for rel, k in checked.items())
    assert packing.assemble(folder) == []  # there and right: nothing to make
    # what an assembly killed midway left (its process gone; an earlier kgit's name) is removed;
    # that of an assembly still running is not
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    rel = next(iter(files))
    left = {
        pid: (folder / rel).with_name(f".{Path(rel).name}{pid}.kgit-assembling")
        for pid in (f".{gone.pid}", "", f".{os.getpid()}")
    }
    for tmp in left.values():
        tmp.write_bytes(b"half a file")
    assert packing.assemble(folder) == []
    assert [pid for pid, tmp in left.items() if tmp.exists()] == [f".{os.getpid()}"]
    left[f".{os.getpid()}"].unlink()
    # an altered tensor object: refused, and nothing half-written is left
    rel = next(iter(files))
    ref = next(p[0] for p in files[rel]["pieces"] if p[0] is not None)
    piece = folder / packing.TENSORS_DIR / ref
    piece.write_bytes(b"\0" * piece.stat().st_size)
    (folder / rel).unlink()
    with pytest.raises(KgitError, match="not the file released"):
        packing.assemble(folder)
    assert not (folder / rel).exists() and not list(folder.rglob("*.kgit-assembling"))
    piece.unlink()
    with pytest.raises(KgitError, match="a piece is missing"):
        packing.assemble(folder)


def _check_known_sha256s(folder: Path, files: dict[str, Any], known: dict[str, Any]) -> None:
    """What packing's one read computed is right, and the release's hashing takes it instead of
    reading those files again for it, unless a file changed since."""

    from kgit.core import packing
    from kgit.core.fsutil import FolderDigests, identity_of

    refs = {p[0] for entry in files.values() for p in entry["pieces"] if p[0] is not None}
    assert set(known) == set(files) | {f"{packing.TENSORS_DIR}/{ref}" for ref in refs}
    for rel, k in known.items():
        assert k.sha256 == _sha256(folder / rel) and k.identity == identity_of(os.stat(folder / rel))
        assert k.md5_needed == (rel not in files)  # the assembled file is never read by DVC
    plain = FolderDigests(folder).result()
    taken = FolderDigests(folder, known=known).result()
    assert {r: d.sha256 for r, d in taken.items()} == {r: d.sha256 for r, d in plain.items()}
    assert {r: d.md5 for r, d in taken.items()} == {r: "" if r in files else d.md5 for r, d in plain.items()}
    # a file rewritten since (same size): hashed again, the stale sha256 is not used
    rel = f"{packing.TENSORS_DIR}/{sorted(refs)[0]}"
    data = (folder / rel).read_bytes()
    (folder / rel).write_bytes(b"\1" * len(data))
    again = FolderDigests(folder, known=known).result()[rel]
    assert again.sha256 == _sha256(folder / rel) != known[rel].sha256 and again.md5
    (folder / rel).write_bytes(data)


def test_a_malformed_manifest_is_refused(tmp_path: Path) -> None:
    from kgit.core import packing
    from kgit.core.errors import KgitError

    for bad in (
        {"kgit_pack": 1, "files": {"../escape": {"size": 1, "sha256": "0" * 64, "pieces": [[None, 1]]}}},
        {"kgit_pack": 1, "files": {"m.keras": {"size": 2, "sha256": "0" * 64, "pieces": [[None, 1]]}}},
        {"kgit_pack": 1, "files": {"m.keras": {"size": 1, "sha256": "0" * 64, "pieces": [["../../x", 1]]}}},
        {"kgit_pack": 2, "files": {}},
    ):
        (tmp_path / packing.MANIFEST).write_text(json.dumps(bad))
        with pytest.raises(KgitError):
            packing.assemble(tmp_path)
    (tmp_path / packing.MANIFEST).unlink()
    assert packing.assemble(tmp_path) == []  # an unpacked release: nothing to do


def _objects(store: Path) -> dict[str, int]:
    base = store / "files" / "md5"
    return {p.parent.name + p.name: p.stat().st_size for p in base.glob("*/*")} if base.exists() else {}


def test_a_frozen_backbone_is_stored_once_and_every_clone_loads_the_release(tmp_path: Path) -> None:
    import keras
    import numpy as np
    from conftest import kgit
    from support.world import World, git

    import kgit as api

    (tmp_path / "w").mkdir()
    w = World.create(tmp_path / "w")
    model = _backbone_model()
    first = api.release(model, "m", formats=["keras", "savedmodel"], repo=w.repo)
    assert w.push("main", "--tags").returncode == 0
    one_version = sum(_objects(w.store).values())
    records = [first]
    for _ in range(3):  # three more versions: only the head trains
        model.fit(np.random.rand(16, 256), np.random.rand(16, 4), verbose=0)
        records.append(api.release(model, "m", formats=["keras", "savedmodel"], repo=w.repo))
    proc = w.push("main", "--tags")
    assert proc.returncode == 0, proc.stderr
    for record in records[1:]:
        for fmt, info in record.formats.items():
            assert info["new_bytes"] < 0.2 * info["size"], (fmt, info)  # the backbone was stored before
    objects = _objects(w.store)
    # the backbone's kernel (and its copy in the SavedModel's variables) is one object in the remote
    assert list(objects.values()).count(256 * 256 * 4) == 1, sorted(objects.values())[-5:]
    # the remote grew by what the three versions said they added (and a DVC listing per format each)
    added = sum(info["new_bytes"] for record in records[1:] for info in record.formats.values())
    assert sum(objects.values()) - one_version <= added + 6 * 4096, (one_version, sum(objects.values()), added)
    # the assembled files are in the folders, but neither DVC nor git stores them
    folder = w.repo / records[-1].formats["keras"]["path"]
    assert (folder / "model.keras").is_file()
    ignored = (folder.parent / ".dvcignore").read_text().splitlines()
    assert f"/{folder.name}/model.keras" in ignored
    assert git(w.repo, "status", "--porcelain") == ""
    dvc_files = [r.formats[f]["path"] + ".dvc" for r in records for f in r.formats]
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *dvc_files], cwd=w.repo, capture_output=True, text=True
    )
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr

    fresh = w.clone("fresh")
    got = kgit(fresh, "get", "m@v4")
    assert got.returncode == 0, got.stderr
    path = fresh / records[-1].formats["keras"]["path"]
    reloaded = keras.models.load_model(path / "model.keras")  # plain Keras, no kgit
    inputs = np.load(path / "reference_inputs.npz")
    outputs = np.load(path / "reference_outputs.npz")
    np.testing.assert_allclose(
        reloaded.predict(inputs[inputs.files[0]], verbose=0), outputs[outputs.files[0]], atol=1e-6
    )
    # a fetch killed midway (or a file deleted): `kgit validate` says how to complete it, `kgit get` does
    dvc_file = records[-1].formats["keras"]["path"] + ".dvc"
    piece = sorted((path / "kgit-pack" / "tensors").iterdir())[0]
    piece.unlink()
    incomplete = kgit(fresh, "validate", "m@v4", "-f", "keras", "--json")
    assert incomplete.returncode == 1 and "`kgit get m@v4 -f keras` brings them back" in incomplete.stdout
    again = kgit(fresh, "get", "m@v4", "-f", "keras", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["formats"]["keras"]["fetched"], again.stderr
    assert piece.is_file()
    # a changed file in a folder that was already here: left as it is, and the error says how to restore it
    changed = path / "reference_inputs.npz"
    changed.chmod(0o644)
    changed.write_bytes(changed.read_bytes() + b"x")
    edited = changed.read_bytes()
    refused = kgit(fresh, "get", "m@v4", "-f", "keras")
    assert refused.returncode == 1 and f"`dvc checkout --force {dvc_file}`" in refused.stderr, refused.stderr
    assert changed.read_bytes() == edited
    forced = subprocess.run([sys.executable, "-m", "dvc", "checkout", "-q", "--force", dvc_file], cwd=fresh)
    assert forced.returncode == 0 and kgit(fresh, "get", "m@v4", "-f", "keras").returncode == 0
    # `dvc pull` alone brings the pieces; kgit validate assembles and checks them
    pulled = subprocess.run(
        [sys.executable, "-m", "dvc", "pull", "-q", records[0].formats["savedmodel"]["path"] + ".dvc"], cwd=fresh
    )
    assert pulled.returncode == 0
    v1 = fresh / records[0].formats["savedmodel"]["path"]
    assert not (v1 / "variables" / "variables.data-00000-of-00001").exists()
    # and what an assembly killed midway (`kgit get` in another terminal, say) left beside the file
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    leftover = v1 / "variables" / f".variables.data-00000-of-00001.{gone.pid}.kgit-assembling"
    leftover.write_bytes(b"the first bytes of the file")
    checked = kgit(fresh, "validate", "m@v1", "-f", "savedmodel", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)[0]["status"] == "passed"
    assert (v1 / "variables" / "variables.data-00000-of-00001").is_file() and not leftover.exists()
    # a tensor object altered in the work tree: the release no longer validates, naming the files check
    tensor = next((v1 / "kgit-pack" / "tensors").iterdir())
    tensor.chmod(0o644)
    tensor.write_bytes(b"\1" * tensor.stat().st_size)
    bad = kgit(fresh, "validate", "m@v1", "-f", "savedmodel", "--recheck", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)[0]["check"] == "files", bad.stdout


@pytest.mark.parametrize("point", ["placed", "tracked", "described"])
def test_a_packed_release_killed_midway_leaves_nothing_and_the_next_one_lands(
    kgit_repo: Path, tmp_path: Path, point: str
) -> None:
    """Killed after its folder was placed, after `dvc add` (the .dvcignore line written before it),
    or after dvc.yaml: the next command undoes it, .dvcignore included, and the next release lands."""
    import signal

    from conftest import git
    from support.consistency import assert_consistent

    model_file = tmp_path / "model.keras"
    _backbone_model().save(model_file)
    release = [sys.executable, "-m", "kgit", "release", "m", "--from", str(model_file), "-f", "keras"]
    proc = subprocess.run(
        release,
        cwd=kgit_repo,
        env={**os.environ, "KGIT_FAILPOINT": point},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the next release takes the lock, undoes the killed one (its folder, .dvcignore line, .dvc file) and lands
    proc = subprocess.run(release, cwd=kgit_repo, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "interrupted release m@v1.0.0" in proc.stderr, proc.stderr
    assert git(kgit_repo, "status", "--porcelain") == "" and git(kgit_repo, "tag", "-l") == "m@v1.0.0"
    assert_consistent(kgit_repo)
    assert (kgit_repo / "artifacts" / "m" / "keras" / ".dvcignore").read_text() == "/v1/model.keras\n"


def _cache_listing(repo: Path, dvc_file: str) -> dict[str, Path]:
    """{path in the folder: its object in the repository's DVC cache}, from the folder's DVC listing."""
    from support.world import dvc_md5

    cache = repo / ".dvc" / "cache" / "files" / "md5"
    top = dvc_md5(repo, dvc_file)
    listing = json.loads((cache / top[:2] / top[2:]).read_text())
    return {e["relpath"]: cache / e["md5"][:2] / e["md5"][2:] for e in listing}


def test_tensor_objects_are_links_to_the_dvc_cache_and_a_tensor_stored_before_is_not_written_again(
    tmp_path: Path,
) -> None:
    """A packed release's tensor objects are hard links to their DVC cache objects: the tensors a
    version shares with an earlier one (and its formats with each other) are one file on disk, never
    written again. Every other file is a copy, as DVC copies. DVC sees the folders as they should be;
    `kgit get` on a fresh clone links what it downloaded; a repository that sets DVC's cache.type gets
    copies, as it asked."""
    import numpy as np
    from conftest import kgit
    from support.world import World

    import kgit as api

    (tmp_path / "w").mkdir()
    w = World.create(tmp_path / "w")
    model = _backbone_model()
    records = [api.release(model, "m", formats=["keras", "h5"], repo=w.repo)]
    model.fit(np.random.rand(16, 256), np.random.rand(16, 4), verbose=0)  # the head trains, the backbone does not
    records.append(api.release(model, "m", formats=["keras", "h5"], repo=w.repo))

    def inodes(repo: Path, record: Any, fmt: str) -> dict[str, tuple[int, int, int]]:
        """{file: (its inode, links, its cache object's inode or -1)}"""
        rel = record.formats[fmt]["path"]
        cached = _cache_listing(repo, rel + ".dvc")
        folder = repo / rel
        out = {}
        for p in folder.rglob("*"):
            if p.is_file():
                name = p.relative_to(folder).as_posix()
                obj = cached.get(name)
                out[name] = (p.stat().st_ino, p.stat().st_nlink, obj.stat().st_ino if obj else -1)
        return out

    seen = {(i, fmt): inodes(w.repo, r, fmt) for i, r in enumerate(records) for fmt in ("keras", "h5")}
    backbone = _sha256_of_tensor(w.repo / records[0].formats["keras"]["path"], 256 * 256 * 4)
    for (i, fmt), files in seen.items():
        pieces = {n: v for n, v in files.items() if n.startswith("kgit-pack/tensors/")}
        others = {n: v for n, v in files.items() if n not in pieces}
        assert pieces and all(ino == obj and links >= 2 for ino, links, obj in pieces.values()), (i, fmt, pieces)
        assert all(links == 1 and ino != obj for ino, links, obj in others.values()), (i, fmt, others)
        assert others["model.keras" if fmt == "keras" else "model.h5"][2] == -1  # assembled: not DVC's
    # the frozen backbone's kernel: one file for both versions and both formats, and the cache's
    one = {seen[key][f"kgit-pack/tensors/{backbone}"][0] for key in seen}
    assert len(one) == 1, one
    # DVC sees every folder as released, and its checkout leaves the links as they are
    dvc_files = [r.formats[f]["path"] + ".dvc" for r in records for f in r.formats]
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *dvc_files], cwd=w.repo, capture_output=True, text=True
    )
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr
    assert subprocess.run([sys.executable, "-m", "dvc", "checkout", "-q"], cwd=w.repo).returncode == 0
    assert {key: inodes(w.repo, records[key[0]], key[1]) for key in seen} == seen
    assert kgit(w.repo, "validate", "m@v2").returncode == 0
    assert w.push("main", "--tags").returncode == 0

    # a fresh clone: `kgit get` links the tensor objects it downloaded, copies the rest
    fresh = w.clone("fresh")
    got = kgit(fresh, "get", "m@v2")
    assert got.returncode == 0, got.stderr
    for fmt in ("keras", "h5"):
        files = inodes(fresh, records[1], fmt)
        linked = [v for n, v in files.items() if n.startswith("kgit-pack/tensors/")]
        assert linked and all(ino == obj for ino, _links, obj in linked), (fmt, files)
        assert all(ino != obj for n, (ino, _l, obj) in files.items() if not n.startswith("kgit-pack/tensors/"))
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "dvc",
            "status",
            "--json",
            *(records[1].formats[f]["path"] + ".dvc" for f in ("keras", "h5")),
        ],
        cwd=fresh,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr
    assert kgit(fresh, "validate", "m@v2").returncode == 0

    # the backbone's object written into in place (through a folder's link): the next release is
    # refused rather than linked to it, and lands once the object is gone
    tensor = w.repo / records[1].formats["keras"]["path"] / "kgit-pack" / "tensors" / backbone
    obj = _cache_listing(w.repo, records[1].formats["keras"]["path"] + ".dvc")[f"kgit-pack/tensors/{backbone}"]
    tensor.chmod(0o644)
    with tensor.open("r+b") as fh:
        fh.write(b"\1" * 64)
    tags = subprocess.run(["git", "tag", "-l"], cwd=w.repo, capture_output=True, text=True).stdout
    model.fit(np.random.rand(16, 256), np.random.rand(16, 4), verbose=0)
    with pytest.raises(Exception, match="with other bytes than DVC stored.*nothing was released"):
        api.release(model, "m", formats=["keras"], repo=w.repo)
    assert subprocess.run(["git", "tag", "-l"], cwd=w.repo, capture_output=True, text=True).stdout == tags
    assert subprocess.run(["git", "status", "--porcelain"], cwd=w.repo, capture_output=True, text=True).stdout == ""
    obj.unlink(missing_ok=True)  # DVC's own check may have removed it already
    landed = api.release(model, "m", formats=["keras"], repo=w.repo)
    fresh_tensor = w.repo / landed.formats["keras"]["path"] / "kgit-pack" / "tensors" / backbone
    assert fresh_tensor.stat().st_ino != tensor.stat().st_ino and _sha256(fresh_tensor) == backbone
    assert kgit(w.repo, "validate", "m@v3").returncode == 0

    # a repository whose DVC cache.type says copy: copies, and none shares the cache's inode
    other = w.clone("copies")
    assert (
        subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "cache.type", "copy"], cwd=other).returncode
        == 0
    )
    model.fit(np.random.rand(16, 256), np.random.rand(16, 4), verbose=0)
    record = api.release(model, "m", formats=["keras"], repo=other)
    files = inodes(other, record, "keras")
    assert all(links == 1 and ino != obj for ino, links, obj in files.values()), files


def _sha256_of_tensor(folder: Path, size: int) -> str:
    """The name of the (one) tensor object of ``size`` bytes in a packed release folder."""
    from kgit.core import packing

    names = [p.name for p in (folder / packing.TENSORS_DIR).iterdir() if p.stat().st_size == size]
    assert len(names) == 1, names
    return names[0]


def test_copying_a_range_falls_back_to_reading_and_writing_where_the_kernel_cannot(tmp_path: Path) -> None:
    """copy_range copies with copy_file_range between files; into a pipe (which it refuses) it reads
    and writes, and either way a file shorter than asked is refused."""
    from kgit.core import packing
    from kgit.core.errors import KgitError

    data = os.urandom(40_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    with src.open("rb") as f, (tmp_path / "out").open("wb", buffering=0) as out:
        packing.copy_range(f.fileno(), 1000, 30_000, out.fileno())
        packing.copy_range(f.fileno(), 0, 10, out.fileno())
    assert (tmp_path / "out").read_bytes() == data[1000:31_000] + data[:10]
    r, wr = os.pipe()
    try:
        with src.open("rb") as f:
            packing.copy_range(f.fileno(), 5, 20_000, wr)
            assert os.read(r, 65536) == data[5:20_005]
            with pytest.raises(KgitError, match="shorter"):
                packing.copy_range(f.fileno(), 39_000, 2_000, wr)
        with src.open("rb") as f, (tmp_path / "short").open("wb", buffering=0) as out, pytest.raises(KgitError):
            packing.copy_range(f.fileno(), 39_000, 2_000, out.fileno())
    finally:
        os.close(r)
        os.close(wr)


def test_a_dvc_cache_on_another_file_system_gets_copies_and_everything_works(tmp_path: Path) -> None:
    """Hard links cannot cross file systems: with the DVC cache on another one (/dev/shm, a tmpfs),
    tensor objects are copied into it, releases, `kgit get` and `kgit validate` work as before, and
    DVC sees every folder as released."""
    import shutil
    import tempfile

    import numpy as np
    from conftest import kgit
    from support.world import World

    import kgit as api

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    caches = Path(tempfile.mkdtemp(prefix="kgit-test-cache-", dir=shm))
    try:
        (tmp_path / "w").mkdir()
        w = World.create(tmp_path / "w")
        dvc = [sys.executable, "-m", "dvc"]
        assert subprocess.run([*dvc, "cache", "dir", "--local", str(caches / "repo")], cwd=w.repo).returncode == 0
        model = _backbone_model()
        records = [api.release(model, "m", formats=["keras"], repo=w.repo)]
        model.fit(np.random.rand(16, 256), np.random.rand(16, 4), verbose=0)
        records.append(api.release(model, "m", formats=["keras"], repo=w.repo))
        for record in records:
            folder = w.repo / record.formats["keras"]["path"]
            assert all(p.stat().st_nlink == 1 for p in folder.rglob("*") if p.is_file())
        dvc_files = [r.formats["keras"]["path"] + ".dvc" for r in records]
        status = subprocess.run([*dvc, "status", "--json", *dvc_files], cwd=w.repo, capture_output=True, text=True)
        assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr
        assert kgit(w.repo, "validate", "m@v2").returncode == 0
        assert w.push("main", "--tags").returncode == 0

        fresh = w.clone("fresh")
        assert subprocess.run([*dvc, "cache", "dir", "--local", str(caches / "fresh")], cwd=fresh).returncode == 0
        got = kgit(fresh, "get", "m@v2")
        assert got.returncode == 0, got.stderr
        folder = fresh / records[1].formats["keras"]["path"]
        pieces = list((folder / "kgit-pack" / "tensors").iterdir())
        assert pieces and all(p.stat().st_nlink == 1 for p in pieces)
        checked = kgit(fresh, "validate", "m@v2")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        shutil.rmtree(caches, ignore_errors=True)
