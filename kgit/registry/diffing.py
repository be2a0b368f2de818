"""``kgit diff``: what changed between two releases, read from git alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kgit.core import metrics
from kgit.core.metadata import Metadata
from kgit.core.metrics import check_known
from kgit.registry import catalog, gates
from kgit.registry.versions import parse_ref
from kgit.store.git_ops import Repo

ABSENT = None
SECTIONS = (
    "metrics",
    "hyperparameters",
    "training",
    "dataset",
    "signature",
    "formats",
    "sizes",
    "libraries",
    "source",
    "reference",
)


@dataclass
class Change:
    section: str
    key: str
    a: Any
    b: Any


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "(value)": value}


def _view(rel: catalog.Release, meta: Metadata) -> dict[str, dict[str, Any]]:
    sig = meta.signature
    return {
        "metrics": dict(rel.metrics),
        "hyperparameters": _flatten(meta.hyperparameters),
        "training": _flatten(meta.training),
        "dataset": {"id": meta.dataset.id, "path": meta.dataset.path, "dvc_hash": meta.dataset.dvc_hash},
        "signature": {
            **{f"input {s.name}": f"{s.shape} {s.dtype}" for s in sig.inputs},
            **{f"output {s.name}": f"{s.shape} {s.dtype}" for s in sig.outputs},
        },
        "formats": {f: "yes" for f in rel.formats},
        "sizes": {f: info.get("size") for f, info in rel.formats.items()},
        "libraries": dict(meta.libraries),
        "source": {"commit": meta.git.commit, "branch": meta.git.branch, "dirty": meta.git.dirty},
        "reference": {
            "atol": meta.reference.atol,
            "inputs_sha256": meta.reference.inputs_sha256,
            "outputs_sha256": meta.reference.outputs_sha256,
        },
    }


def compare(rel_a: catalog.Release, meta_a: Metadata, rel_b: catalog.Release, meta_b: Metadata) -> list[Change]:
    """What differs from release A to release B, section by section, from what was read of each."""
    views = [_view(rel_a, meta_a), _view(rel_b, meta_b)]
    changes = []
    for section in SECTIONS:
        a, b = views[0][section], views[1][section]
        for key in list(dict.fromkeys([*a, *b])):
            va, vb = a.get(key, ABSENT), b.get(key, ABSENT)
            if va != vb:
                changes.append(Change(section, key, va, vb))
    return changes


def diff(repo: Repo, ref_a: str, ref_b: str, *, metrics: Sequence[str] = ()) -> dict[str, Any]:
    """Changes from release A to release B, section by section (only what differs), and under
    ``metrics`` every metric of either release (or only the keys ``metrics`` names) with its old
    and new value and the delta."""
    rels = []
    for ref in (ref_a, ref_b):
        name, version = parse_ref(ref)
        rels.append(catalog.resolve(repo, name, version))
    label = [f"{r.name}@{r.version}" for r in rels]
    for key in metrics:
        check_known(key, [*rels[0].metrics, *rels[1].metrics], "--metric", f"{label[0]} or {label[1]}")
    changes = compare(rels[0], catalog.metadata(repo, rels[0]), rels[1], catalog.metadata(repo, rels[1]))
    deltas = metric_deltas(rels[0], rels[1], gates.directions(repo))
    if metrics:  # only those, in the order asked
        deltas = [d for key in dict.fromkeys(metrics) for d in deltas if d["key"] == key]
        changes = [c for c in changes if c.section != "metrics" or c.key in metrics]
    return {"a": label[0], "b": label[1], "changes": [asdict(c) for c in changes], "metrics": deltas}


def metric_deltas(a: catalog.Release, b: catalog.Release, directions: dict[str, str]) -> list[dict[str, Any]]:
    """Every metric of either release: its old and new value, the delta (new - old), the direction
    (max: higher is better; declared in ``directions``, else from the key's name) and whether B is better, worse or the same ("-" when one side lacks it)."""
    out = []
    for key in dict.fromkeys([*a.metrics, *b.metrics]):
        va, vb = a.metrics.get(key), b.metrics.get(key)
        direction = metrics.direction(key, directions)
        if va is None or vb is None:
            verdict = "-"
        elif va == vb:
            verdict = "same"
        else:
            verdict = "better" if metrics.is_better(vb, va, direction) else "worse"
        out.append(
            {
                "key": key,
                "a": va,
                "b": vb,
                "delta": metrics.delta(va, vb),
                "direction": direction,
                "verdict": verdict,
                "measured": [key in a.measured, key in b.measured],
            }
        )
    return out
