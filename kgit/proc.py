"""One place to run external commands, so every failure reads the same way."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from kgit.errors import CommandError


def run(
    cmd: Sequence[str],
    cwd: str | Path | None = None,
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; raise CommandError (command, exit code, output) on failure."""
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise CommandError(list(cmd), 127, f"{cmd[0]} not found on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(list(cmd), -1, f"timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        raise CommandError(list(cmd), proc.returncode, (proc.stderr or "") + (proc.stdout or ""))
    return proc
