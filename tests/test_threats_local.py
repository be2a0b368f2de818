"""Local threats: a DVC remote inside the repository, recovery meeting edits made after a killed
release, a corrupt journal, a validation record fooled by a restored mtime, `kgit get` keeping bytes
that failed verification, and a YAML alias bomb as ``--params``. Real git, DVC and TensorFlow."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, kgit, snapshot
from support.consistency import RELEASE, assert_consistent, without_cache
from support.forked_cli import run_kgit

import kgit as api

DVC = [sys.executable, "-m", "dvc"]


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("kgit: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


# -- 4. a DVC remote inside the repository -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("form", ["dot", "empty", "blank", "folder", "relative", "symlink", "file-url", "git-dir"])
def test_init_refuses_a_remote_inside_the_repository(git_repo: Path, tmp_path: Path, form: str) -> None:
    (git_repo / "sub").mkdir()
    link = tmp_path / "link"
    link.symlink_to(git_repo / "sub")
    cwd, remote = {
        "dot": (git_repo, "."),
        "empty": (git_repo, ""),
        "blank": (git_repo, "  "),
        "folder": (git_repo, str(git_repo / "store")),
        "relative": (git_repo / "sub", "../elsewhere/../store"),  # relative to where kgit runs
        "symlink": (git_repo, str(link / "store")),  # a path outside that resolves inside
        "file-url": (git_repo, f"file://{git_repo}/store"),
        "git-dir": (git_repo, str(git_repo / ".git" / "store")),
    }[form]
    before = snapshot(git_repo)
    err = one_line_error(kgit(cwd, "init", "--remote", remote))
    assert ("--remote is empty" if form in ("empty", "blank") else "inside the repository") in err
    assert f"--remote {git_repo.resolve()}.dvc-storage" in err  # says what to use instead
    assert snapshot(git_repo) == before
    assert not (git_repo / ".dvc").exists()
    assert not any((git_repo / p).exists() for p in ("store", "sub/store", ".git/store"))
    assert not (git_repo / ".git" / "hooks" / "pre-push").exists()


@pytest.mark.slow
@pytest.mark.parametrize("url", ["relative", "file-url"])
def test_init_refuses_a_default_remote_configured_inside_the_repository(
    git_repo: Path, tmp_path: Path, url: str
) -> None:
    subprocess.run([*DVC, "init", "-q"], cwd=git_repo, check=True)
    target = "store" if url == "relative" else f"file://{git_repo}/store"
    subprocess.run([*DVC, "remote", "add", "-d", "team", target], cwd=git_repo, check=True, capture_output=True)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "DVC set up by hand")
    before = snapshot(git_repo)
    err = one_line_error(kgit(git_repo, "init"))
    assert "default DVC remote team" in err and "inside the repository" in err and "kgit init --remote" in err
    assert snapshot(git_repo) == before
    # the fix the message names works: a folder outside becomes the default remote
    outside = tmp_path / "outside"
    assert kgit(git_repo, "init", "--remote", str(outside)).returncode == 0
    config = (git_repo / ".dvc" / "config").read_text()
    assert "remote = kgit" in config and str(outside) in config
    assert git(git_repo, "status", "--porcelain") == ""


# -- 5. recovery after a killed release ------------------------------------------------------------
def killed_release(repo: Path, point: str) -> None:
    env = {**os.environ, "KGIT_FAILPOINT": point}
    proc = run_kgit(repo, RELEASE, env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (repo / ".git" / "kgit" / "journal.json").exists()


@pytest.mark.slow
def test_recovery_leaves_files_edited_after_a_killed_release(kgit_repo: Path) -> None:
    head = git(kgit_repo, "rev-parse", "HEAD")
    killed_release(kgit_repo, "described")  # folders placed, `dvc add` done, dvc.yaml written
    keras, h5 = kgit_repo / "artifacts" / "safe" / "keras", kgit_repo / "artifacts" / "safe" / "h5"
    dvc_yaml = kgit_repo / "dvc.yaml"
    assert "safe" in dvc_yaml.read_text()
    # the user edits files the release wrote, before any kgit command runs again
    edits = {
        dvc_yaml: dvc_yaml.read_text() + "# my own note\n",
        keras / ".gitignore": (keras / ".gitignore").read_text() + "/scratch\n",
        h5 / "v1.dvc": (h5 / "v1.dvc").read_text() + "# checked by hand\n",
        keras / "v1" / "notes.txt": "mine\n",
    }
    for path, text in edits.items():
        path.write_text(text)
    proc = kgit(kgit_repo, "init")  # the next kgit command that writes recovers
    assert proc.returncode == 0, proc.stderr
    assert "removed the traces of the interrupted release safe@v1.0.0" in proc.stderr
    for rel in (
        "dvc.yaml",
        "artifacts/safe/keras/.gitignore",
        "artifacts/safe/h5/v1.dvc",
        "artifacts/safe/keras/v1/notes.txt",
    ):
        assert rel in proc.stderr, proc.stderr
    assert all(path.read_text() == text for path, text in edits.items())  # every edit survived
    # what nobody touched is gone: the rest of the keras folder, its .dvc, the whole h5 folder
    assert sorted(p.name for p in (keras / "v1").iterdir()) == ["notes.txt"]
    assert not (keras / "v1.dvc").exists() and not (h5 / "v1").exists() and not (h5 / ".gitignore").exists()
    assert not (kgit_repo / ".git" / "kgit" / "journal.json").exists()
    assert git(kgit_repo, "tag", "-l") == "" and git(kgit_repo, "rev-parse", "HEAD") == head
    assert git(kgit_repo, "diff", "--cached", "--name-only") == ""  # nothing the release staged stays staged


def _immutable(folder: Path, on: bool) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if on else "-i", str(folder)], check=on)  # root ignores permission bits
    else:
        folder.chmod(0o555 if on else 0o755)


@pytest.mark.slow
def test_recovery_restores_what_the_release_wrote_and_keeps_the_journal_on_errors(kgit_repo: Path) -> None:
    before = snapshot(kgit_repo)
    killed_release(kgit_repo, "described")
    assert (kgit_repo / "dvc.yaml").read_text() != before["dvc_yaml"]
    journal = kgit_repo / ".git" / "kgit" / "journal.json"
    folder = kgit_repo / "artifacts" / "safe" / "keras" / "v1"
    _immutable(folder, True)  # its files cannot be removed
    try:
        err = one_line_error(kgit(kgit_repo, "init"))
        assert "could not undo the interrupted release safe@v1.0.0" in err and str(journal.name) in err
        assert journal.exists()  # not cleared: the next command tries again
    finally:
        _immutable(folder, False)
    proc = kgit(kgit_repo, "init")
    assert proc.returncode == 0, proc.stderr
    assert "removed the traces of the interrupted release safe@v1.0.0" in proc.stderr and "left" not in proc.stderr
    assert without_cache(snapshot(kgit_repo)) == without_cache(before)  # dvc.yaml restored, the rest removed
    assert not journal.exists()
    assert_consistent(kgit_repo)


@pytest.mark.slow
def test_a_corrupt_journal_is_refused_not_ignored(kgit_repo: Path, tmp_path: Path) -> None:
    journal = kgit_repo / ".git" / "kgit" / "journal.json"
    outside = tmp_path / "outside.txt"
    outside.write_text("not kgit's\n")
    valid: dict[str, object] = {
        "tag": "safe@v1.0.0",
        "head_before": None,
        "tag_message": "",
        "created": [],
        "backups": {},
    }
    for text in [
        "{not json",
        "",
        "[]",
        json.dumps({**valid, "tag": 5}),
        json.dumps({**valid, "unknown": 1}),
        json.dumps({**valid, "created": ["../outside.txt"]}),
        b"\xff\xfe".decode("latin-1"),
    ]:
        journal.parent.mkdir(exist_ok=True)
        journal.write_text(text)
        before = snapshot(kgit_repo)
        err = one_line_error(kgit(kgit_repo, "init"))
        assert "journal of an interrupted release" in err and str(journal.name) in err and "delete" in err
        assert snapshot(kgit_repo) == before
        assert journal.read_text() == text  # kept for the user to look at
    assert outside.read_text() == "not kgit's\n"


# -- 9. the validation record and in-place edits ----------------------------------------------------
@pytest.mark.slow
def test_in_place_edit_with_restored_mtime_is_not_cached(kgit_repo: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    rec = api.release(plain_model, "fooled", formats="keras", repo=kgit_repo)
    first = json.loads(kgit(kgit_repo, "validate", "--json", check=True).stdout)
    assert [r["status"] for r in first] == ["cached"]
    target = kgit_repo / rec.formats["keras"]["path"] / "model.keras"
    st = target.stat()
    with open(target, "r+b") as fh:  # same file, same size: one byte flipped in place
        fh.seek(st.st_size // 2)
        byte = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    proc = kgit(kgit_repo, "validate", "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)[0]
    assert result["status"] == "failed" and result["check"] == "files" and "model.keras" in result["error"]


# -- 11a. `kgit get` and bytes that fail verification -----------------------------------------------
@pytest.mark.slow
def test_get_removes_fetched_data_that_fails_verification(kgit_repo: Path, tmp_path: Path, plain_model) -> None:  # type: ignore[no-untyped-def]
    rec = api.release(plain_model, "shared", formats="keras", repo=kgit_repo)
    subprocess.run([*DVC, "push", "-q"], cwd=kgit_repo, check=True)
    folder = rec.formats["keras"]["path"]
    md5 = hashlib.md5((kgit_repo / folder / "model.keras").read_bytes()).hexdigest()
    obj = tmp_path / "remote" / "files" / "md5" / md5[:2] / md5[2:]
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(kgit_repo), str(clone))
    already = clone / "artifacts" / "shared" / "keras" / ".gitignore"
    assert already.exists()
    err = one_line_error(kgit(clone, "get", "shared@v1"))
    assert "model.keras" in err and f"removed what was fetched ({folder}) from the work tree" in err
    assert not (clone / folder).exists()
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""
    assert already.exists()  # what the clone had is untouched
    # the DVC cache is left as DVC has it (with the bad object): `kgit get` refuses again, the same way
    assert (clone / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()
    assert "removed what was fetched" in one_line_error(kgit(clone, "get", "shared@v1"))
    assert not (clone / folder).exists()


# -- 11b. a YAML alias bomb as --params -------------------------------------------------------------
LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.slow
def test_yaml_alias_bomb_and_oversized_params_are_refused(kgit_repo: Path, tmp_path: Path) -> None:
    files = {
        "laughs.yaml": (LAUGHS, "YAML aliases"),
        "loop.yaml": ("a: &a [*a]\n", "YAML aliases"),
        "big.yaml": ("blob: " + "x" * 1_100_000 + "\n", "larger than 1.0 MB"),
    }
    before = snapshot(kgit_repo)
    for name, (text, says) in files.items():
        (tmp_path / name).write_text(text)
        proc = kgit(
            kgit_repo, "release", "hostile", "--from", "support.zoo:plain_model", "--params", str(tmp_path / name)
        )
        assert says in one_line_error(proc) and "MemoryError" not in proc.stderr
    assert snapshot(kgit_repo) == before


def test_params_with_a_few_aliases_still_read(tmp_path: Path) -> None:
    from kgit.cli.releases import _parse_params

    params = tmp_path / "params.yaml"
    params.write_text("base: &base {lr: 0.1, epochs: 3}\ntrain:\n  <<: *base\n  epochs: 5\nlayers: [*base, *base]\n")
    assert _parse_params(["seed=1"], params) == {
        "base": {"lr": 0.1, "epochs": 3},
        "train": {"lr": 0.1, "epochs": 5},
        "layers": [{"lr": 0.1, "epochs": 3}, {"lr": 0.1, "epochs": 3}],
        "seed": 1,
    }
