"""Stages and deprecation: ``kgit promote``, ``kgit demote``, ``kgit deprecate``.

Each is one annotated tag in GTO's grammar, so ``gto show`` and ``dvc artifacts get --stage`` agree
with kgit: ``NAME#STAGE#N`` (promote), ``NAME#STAGE!#N`` (demote), ``NAME@vX.Y.Z!#N`` (deprecate a
version). ``N`` is one more than the highest event counter of the model's tags, as GTO counts.
Stage and deprecation tags point at the version's release commit and travel with ``git push``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit import registry, txn
from kgit.errors import KgitError, one_line
from kgit.git_ops import Repo
from kgit.versions import Version, check_stage, deprecate_tag, stage_tag

GTO_CONFIG = ".gto"


@dataclass
class StageChange:
    event: str
    name: str
    version: str
    stage: str | None
    tag: str
    gates: list[str] = field(default_factory=list)  # the rules the promotion passed ("val.accuracy >= 0.9")

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "name": self.name, "version": self.version, "stage": self.stage, "tag": self.tag,
                "gates": list(self.gates)}


def allowed_stages(root: Path) -> list[str] | None:
    """Stages the team allows, from GTO's config file ``.gto`` (``stages: [dev, staging, prod]``)."""
    path = root / GTO_CONFIG
    if not path.exists():
        return None
    from kgit import bounded_yaml

    data = bounded_yaml.read_file(path, GTO_CONFIG, max_bytes=1 << 20, max_nodes=10_000,
                                  fix=f"fix it (`stages: [dev, staging, prod]`) or restore it with `git checkout -- {GTO_CONFIG}`")
    stages = data.get("stages") if isinstance(data, dict) else None
    # as error messages show them: a committed file must not make a refusal longer than one line
    return [one_line(s, 100) for s in stages] if isinstance(stages, list) and stages else None


def _check_stage(repo: Repo, stage: str) -> str:
    check_stage(stage)
    allowed = allowed_stages(repo.root)
    if allowed is not None and stage not in allowed:
        raise KgitError(f"unknown stage {stage!r}: {GTO_CONFIG} allows {', '.join(allowed)}")
    return stage


def _message(event: str, rel: registry.Release, stage: str | None, note: str | None,
             gates: list[str] | None = None) -> str:
    what = f"{event} {rel.name} {rel.version}" + (f" {'to' if event == 'promote' else 'from'} {stage}" if stage else "")
    body: dict[str, Any] = {"event": event, "name": rel.name, "version": rel.version, "stage": stage, "release": rel.tag}
    if gates:  # the rules this promotion passed, and the metrics they were judged on
        body["gates"] = gates
        body["metrics"] = rel.metrics
    return f"kgit {what}\n\n" + (f"{note}\n\n" if note else "") + f"kgit-event: {json.dumps(body)}\n"


def event_note(message: str) -> str | None:
    """The note an event tag's message carries (written by ``_message``), or None."""
    lines = message.split("\n")
    ends = [i for i, line in enumerate(lines) if line.startswith("kgit-event:")]
    note = "\n".join(lines[1:ends[-1]] if ends else lines[1:]).strip()
    return note or None


def promote(repo: Repo, name: str, version: str, stage: str, *, note: str | None = None, progress: Any = None,
            require: Sequence[str] = (), require_better: Sequence[str] = ()) -> StageChange:
    """Put ``name@version`` in ``stage`` (validating it first if it has not been validated here), if
    its metrics pass the ``require`` rules ("val.accuracy>=0.9"), beat the version in the stage now on
    the ``require_better`` keys, and pass the gates committed in ``.kgit/gates.yaml`` (kgit.gates)."""
    from kgit import gates, validating

    _check_stage(repo, stage)
    # the rules' syntax first, before the lock and any reading
    for rule in require:
        gates.parse_rule(rule)
    for key in require_better:
        gates.better_rule(key)
    with txn.writing(repo):
        reg = registry.read(repo, name)
        rel = registry.resolve(repo, name, version)
        if rel.deprecated:
            raise KgitError(f"{name}@{rel.version} is deprecated: it cannot be promoted (release a new version)")
        if stage in rel.stages:
            raise KgitError(f"{name}@{rel.version} is already in {stage}")
        # git only: a promotion the gates refuse costs no validation
        rules = gates.check_promotion(repo, reg, rel, stage, require=require,
                                      require_better=require_better)
        targets = [validating.Target(rel, fmt) for fmt in rel.formats]
        results = validating.check(repo, targets, progress=progress)
        bad = [r for r in results if not r.ok]
        if bad:
            r = bad[0]
            raise KgitError(f"cannot promote {name}@{rel.version}: {r.format} {r.check} check {r.status}: {r.reason()}")
        tag = stage_tag(name, stage, reg.max_counter.get(name, 0) + 1)
        passed = [r.text for r in rules]
        repo.create_tag(tag, rel.commit, _message("promote", rel, stage, note, passed))
    return StageChange("promoted", name, rel.version, stage, tag, passed)



def demote(repo: Repo, name: str, stage: str, *, note: str | None = None) -> StageChange:
    """Take ``stage`` away from the version that holds it."""
    check_stage(stage)
    with txn.writing(repo):
        reg = registry.read(repo, name)
        holder = next((r for r in reg.releases if stage in r.stages), None)
        if holder is None:
            raise KgitError(f"no version of {name} is in stage {stage!r}: nothing to demote")
        tag = stage_tag(name, stage, reg.max_counter.get(name, 0) + 1, cancel=True)
        repo.create_tag(tag, holder.commit, _message("demote", holder, stage, note))
    return StageChange("demoted", name, holder.version, stage, tag)


def deprecate(repo: Repo, name: str, version: str, *, note: str | None = None) -> StageChange:
    """Mark ``name@version`` deprecated: its data stays; it can no longer be promoted or be ``latest``."""
    with txn.writing(repo):
        reg = registry.read(repo, name)
        if version == "latest" or version.startswith("#"):
            raise KgitError("name the version to deprecate explicitly (NAME@vN), not latest or a stage")
        rel = registry.resolve(repo, name, version)
        if rel.deprecated:
            raise KgitError(f"{name}@{rel.version} is already deprecated")
        if rel.stages:
            raise KgitError(f"{name}@{rel.version} is in {', '.join(rel.stages)}: demote it first "
                            f"(kgit demote {name} {rel.stages[0]}) or promote another version there")
        tag = deprecate_tag(name, Version.parse(rel.version), reg.max_counter.get(name, 0) + 1)
        repo.create_tag(tag, rel.commit, _message("deprecate", rel, None, note))
    return StageChange("deprecated", name, rel.version, None, tag)
