"""Stages and deprecation: ``kgit promote``, ``kgit rollback``, ``kgit demote``, ``kgit deprecate``.

Each is one annotated tag in GTO's grammar, so ``gto show`` and ``dvc artifacts get --stage`` agree
with kgit: ``NAME#STAGE#N`` (promote; a rollback is a promotion whose message says so),
``NAME#STAGE!#N`` (demote), ``NAME@vX.Y.Z!#N`` (deprecate a version). ``N`` is one more than the
highest event counter of the model's tags, as GTO counts; what else a new tag must satisfy (the
same for these commands and the push hooks): kgit.registry.stage_checks. Stage and deprecation tags point
at the version's release commit and travel with ``git push``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError, did_you_mean, one_line
from kgit.registry import catalog, stage_checks
from kgit.registry.gates import Rule
from kgit.registry.stage_checks import EVENT_MARK, ROLLBACK, StageLog
from kgit.registry.versions import Version, check_stage, deprecate_tag, stage_tag
from kgit.store import txn
from kgit.store.git_ops import Repo

GTO_CONFIG = ".gto"


@dataclass
class StageChange:
    event: str
    name: str
    version: str
    stage: str | None
    tag: str
    gates: list[str] = field(default_factory=list)  # the rules the promotion passed ("val.accuracy >= 0.9")
    replaced: str | None = None  # a rollback: the version it takes the stage back from

    def to_dict(self) -> dict[str, Any]:
        out = {
            "event": self.event,
            "name": self.name,
            "version": self.version,
            "stage": self.stage,
            "tag": self.tag,
            "gates": list(self.gates),
        }
        return {**out, "from": self.replaced} if self.event == "rolled back" else out


def allowed_stages(root: Path) -> list[str] | None:
    """Stages the team allows, from GTO's config file ``.gto`` (``stages: [dev, staging, prod]``)."""
    path = root / GTO_CONFIG
    if not path.exists():
        return None
    from kgit.core import bounded_yaml

    data = bounded_yaml.read_file(
        path,
        GTO_CONFIG,
        max_bytes=1 << 20,
        max_nodes=10_000,
        fix=f"fix it (`stages: [dev, staging, prod]`) or restore it with `git checkout -- {GTO_CONFIG}`",
    )
    stages = data.get("stages") if isinstance(data, dict) else None
    # as error messages show them: a committed file must not make a refusal longer than one line
    return [one_line(s, 100) for s in stages] if isinstance(stages, list) and stages else None


def _check_stage(repo: Repo, stage: str) -> str:
    check_stage(stage)
    allowed = allowed_stages(repo.root)
    if allowed is not None and stage not in allowed:
        raise KgitError(
            f"unknown stage {stage!r}: " + did_you_mean(stage, allowed, f"{GTO_CONFIG} allows {', '.join(allowed)}")
        )
    return stage


def _message(
    event: str,
    rel: catalog.Release,
    stage: str | None,
    note: str | None,
    gates: list[str] | None = None,
    replaced: str | None = None,
) -> str:
    """The tag message; its last line, ``kgit-event: {JSON}``, is what kgit.registry.stage_checks reads."""
    if event == ROLLBACK:
        what = f"roll {stage} of {rel.name} back to {rel.version}" + (f" from {replaced}" if replaced else "")
    else:
        what = f"{event} {rel.name} {rel.version}" + (
            f" {'to' if event == 'promote' else 'from'} {stage}" if stage else ""
        )
    body: dict[str, Any] = {
        "event": event,
        "name": rel.name,
        "version": rel.version,
        "stage": stage,
        "release": rel.tag,
    }
    if replaced:
        body["from"] = replaced
    if gates:  # the rules this promotion passed, and the metrics they were judged on
        body["gates"] = gates
        body["metrics"] = rel.metrics
    return f"kgit {what}\n\n" + (f"{note}\n\n" if note else "") + f"{EVENT_MARK} {json.dumps(body)}\n"


def promote(
    repo: Repo,
    name: str,
    version: str,
    stage: str,
    *,
    note: str | None = None,
    progress: Any = None,
    require: Sequence[str] = (),
    require_better: Sequence[str] = (),
) -> StageChange:
    """Put ``name@version`` in ``stage`` (validating it first if it has not been validated here), if
    its metrics pass the ``require`` rules ("val.accuracy>=0.9"), beat the stage's last holder on
    the ``require_better`` keys, and pass the gates committed in ``.kgit/gates.yaml`` (kgit.registry.gates)."""
    from kgit.registry import gates

    _check_stage(repo, stage)
    # the rules' syntax first, before the lock and any reading
    for rule in require:
        gates.parse_rule(rule)
    for key in require_better:
        gates.better_rule(key)
    with txn.writing(repo):
        reg = catalog.read(repo, name)
        rel = catalog.resolve(repo, name, version)
        if rel.deprecated:
            raise KgitError(f"{name}@{rel.version} is deprecated: it cannot be promoted (release a new version)")
        if stage in rel.stages:
            raise KgitError(f"{name}@{rel.version} is already in {stage}")
        log = StageLog.of(reg)
        # git only: a promotion the gates refuse costs no validation
        rules = stage_checks.check_promotion(repo, log, rel, stage, require=require, require_better=require_better)
        tag = _validated_tag(repo, log, rel, stage, "promote", note, rules, progress)
    return StageChange("promoted", name, rel.version, stage, tag, [r.text for r in rules])


def rollback(
    repo: Repo, name: str, stage: str, *, to: str | None = None, note: str | None = None, progress: Any = None
) -> StageChange:
    """Put back in ``stage`` a version that held it before: ``to``, or by default the one that held
    it before its current (or, if demoted, last) holder. The gates apply as to ``promote``, but
    the require_better rules of entries with ``allow_rollback: true`` (kgit.registry.stage_checks)."""
    _check_stage(repo, stage)
    with txn.writing(repo):
        reg = catalog.read(repo, name)
        log = StageLog.of(reg)
        holders = log.holders(name, stage)
        if not holders:
            raise KgitError(
                f"no version of {name} has ever been in {stage}: there is nothing to roll back to "
                f"(`kgit promote {name}@VERSION {stage}` puts one there)"
            )
        last = log.release(name, holders[-1])
        held = (
            ", ".join(dict.fromkeys(r.version for c in reversed(holders) if (r := log.release(name, c))))
            or "none valid"
        )
        if to is None:
            before = next((c for c in reversed(holders) if c != holders[-1]), None)
            if before is None:
                raise KgitError(
                    f"only {last.version if last else holders[-1][:8]} of {name} has been in {stage}: "
                    "there is no earlier version to roll back to"
                )
            found = log.release(name, before)
            if found is None:
                raise KgitError(
                    f"the version of {name} in {stage} before the last one (commit {before[:8]}) is not a "
                    f"valid release: name one with --to (versions that held {stage}: {held})"
                )
            rel = catalog.resolve(repo, name, found.version)  # its .dvc files checked, as for --to
        else:
            rel = catalog.resolve(repo, name, to)
            if rel.commit not in holders:
                raise KgitError(
                    f"{name}@{rel.version} has never been in {stage} (versions that have: {held}): a rollback "
                    f"goes back to one of them; `kgit promote` puts a new version there"
                )
        if rel.deprecated:
            raise KgitError(
                f"{name}@{rel.version} is deprecated: it cannot go back to {stage}; name another version "
                f"with --to (versions that held {stage}: {held})"
            )
        if log.current(name, stage) == rel.commit:
            raise KgitError(f"{name}@{rel.version} is already in {stage}")
        rules = stage_checks.check_promotion(repo, log, rel, stage, rollback=True)
        replaced = last.version if last is not None else None
        tag = _validated_tag(repo, log, rel, stage, ROLLBACK, note, rules, progress, replaced)
    return StageChange("rolled back", name, rel.version, stage, tag, [r.text for r in rules], replaced)


def _validated_tag(
    repo: Repo,
    log: StageLog,
    rel: catalog.Release,
    stage: str,
    event: str,
    note: str | None,
    rules: list[Rule],
    progress: Any,
    replaced: str | None = None,
) -> str:
    """Validate ``rel`` (unless already validated here at its current content), then tag it into ``stage``."""
    from kgit.workflow import validating

    targets = [validating.Target(rel, fmt) for fmt in rel.formats]
    results = validating.check(repo, targets, progress=progress)
    bad = [r for r in results if not r.ok]
    if bad:
        r = bad[0]
        raise KgitError(f"cannot {event} {rel.name}@{rel.version}: {r.format} {r.check} check {r.status}: {r.reason()}")
    tag = stage_tag(rel.name, stage, log.next_counter(rel.name))
    _create_tag(
        repo, log, rel.name, tag, rel.commit, _message(event, rel, stage, note, [r.text for r in rules], replaced)
    )
    return tag


def _create_tag(repo: Repo, log: StageLog, name: str, tag: str, commit: str, message: str) -> None:
    """Make the event tag ``tag`` of model ``name``. Its name is the model's next counter, so a tag
    of that name this clone saw before was deleted here (a push refused it): what was seen under it
    no longer counts.

    GTO orders a model's events by their tags' dates, which git writes in whole seconds: a tag made
    in the same second as the model's newest one waits for the next second (at most one), so that
    ``gto show`` and ``dvc artifacts get --stage`` see them in the order they were made."""
    from kgit.registry.seen import SeenRecord

    newest = log.latest.get(name)
    # Git reads the time with time(2), a clock that runs up to a kernel tick (4-10 ms) behind
    # Python's: wait for 50 ms past the second. A tag from a clock ahead of this one's (by more than
    # a second) is left alone.
    while newest is not None and 0 < (wait := newest.timestamp() + 1.05 - time.time()) <= 1.05:
        time.sleep(wait)
    if not repo.tag_exists(tag):
        SeenRecord(repo).forget(tag)
    repo.create_tag(tag, commit, message)


def demote(repo: Repo, name: str, stage: str, *, note: str | None = None) -> StageChange:
    """Take ``stage`` away from the version that holds it."""
    check_stage(stage)
    with txn.writing(repo):
        reg = catalog.read(repo, name)
        holder = next((r for r in reg.releases if stage in r.stages), None)
        if holder is None:
            raise KgitError(f"no version of {name} is in stage {stage!r}: nothing to demote")
        log = StageLog.of(reg)
        tag = stage_tag(name, stage, log.next_counter(name), cancel=True)
        _create_tag(repo, log, name, tag, holder.commit, _message("demote", holder, stage, note))
    return StageChange("demoted", name, holder.version, stage, tag)


def deprecate(repo: Repo, name: str, version: str, *, note: str | None = None) -> StageChange:
    """Mark ``name@version`` deprecated: its data stays; it can no longer be promoted or be ``latest``."""
    with txn.writing(repo):
        reg = catalog.read(repo, name)
        if version == "latest" or version.startswith("#"):
            raise KgitError("name the version to deprecate explicitly (NAME@vN), not latest or a stage")
        rel = catalog.resolve(repo, name, version)
        if rel.deprecated:
            raise KgitError(f"{name}@{rel.version} is already deprecated")
        if rel.stages:
            raise KgitError(
                f"{name}@{rel.version} is in {', '.join(rel.stages)}: demote it first "
                f"(kgit demote {name} {rel.stages[0]}) or promote another version there"
            )
        log = StageLog.of(reg)
        tag = deprecate_tag(name, Version.parse(rel.version), log.next_counter(name))
        _create_tag(repo, log, name, tag, rel.commit, _message("deprecate", rel, None, note))
    return StageChange("deprecated", name, rel.version, None, tag)
