"""Isolated Python environments with chosen packages, made with uv and cached by what they resolve to.

``environment(["keras==3.12.*", "tensorflow==2.21.*"])``:

1. **resolve** the specifiers against the package index for this Python (``uv pip compile``): every
   package pinned (``keras==3.12.1``, ``tensorflow==2.21.0``, numpy...);
2. **key** the environment by those pins, the Python version and the platform
   (kgit.registry.compat_records.env_key): ``$XDG_CACHE_HOME/kgit/envs/KEY`` (default
   ``~/.cache/kgit/envs/KEY``). An environment whose folder exists is reused as it is;
3. otherwise **create** it under a temporary name beside it (``uv venv``, then ``uv pip sync`` of the
   pins), write its record (``kgit-env.json``) and rename it into place last. An error or Ctrl-C
   removes the temporary folder; one killed outright is removed by the next run (its process is
   gone). Two runs making the same environment take turns (a lock file per key).

uv's own cache (``UV_CACHE_DIR``, default ``~/.cache/uv``) keeps every wheel it downloaded, and uv
hard-links installed files from it where the file system allows: environments that share
TensorFlow download it once and take little space. The last resolution of each request is kept
(``resolved.json``), so an environment made before is found again when the index cannot be reached.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml, forkserver
from kgit.core.errors import BusyError, KgitError, one_line
from kgit.core.fsutil import exclusive, running
from kgit.registry.compat_records import canonical, env_key, parse_requirement
from kgit.store.clone_state import write_json

RECORD_FILE = "kgit-env.json"
RESOLVED_FILE = "resolved.json"
_TMP_MARK = ".tmp-"
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
TIMEOUT = float(os.environ.get("KGIT_COMPAT_TIMEOUT", "1800"))  # creating an environment, at most


class EnvError(KgitError):
    """An environment could not be resolved or created."""


@dataclass
class Environment:
    """A ready environment: its key, folder, every package pinned, and how it came to be."""

    key: str
    path: Path
    packages: dict[str, str]
    requested: list[str]
    python: str
    platform: str
    reused: bool = False
    seconds: float = 0.0  # resolving and (when not reused) creating it
    notes: list[str] = field(default_factory=list)

    @property
    def python_exe(self) -> Path:
        return self.path / "bin" / "python"

    def has(self, name: str) -> bool:
        return canonical(name) in {canonical(k) for k in self.packages}

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "packages": self.packages,
            "requested": self.requested,
            "python": self.python,
            "platform": self.platform,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def cache_root() -> Path:
    """Where kgit keeps its environments: ``$XDG_CACHE_HOME/kgit/envs`` or ``~/.cache/kgit/envs``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kgit" / "envs"


def python_version() -> str:
    return platform.python_version()


def platform_name() -> str:
    return sysconfig.get_platform()


def uv_binary() -> str:
    """The uv executable: the ``uv`` package's (``pip install 'kgit[compat]'``), else one on PATH."""
    try:
        import uv  # type: ignore[import-not-found,unused-ignore]

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvError(
        "uv is not installed, and kgit makes its environments with it: pip install 'kgit[compat]' (or pip install uv)"
    )


def _base_python() -> str:
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def _run_uv(args: Sequence[str], *, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.setdefault("UV_NO_PROGRESS", "1")
    try:
        return subprocess.run(
            [uv_binary(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            preexec_fn=forkserver.dies_with_this_process(),  # a killed kgit's uv must not go on writing
        )
    except subprocess.TimeoutExpired:
        raise EnvError(
            f"`uv {' '.join(args[:2])}` took more than {timeout:.0f} s: check the network and retry"
        ) from None


# -- resolving ------------------------------------------------------------------------------------
def check_specs(specs: Sequence[str], where: str = "--with") -> list[str]:
    """The specifiers, each checked to be a package from the index with a version specifier."""
    if not specs:
        raise EnvError(f"{where}: name at least one package, e.g. keras==3.12.*")
    for spec in specs:
        parse_requirement(spec, where)
    return [s.strip() for s in specs]


def resolve(specs: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(every package the specifiers resolve to on this Python -> its version, notes). Without an
    index, the last resolution of the same request is used (with a note) if there is one."""
    specs = check_specs(specs)
    request = _request_key(specs)
    proc = _run_uv(
        ["pip", "compile", "-", "--python", _base_python(), "--no-header", "--no-annotate", "--quiet"],
        stdin="\n".join(specs) + "\n",
    )
    if proc.returncode != 0:
        problem = _resolve_problem(specs, proc.stderr)
        if problem.startswith("no package index"):
            memo = _memo().get(request)
            if isinstance(memo, dict) and memo:
                return dict(memo), [f"{problem.split(':')[0]}: using this request's last resolution"]
        raise EnvError(problem)
    pins = {}
    for line in proc.stdout.splitlines():
        m = _PIN_RE.match(line.strip())
        if m:
            pins[m.group(1)] = m.group(2)
    if not pins:
        raise EnvError(f"uv resolved {', '.join(specs)} to no packages: {one_line(proc.stdout or proc.stderr, 200)}")
    _remember(request, pins)
    return pins, []


def _resolve_problem(specs: Sequence[str], stderr: str) -> str:
    """One line with the fix, from uv's error output."""
    text = " ".join(stderr.split())
    lower = text.lower()
    if any(
        w in lower
        for w in (
            "failed to fetch",
            "dns error",
            "connection refused",
            "network",
            "timed out",
            "error sending request",
            "tcp connect",
            "failed to connect",
            "offline",
        )
    ):
        return (
            f"no package index reachable to resolve {', '.join(specs)} ({one_line(_tail(text), 160)}): check the "
            "network or the index (UV_INDEX_URL, UV_DEFAULT_INDEX), or retry once it is back"
        )
    if "no version of" in lower or "unsatisfiable" in lower or "no solution found" in lower:
        missing = re.search(r"there is no version of ([A-Za-z0-9._-]+)(==[^\s,]+|\S*)", text)
        what = f"{missing.group(1)}{missing.group(2)}" if missing else ", ".join(specs)
        name = missing.group(1) if missing else canonical(parse_requirement(specs[0])[0])
        return (
            f"{what} does not exist on the package index, or cannot be installed with the rest of "
            f"{', '.join(specs)} on Python {python_version()} ({one_line(_tail(text), 200)}): "
            f"see the versions there with `pip index versions {name}`"
        )
    return f"uv could not resolve {', '.join(specs)}: {one_line(_tail(text), 240)}"


def _tail(text: str) -> str:
    return re.sub(r"^(error:\s*)", "", text.strip(), flags=re.IGNORECASE)


def _request_key(specs: Sequence[str]) -> str:
    return f"{python_version()} {platform_name()} " + " ".join(sorted(s.replace(" ", "") for s in specs))


def _memo() -> dict[str, Any]:
    try:
        data = bounded_yaml.load_json((cache_root() / RESOLVED_FILE).read_bytes(), RESOLVED_FILE)
        return data if isinstance(data, dict) else {}
    except (OSError, KgitError):
        return {}


def _remember(request: str, pins: dict[str, str]) -> None:
    memo = _memo()
    if memo.get(request) == pins:
        return
    memo[request] = pins
    try:
        cache_root().mkdir(parents=True, exist_ok=True)
        write_json(cache_root() / RESOLVED_FILE, memo)
    except OSError:
        pass  # only an offline fallback is lost


# -- creating ---------------------------------------------------------------------------------------
def environment(specs: Sequence[str], *, log: Callable[[str], None] | None = None) -> Environment:
    """The environment of ``specs``: resolved, then found in the cache or created (see the module)."""
    start = time.monotonic()
    pins, notes = resolve(specs)
    key = env_key(pins, python_version(), platform_name())
    root = cache_root()
    env = Environment(key, root / key, pins, list(specs), python_version(), platform_name(), notes=notes)
    if _ready(env.path):
        env.reused, env.seconds = True, time.monotonic() - start
        return env
    root.mkdir(parents=True, exist_ok=True)
    busy = f"another kgit is making the environment {key} ({root}): wait for it and retry"
    waiting = (lambda: log(f"waiting for another kgit making environment {key}")) if log else None
    try:
        with exclusive(root / f"{key}.lock", busy, timeout=TIMEOUT, on_wait=waiting):
            _sweep(root)
            if _ready(env.path):  # made by the run we waited for
                env.reused = True
            else:
                if log:
                    log(f"creating environment {key} ({', '.join(specs)}) in {root}")
                _create(env)
    except BusyError as exc:
        raise EnvError(str(exc)) from None
    env.seconds = time.monotonic() - start
    return env


def _ready(path: Path) -> bool:
    return (path / RECORD_FILE).is_file() and (path / "bin" / "python").exists()


def _create(env: Environment) -> None:
    """Build ``env`` in a temporary folder beside its place and rename it there last; on any failure
    the temporary folder is removed and EnvError says that nothing was left behind."""
    tmp = env.path.with_name(f".{env.key}{_TMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    try:
        made = _run_uv(["venv", "--quiet", "--relocatable", "--python", _base_python(), str(tmp)])
        if made.returncode != 0:
            raise EnvError(f"`uv venv` failed: {one_line(_tail(made.stderr), 240)}")
        pins = "".join(f"{name}=={version}\n" for name, version in sorted(env.packages.items()))
        installed = _run_uv(
            ["pip", "sync", "--quiet", "--python", str(tmp / "bin" / "python"), "-"], stdin=pins, timeout=TIMEOUT
        )
        if installed.returncode != 0:
            problem = _resolve_problem(env.requested, installed.stderr)
            raise EnvError(
                problem
                if problem.startswith("no package index")
                else f"installing {', '.join(env.requested)} failed: {one_line(_tail(installed.stderr), 240)}"
            )
        write_json(
            tmp / RECORD_FILE,
            {
                "key": env.key,
                "packages": env.packages,
                "requested": env.requested,
                "python": env.python,
                "platform": env.platform,
                "created_seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
        if env.path.exists():  # a folder of this cache that lost its record: made again
            shutil.rmtree(env.path)
        os.rename(tmp, env.path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, EnvError):
            raise EnvError(
                f"creating the environment for {', '.join(env.requested)} failed: {exc}; "
                f"nothing was left behind in {env.path.parent}"
            ) from None
        raise


def _sweep(root: Path) -> None:
    """Remove the temporary folders of creations whose process is gone (killed outright)."""
    for entry in root.glob(f".*{_TMP_MARK}*"):
        pid = entry.name.rpartition(_TMP_MARK)[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    return pid != os.getpid() and running(pid)  # this process's own earlier attempt: not alive


def cached() -> list[dict[str, Any]]:
    """The records of every environment in the cache."""
    out = []
    root = cache_root()
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_dir() and _ready(path):
            try:
                out.append(
                    {**bounded_yaml.load_json((path / RECORD_FILE).read_bytes(), RECORD_FILE), "path": str(path)}
                )
            except (OSError, KgitError, TypeError):
                continue
    return out
