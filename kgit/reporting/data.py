"""What the registry report shows, read from git alone: releases, their metadata, stages, history.

Every release's metadata is read in one ``git cat-file --batch`` (a ``git show`` per version costs
seconds at 1,500 versions). Nothing here imports TensorFlow or DVC.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kgit.core.metadata import Metadata
from kgit.registry import catalog, stage_checks
from kgit.registry.catalog import HistoryEvent
from kgit.registry.diffing import Change, compare, metric_deltas
from kgit.registry.versions import check_name
from kgit.store.dvc_ops import MAX_DVC_FILE
from kgit.store.git_ops import Repo

KEY_METRICS = 4  # metric columns in a model's versions table (every metric has its chart)
COMPARE_STAGE = "prod"  # each version page compares with the version in this stage


@dataclass
class VersionView:
    """One release as the report shows it."""

    release: catalog.Release
    meta: Metadata | None  # None when the release is invalid
    problem: str | None  # why the release cannot be trusted (None: valid)
    metrics: dict[str, float]
    measured: tuple[str, ...]
    validated_here: float | None | bool  # max abs diff of this clone's last validation; False: never here
    deprecation_note: str | None = None  # the --note of `kgit deprecate`, if it was deprecated with one

    @property
    def name(self) -> str:
        return self.release.name

    @property
    def version(self) -> str:
        return self.release.version

    @property
    def page(self) -> str:
        """Path of the version's page, from the site's root."""
        return f"models/{self.name}/{self.version}.html"

    @property
    def size(self) -> int | None:
        sizes = [i.get("size") for i in self.release.formats.values()]
        return sum(s for s in sizes if isinstance(s, int)) if sizes and all(isinstance(s, int) for s in sizes) else None

    @property
    def who(self) -> str:
        return self.release.tagger.split(" <")[0] or self.release.tagger

    @property
    def created(self) -> str:
        text = (self.meta.created_at if self.meta else None) or self.release.created_at or self.release.date
        return text.replace("T", " ").replace("Z", "")[:19]

    @property
    def source_commit(self) -> str | None:
        return (self.meta.git.commit if self.meta else None) or self.release.source_commit

    @property
    def dataset(self) -> str:
        if self.meta is not None:
            ds = self.meta.dataset
            return ds.id or ds.path or "-"
        return self.release.dataset_id or "-"


@dataclass
class TimelineEvent(HistoryEvent):
    """A history event as the timeline shows it: who by name only, the tag's --note, rollbacks
    labelled "rolled back" (as ``kgit history`` shows them)."""


@dataclass
class Comparison:
    """A version against another (the previous one, or the stage holder)."""

    label: str  # "previous" or the stage
    other: VersionView
    changes: list[Change]  # every other metadata difference (kgit diff's sections)
    metrics: dict[str, dict[str, Any]]  # key -> kgit diff's metric delta (a: the other, b: this one)


@dataclass
class ModelView:
    name: str
    versions: list[VersionView]  # newest first
    timeline: list[TimelineEvent]  # newest first
    stages: dict[str, str]  # stage -> version holding it now
    directions: dict[str, str]  # metric -> "min" or "max"
    metric_keys: list[str] = field(default_factory=list)  # every metric of any version, sorted
    key_metrics: list[str] = field(default_factory=list)  # the table's metric columns

    @property
    def page(self) -> str:
        return f"models/{self.name}.html"

    @property
    def valid(self) -> list[VersionView]:
        return [v for v in self.versions if v.problem is None]

    def holder(self, stage: str) -> VersionView | None:
        """The valid version in ``stage`` now, if any."""
        version = self.stages.get(stage)
        return next((v for v in self.versions if v.version == version and v.problem is None), None) if version else None

    def comparisons(
        self, view: VersionView, previous: VersionView | None, holder: VersionView | None
    ) -> list[Comparison]:
        """``view`` against ``previous`` (the valid version before it) and ``holder`` (the version
        in COMPARE_STAGE, see ``holder``)."""
        if view.meta is None:
            return []
        found = [("previous", previous)] if previous is not None else []
        if holder is not None and holder is previous:
            found = [(f"previous and {COMPARE_STAGE}", previous)]  # one table, not the same one twice
        elif holder is not None and holder is not view:
            found.append((COMPARE_STAGE, holder))
        return [
            Comparison(
                label,
                other,
                [c for c in compare(other.release, other.meta, view.release, view.meta) if c.section != "metrics"],
                {d["key"]: d for d in metric_deltas(other.release, view.release, self.directions)},
            )
            for label, other in found
            if other is not None and other.meta is not None
        ]


def read_models(repo: Repo, names: list[str] | None = None) -> list[ModelView]:
    """The models to report (all, or ``names``), each with its versions and history."""
    reg = catalog.read(repo)
    wanted = list(dict.fromkeys(names)) if names else sorted({r.name for r in reg.releases})
    for name in wanted:
        check_name(name)
        if not any(r.name == name for r in reg.releases):
            raise catalog.no_model(repo, name)
    chosen = [r for r in reg.releases if r.name in wanted]
    texts = repo.show_files([(r.commit, r.dvc_file(f)) for r in chosen for f in r.formats], max_bytes=MAX_DVC_FILE)
    views = {r.tag: _version_view(repo, r, texts) for r in chosen}
    _mark_validated(repo, list(views.values()))
    notes = stage_checks.event_notes(repo, wanted)
    directions = _directions(repo)
    models = []
    for name in wanted:
        versions = sorted((v for v in views.values() if v.name == name), key=lambda v: v.release.key, reverse=True)
        rolled = stage_checks.rollbacks(repo, reg, name)
        timeline = [
            TimelineEvent(
                **{
                    **asdict(e),
                    "who": e.who.split(" <")[0] or e.who,
                    "note": notes.get(e.tag),
                    "event": "rolled back" if e.tag in rolled else e.event,
                }
            )
            for e in reg.events
            if e.name == name
        ]
        by_version = {v.version: v for v in versions}
        for e in sorted(timeline, key=lambda e: e.counter):  # a version's last deprecation tag is its own
            deprecated = by_version.get(e.version or "") if e.event == "deprecated" else None
            if deprecated is not None and deprecated.release.deprecated:
                deprecated.deprecation_note = e.note
        timeline.sort(key=lambda e: (e.when, e.tag), reverse=True)
        stages = {s: v.version for v in versions for s in v.release.stages}
        model = ModelView(name, versions, timeline, dict(sorted(stages.items())), directions)
        counts: dict[str, int] = {}
        for v in versions:
            for key in v.metrics:
                counts[key] = counts.get(key, 0) + 1
        model.metric_keys = sorted(counts)
        model.key_metrics = sorted(counts, key=lambda k: (k not in directions, -counts[k], k))[:KEY_METRICS]
        models.append(model)
    return models


def _version_view(repo: Repo, rel: catalog.Release, texts: dict[tuple[str, str], str | None]) -> VersionView:
    problems, meta = catalog.checked_metadata(repo, rel, texts)
    return VersionView(rel, meta, problems[0] if problems else None, dict(rel.metrics), tuple(rel.measured), False)


def _mark_validated(repo: Repo, views: list[VersionView]) -> None:
    """Which versions this clone validated (kgit validate's record, read only)."""
    from kgit.workflow.validating import Record

    record = Record(repo)
    for view in views:
        entries = [record.entry(view.release.tag, f) for f in view.release.formats]
        if view.release.formats and all(entries):
            diffs = [e.get("max_abs_diff") for e in entries]
            known = [d for d in diffs if isinstance(d, (int, float))]
            view.validated_here = max(known) if known else None


def _directions(repo: Repo) -> dict[str, str]:
    """Whether lower ("min") or higher ("max") is better, per metric, as the team's gates say."""
    from kgit.registry import gates

    return gates.directions(repo)


def metric_text(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.4g}"


def to_dict(model: ModelView) -> dict[str, Any]:
    """What ``kgit report --json`` says of a model."""
    return {
        "name": model.name,
        "page": model.page,
        "versions": len(model.versions),
        "invalid": sum(1 for v in model.versions if v.problem),
        "stages": model.stages,
        "metrics": model.metric_keys,
    }
