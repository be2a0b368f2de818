"""The tests' `kgit` runs in a process forked from a preloaded one (support.forked_cli): it must
answer exactly as `python -m kgit` does, exit codes, stdout and stderr alike."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.forked_cli import run_fresh, run_kgit


def test_a_forked_command_answers_as_python_m_kgit(tmp_path: Path) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    for args in (["--version"], ["list"], ["show", "nope@v1"], ["relase"], ["list", "--json"], ["--help"]):
        fresh = run_fresh(outside, args)
        forked = run_kgit(outside, args)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr), args
    assert run_kgit(outside, ["list"]).returncode == 1  # a refusal, not a crash of the runner


def test_each_forked_command_has_its_own_environment_and_folder(tmp_path: Path) -> None:
    """Narrow help (COLUMNS) in a git repository, then wide help elsewhere: each as a fresh process
    in that folder with that environment says it, and the caller's environment is untouched."""
    import os

    repo, other = tmp_path / "repo", tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    answers = []
    for cwd, columns in ((repo, "60"), (other, "200"), (repo, "200")):
        env = {**os.environ, "COLUMNS": columns}
        for args in (["--help"], ["list"]):
            fresh = run_fresh(cwd, args, env)
            forked = run_kgit(cwd, args, env)
            assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
            answers.append((forked.returncode, forked.stdout, forked.stderr))
    assert answers[0] != answers[4] and answers[1] != answers[3]  # the environment and the folder mattered
    assert os.environ["COLUMNS"] == "200"
