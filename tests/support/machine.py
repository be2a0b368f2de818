"""Another machine: its own clone, HOME and DVC cache, running the real command lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class Machine:
    """A working copy with its own HOME and DVC cache; commands run as that machine's user would."""

    def __init__(self, root: Path, name: str) -> None:
        from conftest import user_env

        self.home = root / f"home-{name}"
        self.home.mkdir(parents=True)
        self.repo = root / f"machine-{name}"
        self.env = user_env(self.home)

    def run(self, *cmd: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        exe = [sys.executable, "-m", cmd[1], *cmd[2:]] if cmd[0] == "python-m" else list(cmd)
        proc = subprocess.run(
            exe, cwd=cwd or self.repo, env=self.env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def kgit(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("python-m", "kgit", *args, check=check)


def cache_files(repo: Path) -> int:
    cache = repo / ".dvc" / "cache"
    return sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
