"""``kgit compat NAME@VERSION --with ... --env ...``: does a release load in other environments?

For each environment asked for (the ``--with`` specifiers together form one; each ``--env NAME`` is
one from ``.kgit/compat.yaml``): get it ready (kgit.compat.envs: resolved, cached or created), run
kgit.compat.env_loader with the environment's own Python on the release's formats present here
(verified against the release first, and their configuration scanned as ``kgit validate`` does), and
judge each format against the release's recorded reference outputs within its tolerance. One
result per environment, the worst of its formats: ``loads``, ``loads-but-differs (max diff 3e-4)``
or ``fails (<first line of the error>)``; each recorded as a compat tag (kgit.registry.compat_records)
unless that environment's record is already there.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit.compat import envs as envs_mod
from kgit.core import bounded_yaml, forkserver, layout
from kgit.core.errors import KgitError, ReleaseNotFoundError, one_line
from kgit.core.metadata import METADATA_FILE, Metadata
from kgit.registry import catalog, compat_envs
from kgit.registry.compat_records import CompatRecord, worst
from kgit.store.git_ops import Repo

LOADER = Path(__file__).with_name("env_loader.py")
RUN_TIMEOUT = float(os.environ.get("KGIT_COMPAT_RUN_TIMEOUT", "900"))
LOADABLE = ("savedmodel", "keras", "h5")  # weights need the release's builder code to make a model


@dataclass(frozen=True)
class EnvRequest:
    """One environment to check in: its specifiers, and its name in .kgit/compat.yaml if it has one."""

    specs: tuple[str, ...]
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or " ".join(self.specs)

    @property
    def flavour(self) -> str:
        """Keras 2 readers (``tf-keras`` asked for) load with tf_keras, the others with Keras 3."""
        from kgit.registry.compat_records import package_requirements

        return "tf_keras" if "tf-keras" in package_requirements(self.specs) else "keras"


@dataclass
class EnvOutcome:
    """One environment's result for the release, and where it is recorded."""

    request: EnvRequest
    env: envs_mod.Environment
    record: CompatRecord
    recorded: str  # "recorded" (new tag), "already recorded" (the tag was there), "not recorded"
    seconds: float = 0.0  # running the loader
    earlier: str | None = None  # the recorded result, when it differs from this run's

    @property
    def line(self) -> str:
        return f"{self.request.label} ({self.record.describe_env(_names(self.request.specs))}): {self.record.text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.request.label,
            "env": self.request.name,
            "requested": list(self.request.specs),
            "flavour": self.request.flavour,
            "summary": self.record.text,
            "result": self.record.result,
            "max_diff": self.record.max_diff,
            "error": self.record.error,
            "formats": self.record.formats,
            "key": self.record.key,
            "tag": self.record.tag_name(),
            "recorded": self.recorded,
            "earlier": self.earlier,
            "packages": self.record.packages,
            "path": str(self.env.path),
            "reused": self.env.reused,
            "env_seconds": round(self.env.seconds, 3),
            "run_seconds": round(self.seconds, 3),
            "notes": self.env.notes,
        }


@dataclass
class CompatReport:
    name: str
    version: str
    tag: str
    formats: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why it was not checked
    outcomes: list[EnvOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.record.result == "loads" for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "tag": self.tag,
            "formats": self.formats,
            "skipped": self.skipped,
            "ok": self.ok,
            "environments": [o.to_dict() for o in self.outcomes],
        }


def _names(specs: Sequence[str]) -> list[str]:
    from kgit.registry.compat_records import package_requirements

    return package_requirements(specs)


def requests(repo: Repo, with_specs: Sequence[str], env_names: Sequence[str]) -> list[EnvRequest]:
    """The environments asked for: the ``--with`` specifiers as one, then each ``--env NAME`` as
    ``.kgit/compat.yaml`` in the work tree defines it."""
    out = []
    if with_specs:
        out.append(EnvRequest(tuple(envs_mod.check_specs(with_specs))))
    if env_names:
        defined = compat_envs.read_file(repo.root / compat_envs.ENVS_FILE)
        for name in env_names:
            out.append(EnvRequest(tuple(compat_envs.lookup(defined, name)), name))
    if not out:
        raise KgitError(
            'name an environment: --with "keras==3.12.*" (repeat --with for more packages in it) '
            f"or --env NAME from {compat_envs.ENVS_FILE}"
        )
    return out


def check(
    repo: Repo,
    name: str,
    version: str,
    envs: Sequence[EnvRequest],
    *,
    record: bool = True,
    unsafe: bool = False,
    log: Callable[[str], None] | None = None,
) -> CompatReport:
    """Check ``name@version`` in each environment of ``envs`` (see the module)."""
    rel = catalog.resolve(repo, name, version)
    artifacts, skipped, custom = _artifacts(repo, rel, unsafe)
    report = CompatReport(rel.name, rel.version, rel.tag, [a["format"] for a in artifacts], skipped)
    existing = {c.key: c for c in rel.compat}
    for request in envs:
        env = envs_mod.environment(request.specs, log=log)
        if log:
            log(
                f"{'reusing' if env.reused else 'created'} environment {env.key} ({request.label}) in {env.seconds:.1f} s; "
                f"loading {rel.name}@{rel.version} there"
            )
        started = time.monotonic()
        results = _run(env, request, artifacts, custom, repo.root)
        rec = CompatRecord(
            rel.name,
            rel.version,
            env.key,
            worst(r["result"] for r in results.values()),
            dict(env.packages),
            env.python,
            env.platform,
            formats=results,
            requested=list(request.specs),
            env=request.name,
            atol=max((a["atol"] for a in artifacts), default=None),
        )
        bad = next((r for r in results.values() if r["result"] == rec.result and r["result"] != "loads"), None)
        if bad is not None:
            rec.max_diff, rec.error = bad["max_diff"], bad["error"]
            if rec.error and len(results) > 1:
                fmt = next(f for f, r in results.items() if r is bad)
                rec.error = f"{fmt}: {rec.error}"
        outcome = EnvOutcome(request, env, rec, "not recorded", time.monotonic() - started)
        if env.key in existing:
            outcome.recorded = "already recorded"
            if existing[env.key].text != rec.text:
                outcome.earlier = existing[env.key].text
        elif record:
            _record(repo, rel, rec)
            outcome.recorded = "recorded"
        report.outcomes.append(outcome)
    return report


def _artifacts(
    repo: Repo, rel: catalog.Release, unsafe: bool
) -> tuple[list[dict[str, Any]], dict[str, str], list[str]]:
    """(what the loader checks: one entry per loadable format present here, verified; the formats
    not checked and why; the custom objects the release names)."""
    from kgit.workflow import validating

    artifacts, skipped, custom = [], {}, []
    for fmt, info in rel.formats.items():
        folder = repo.root / str(info["path"])
        if fmt not in LOADABLE:
            skipped[fmt] = "loading it needs the release's builder code"
            continue
        if not (folder / METADATA_FILE).exists():
            skipped[fmt] = f"its data is not here (kgit get {rel.name}@{rel.version} -f {fmt})"
            continue
        meta = validating.verified_metadata(repo, rel, fmt)
        failed, allowed = validating.code_check(repo, validating.Target(rel, fmt), meta, unsafe)
        if failed is not None:
            raise KgitError(str(failed.error).replace("kgit validate --unsafe", "kgit compat --unsafe"))
        artifacts.append(_artifact(folder, fmt, meta, allowed))
        custom += [s for s in meta.custom_objects if s not in custom]
    if not artifacts:
        missing = [f for f in rel.formats if f in LOADABLE]
        if not missing:
            raise ReleaseNotFoundError(
                f"{rel.name}@{rel.version} has no format an environment can load alone "
                f"(it has {', '.join(rel.formats)}; savedmodel, keras and h5 can be checked)"
            )
        raise KgitError(
            f"the data of {rel.name}@{rel.version} is not here: run `kgit get {rel.name}@{rel.version}` "
            "first (compat loads the formats present in this work tree)"
        )
    return artifacts, skipped, custom


def _artifact(folder: Path, fmt: str, meta: Metadata, unsafe: bool) -> dict[str, Any]:
    from kgit.models.formats import MODEL_FILES

    sig = meta.signature
    return {
        "format": fmt,
        "path": str(folder if fmt == "savedmodel" else folder / MODEL_FILES[fmt]),
        "inputs": str(folder / meta.reference.inputs_file),
        "outputs": str(folder / meta.reference.outputs_file),
        "atol": meta.reference.atol,
        "input_names": [s.name for s in sig.inputs],
        "output_names": [s.name for s in sig.outputs],
        "input_structure": sig.input_structure,
        "output_structure": sig.output_structure,
        "safe_mode": not unsafe,
    }


def _run(
    env: envs_mod.Environment, request: EnvRequest, artifacts: list[dict[str, Any]], custom: list[str], root: Path
) -> dict[str, dict[str, Any]]:
    """Run the loader in ``env``; format -> {result, max_diff, error}. A loader that cannot run at all
    (the environment's Python crashes, no TensorFlow there) makes every format fail with its reason."""
    with tempfile.TemporaryDirectory(prefix="kgit-compat-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(
            json.dumps(
                {
                    "flavour": request.flavour,
                    layout.ARTIFACTS_DIR: artifacts,
                    "custom_objects": custom,
                    "paths": [str(root)],
                }
            )
        )
        env_vars = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TF_USE_LEGACY_KERAS", "KERAS_BACKEND")
        }
        env_vars["TF_CPP_MIN_LOG_LEVEL"] = "3"
        data: Any = None
        try:
            proc = subprocess.run(
                [str(env.python_exe), "-I", str(LOADER), "check", str(spec), str(result)],
                cwd=root,
                env=env_vars,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=forkserver.dies_with_this_process(),
            )
            lines = [line for line in (proc.stderr or "").splitlines() if line.strip()]
            why = f"the environment's Python exited {proc.returncode}: {one_line(lines[-1] if lines else 'no output', 200)}"
            data = bounded_yaml.load_json(result.read_bytes(), "the loader's result") if result.exists() else None
        except subprocess.TimeoutExpired:
            why = f"loading took more than {RUN_TIMEOUT:.0f} s"
        except ValueError:
            why = "the loader wrote no readable result"
    if not isinstance(data, dict) or not isinstance(data.get("formats"), list):
        return {a["format"]: {"result": "fails", "max_diff": None, "error": why} for a in artifacts}
    return {
        r["format"]: {
            "result": r.get("result", "fails"),
            "max_diff": r.get("max_diff"),
            "error": one_line(r["error"], 400) if r.get("error") else None,
        }
        for r in data["formats"]
        if isinstance(r, dict) and r.get("format") in LOADABLE
    }


def _record(repo: Repo, rel: catalog.Release, rec: CompatRecord) -> None:
    """Write ``rec`` as its compat tag on the release commit (nothing else changes)."""
    from kgit.store import txn

    rec.commit = rel.commit
    tag = rec.tag_name()
    with txn.writing(repo):
        if not repo.tag_exists(tag):
            from kgit.registry.seen import SeenRecord

            # a record deleted here (never shared, or refused by a push) is made afresh: what this
            # clone saw under its name no longer counts
            SeenRecord(repo).forget(tag)
            repo.create_tag(tag, rel.commit, rec.message())
