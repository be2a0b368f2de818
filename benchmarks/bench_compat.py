"""``kgit compat``: the first run (the environment resolved and created with uv), a cached run (the
environment reused), and ``--quick`` (first: the Keras wheel downloaded; then cached), whole processes.

    python benchmarks/bench_compat.py [--keras 3.12] [--tf 2.21]

A scratch repository gets one release (a small dense model, savedmodel and keras formats); kgit's
environment cache is a new temporary folder, so the first run really creates the environment, while
uv's own cache is the machine's (``UV_CACHE_DIR`` or ``~/.cache/uv``): wheels downloaded before are
reused, as they are for a user, and what this run had to download is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_util import KGIT, log, tool_env


def _sizes(path: Path) -> tuple[int, int]:
    """(bytes of the files under ``path``, each counted once; bytes of those not hard-linked elsewhere)."""
    total, own, seen = 0, 0, set()
    for p in path.rglob("*") if path.exists() else []:
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_file() and not p.is_symlink() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            own += st.st_size if st.st_nlink == 1 else 0
    return total, own


def _size(path: Path) -> int:
    return _sizes(path)[0]


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras", default="3.12", help="the Keras 3 minor version to check in (default 3.12)")
    parser.add_argument("--tf", default="2.21", help="the TensorFlow minor version of that environment")
    args = parser.parse_args()
    uv_cache = Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")
    with tempfile.TemporaryDirectory(prefix="kgit-bench-compat-") as tmp:
        base = Path(tmp)
        repo = base / "repo"
        env = tool_env(XDG_CACHE_HOME=str(base / "cache"), UV_CACHE_DIR=str(uv_cache))
        log("making a repository with one release")
        script = (
            "import keras, numpy as np, kgit\n"
            "m = keras.Sequential([keras.Input((16,), name='x'), keras.layers.Dense(8, activation='relu'), keras.layers.Dense(2)])\n"
            "m.compile('adam', 'mse'); m.fit(np.random.rand(32, 16), np.random.rand(32, 2), epochs=1, verbose=0)\n"
            f"kgit.init('.', remote={str(base / 'store')!r})\n"
            "kgit.release(m, 'bench', formats=['savedmodel', 'keras'])\n"
        )
        repo.mkdir()
        for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "start"]):
            subprocess.run(
                cmd,
                cwd=repo,
                check=True,
                env={
                    **env,
                    "GIT_AUTHOR_NAME": "b",
                    "GIT_AUTHOR_EMAIL": "b@b",
                    "GIT_COMMITTER_NAME": "b",
                    "GIT_COMMITTER_EMAIL": "b@b",
                },
            )
        subprocess.run([sys.executable, "-c", script], cwd=repo, check=True, env=env, capture_output=True)
        specs = ["--with", f"keras=={args.keras}.*", "--with", f"tensorflow=={args.tf}.*"]
        uv_before = _size(uv_cache)
        rows = []
        for label, extra in (
            ("first kgit compat (environment created)", ["--no-record"]),
            ("cached kgit compat (environment reused)", ["--no-record"]),
            ("kgit compat --quick (wheel downloaded)", ["--quick"]),
            ("kgit compat --quick (wheel cached)", ["--quick"]),
        ):
            log(label)
            took, proc = _timed([KGIT, "compat", "bench@v1", *specs, *extra, "--json"], repo, env)
            try:
                report = json.loads(proc.stdout)
            except ValueError:
                sys.exit(f"{label} failed: {proc.stderr.strip().splitlines()[-1:]}")
            detail = ""
            if "--quick" not in extra:
                e = report["environments"][0]
                detail = (
                    f"environment {'reused' if e['reused'] else 'created'} in {e['env_seconds']:.1f} s, "
                    f"loader {e['run_seconds']:.1f} s: {e['summary']}"
                )
            else:
                e = report["environments"][0]
                detail = f"keras {e['keras']}: {len(e['findings'])} finding(s)"
            rows.append((label, took, detail))
        envs_dir = base / "cache" / "kgit" / "envs"
        env_folders = [p for p in envs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        wheel_bytes = sum(w.stat().st_size for w in (base / "cache" / "kgit" / "wheels").glob("*.whl"))
        downloaded = max(0, _size(uv_cache) - uv_before)
        sizes = _sizes(env_folders[0]) if env_folders else None
    width = max(len(r[0]) for r in rows)
    print(f"{'run'.ljust(width)}  {'seconds':>8}  detail")
    for label, took, detail in rows:
        print(f"{label.ljust(width)}  {took:8.2f}  {detail}")
    print()
    if sizes is not None:
        total, own = sizes
        print(
            f"environment folder: {total / 1e6:.0f} MB of files, of which {own / 1e6:.0f} MB are its own "
            "(the rest are hard links into uv's cache)"
        )
    print(
        f"uv cache grew by {downloaded / 1e6:.0f} MB (wheels this run downloaded); "
        f"Keras wheel for --quick: {wheel_bytes / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
