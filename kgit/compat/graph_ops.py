"""Which TensorFlow ops a SavedModel's graph uses, and whether a TensorFlow (Serving) version has them.

``saved_model_ops(path)`` reads ``saved_model.pb`` with kgit.core.protowire, no TensorFlow: the
``op`` of every node of the serving meta graph's graph and of every function in its library, less
the library's own function names (a node calling a function names it as its op).

``tf_ops("2.18")`` is the set of ops registered in TensorFlow 2.18 (TensorFlow Serving 2.18 is built
on it): computed once by kgit.compat.env_loader in an environment with ``tensorflow==2.18.*``
(kgit.compat.envs) and kept in ``$XDG_CACHE_HOME/kgit/ops/tensorflow-VERSION.json``; a version
whose op set is there needs no environment, no network.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from kgit.compat import envs
from kgit.core import bounded_yaml, forkserver
from kgit.core.errors import KgitError, one_line
from kgit.core.protowire import fields, strings
from kgit.store.clone_state import write_json

SAVED_MODEL_FILE = "saved_model.pb"
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,2}$")
# field numbers of tensorflow/core/protobuf/{saved_model,meta_graph}.proto and framework/{graph,function,node_def,op_def}.proto
_META_GRAPHS, _META_INFO, _GRAPH_DEF, _TAGS, _TF_VERSION = 2, 1, 2, 4, 5
_NODE, _LIBRARY, _FUNCTION, _SIGNATURE, _NODE_DEF, _NAME, _OP = 1, 2, 1, 1, 3, 1, 2


def saved_model_ops(path: Path) -> tuple[set[str], str | None]:
    """(the ops ``path`` (a saved_model.pb) uses, the TensorFlow version that wrote it, if recorded)."""
    try:
        data = path.read_bytes()
        graphs = [g for n, g in fields(data) if n == _META_GRAPHS and isinstance(g, bytes)]
        if not graphs:
            raise ValueError("no meta graph")
        chosen = next((g for g in graphs if "serve" in _tags(g)), graphs[0])
        ops: set[str] = set()
        functions: set[str] = set()
        written_by = None
        for number, value in fields(chosen):
            if number == _META_INFO and isinstance(value, bytes):
                written_by = next(iter(strings(value, _TF_VERSION)), None)
            if number != _GRAPH_DEF or not isinstance(value, bytes):
                continue
            for n, part in fields(value):
                if n == _NODE and isinstance(part, bytes):
                    ops.update(strings(part, _OP))
                elif n == _LIBRARY and isinstance(part, bytes):
                    for fn_number, fn in fields(part):
                        if fn_number != _FUNCTION or not isinstance(fn, bytes):
                            continue
                        for k, v in fields(fn):
                            if k == _SIGNATURE and isinstance(v, bytes):
                                functions.update(strings(v, _NAME))
                            elif k == _NODE_DEF and isinstance(v, bytes):
                                ops.update(strings(v, _OP))
    except (OSError, ValueError) as exc:
        raise KgitError(f"cannot read the graph of {path} ({one_line(exc, 120)}): is it a SavedModel?") from None
    return ops - functions, written_by


def _tags(meta_graph: bytes) -> list[str]:
    info = next((v for n, v in fields(meta_graph) if n == _META_INFO and isinstance(v, bytes)), b"")
    return strings(info, _TAGS)


def ops_dir() -> Path:
    return envs.cache_root().parent / "ops"


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version.strip()):
        raise KgitError(
            f"--tf-serving-version {str(version)[:40]!r}: give a TensorFlow Serving version such as 2.18 or 2.18.1"
        )
    return version.strip()


def tf_ops(version: str, log: object = None) -> tuple[set[str], str]:
    """(the ops TensorFlow ``version`` registers, the exact TensorFlow version they come from)."""
    from packaging.specifiers import SpecifierSet

    version = check_version(version)
    spec = f"tensorflow=={version}" + (".*" if version.count(".") < 2 else "")
    wanted = SpecifierSet(spec[len("tensorflow") :])
    for cached in sorted(ops_dir().glob("tensorflow-*.json"), reverse=True):
        exact = cached.stem[len("tensorflow-") :]
        if wanted.contains(exact, prereleases=True):
            try:
                data = bounded_yaml.load_json(cached.read_bytes(), cached.name)
                return set(data["ops"]), exact
            except (OSError, KgitError, KeyError, TypeError):
                cached.unlink(missing_ok=True)
    env = envs.environment([spec], log=log if callable(log) else None)
    with tempfile.TemporaryDirectory(prefix="kgit-ops-") as tmp:
        result = Path(tmp) / "ops.json"
        from kgit.compat.checking import LOADER

        proc = subprocess.run(
            [str(env.python_exe), "-I", str(LOADER), "ops", str(result)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
            env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
            preexec_fn=forkserver.dies_with_this_process(),
        )
        try:
            data = bounded_yaml.load_json(result.read_bytes(), "the op list")
        except (OSError, KgitError):
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise KgitError(
                f"could not list the ops of TensorFlow {version} in environment {env.key}: "
                f"{one_line(lines[-1] if lines else 'no output', 200)}"
            ) from None
    exact = str(data.get("tensorflow") or version)
    ops_dir().mkdir(parents=True, exist_ok=True)
    write_json(ops_dir() / f"tensorflow-{exact}.json", {"ops": data["ops"], "tensorflow": exact, "env": env.key})
    return set(data["ops"]), exact
