"""Promotion gates: rules on a release's metrics that a promotion to a stage must pass.

Rules come from ``kgit promote --require "val.accuracy>=0.9" --require-better KEY`` and from the
committed ``.kgit/gates.yaml``, which applies to every promotion (by the CLI, and by the pre-push
and server hooks for stage tags made any other way)::

    metrics:              # which way is better, per metric key: max (the default) or min
      val.loss: min
    stages:
      prod:               # every model's prod; "mnist#prod" for one model's only
        require: ["val.accuracy >= 0.9", "val.loss <= 0.35"]
        require_better: [val.accuracy]     # strictly better than the version in prod now

There is no override flag: to let a model through, change the committed rule, which history shows.
Which version of the file applies: the one committed at HEAD (``kgit promote``, pre-push), and on
the server the one on the repository's HEAD branch *before* the push, so a push that weakens the
file cannot use the weaker rule for a stage tag it carries (the rule counts from the next push).
Git only: no TensorFlow, no DVC.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kgit import metrics
from kgit.errors import KgitError

if TYPE_CHECKING:
    from kgit.git_ops import Repo
    from kgit.registry import Registry, Release

GATES_FILE = ".kgit/gates.yaml"
DIRECTIONS = ("max", "min")
MAX_FILE_BYTES = 100_000
_OPS = (">=", "<=", "==", ">", "<")
_RULE_RE = re.compile(r"^\s*(?P<key>[^\s<>=!]+)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>\S+)\s*$")


class GateError(KgitError):
    """A promotion that a gate refuses, or a gate that cannot be read."""


@dataclass(frozen=True)
class Rule:
    key: str
    op: str  # one of _OPS, or "better": strictly better than the version in the stage now
    value: float | None = None
    source: str = "--require"  # where the rule comes from, shown when it refuses

    @property
    def text(self) -> str:
        return f"better {self.key}" if self.op == "better" else f"{self.key} {self.op} {self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "op": self.op, "value": self.value, "source": self.source, "text": self.text}


@dataclass
class Gates:
    """What ``.kgit/gates.yaml`` says (empty when there is none)."""

    directions: dict[str, str] = field(default_factory=dict)
    stages: dict[str, list[Rule]] = field(default_factory=dict)  # "prod" or "mnist#prod" -> rules
    commit: str | None = None  # the commit the file was read at

    def direction(self, key: str) -> str:
        return self.directions.get(key, "max")

    def rules_for(self, name: str, stage: str) -> list[Rule]:
        return [*self.stages.get(stage, []), *self.stages.get(f"{name}#{stage}", [])]


def parse_rule(text: str, source: str = "--require") -> Rule:
    """``KEY OP NUMBER`` (``val.accuracy>=0.9``; OP one of >=, <=, ==, >, <)."""
    m = _RULE_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise GateError(f"{source} rule {str(text)[:80]!r} is not KEY OP NUMBER (e.g. \"val.accuracy>=0.9\"; "
                        f"OP one of {', '.join(_OPS)})")
    key = metrics.check_key(m["key"], f"{source} rule")
    try:
        value = float(m["value"])
    except ValueError:
        raise GateError(f"{source} rule {text!r}: {m['value'][:40]!r} is not a number") from None
    return Rule(key, m["op"], metrics.number(value, key, f"{source} rule"), source)


def better_rule(key: str, source: str = "--require-better") -> Rule:
    return Rule(metrics.check_key(key.strip() if isinstance(key, str) else key, source), "better", None, source)


def parse(text: str, where: str = GATES_FILE) -> Gates:
    """The gates a ``.kgit/gates.yaml`` text declares; a GateError naming the problem if malformed
    (an unknown field is refused: a typo must not switch a gate off silently)."""
    from kgit import bounded_yaml

    data = bounded_yaml.load(text, where, max_bytes=MAX_FILE_BYTES, max_nodes=10_000)
    if data is None:
        return Gates()
    if not isinstance(data, dict):
        raise GateError(f"{where} must be a mapping with `metrics:` and `stages:`")
    unknown = sorted(str(k) for k in data if k not in ("metrics", "stages"))
    if unknown:
        raise GateError(f"{where}: unknown field {unknown[0][:40]!r} (known: metrics, stages)")
    gates = Gates()
    declared = data.get("metrics") or {}
    if not isinstance(declared, dict):
        raise GateError(f"{where}: `metrics:` must map metric keys to max or min")
    for key, direction in declared.items():
        metrics.check_key(key, f"{where} metrics:")
        if direction not in DIRECTIONS:
            raise GateError(f"{where}: metric {key} has direction {str(direction)[:20]!r}: use max or min")
        gates.directions[key] = direction
    stages = data.get("stages") or {}
    if not isinstance(stages, dict):
        raise GateError(f"{where}: `stages:` must map stage names to their rules")
    for stage, spec in stages.items():
        _check_stage_key(stage, where)
        if not isinstance(spec, dict):
            raise GateError(f"{where}: stage {stage} must have `require:` and/or `require_better:` lists")
        extra = sorted(str(k) for k in spec if k not in ("require", "require_better"))
        if extra:
            raise GateError(f"{where}: stage {stage}: unknown field {extra[0][:40]!r} (known: require, require_better)")
        source = f"{where} ({stage})"
        rules = [parse_rule(r, source) for r in _list(spec.get("require"), f"{where}: {stage}.require")]
        rules += [better_rule(k, source) for k in _list(spec.get("require_better"), f"{where}: {stage}.require_better")]
        gates.stages[stage] = rules
    return gates


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise GateError(f"{where} must be a list")
    for item in value:
        if not isinstance(item, str):
            raise GateError(f"{where}: {str(item)[:40]!r} is not a rule (write it as a string)")
    return value


def _check_stage_key(key: Any, where: str) -> None:
    from kgit.versions import check_name, check_stage

    if not isinstance(key, str):
        raise GateError(f"{where}: stage {str(key)[:40]!r} is not a stage name")
    name, sep, stage = key.rpartition("#")
    try:
        check_stage(stage)
        if sep:
            check_name(name)
    except KgitError:
        raise GateError(f"{where}: {key[:40]!r} is not a stage (prod) or a model's stage (mnist#prod)") from None


def read(repo: Repo, rev: str = "HEAD") -> Gates:
    """The gates committed at ``rev`` (works in a bare repository; none if the file or commit is absent)."""
    commit = repo.git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False)
    if not commit:
        return Gates()
    text = repo.show_file(commit, GATES_FILE)
    if text is None:
        return Gates(commit=commit)
    gates = parse(text, f"{GATES_FILE} (at {commit[:8]})")
    gates.commit = commit
    return gates


def directions(repo: Repo | str | os.PathLike[str] = ".") -> dict[str, str]:
    """Per metric key, "max" (higher is better) or "min", as declared in the committed
    ``.kgit/gates.yaml`` at HEAD (``repo``: a Repo or a path); keys not declared are "max" (look
    them up with ``.get(key, "max")``). Git only; GateError if the committed file is malformed."""
    from kgit.git_ops import Repo as GitRepo

    return dict(read(repo if isinstance(repo, GitRepo) else GitRepo(repo)).directions)


def holder(reg: Registry, name: str, stage: str, before: int | None = None) -> Release | None:
    """The valid release of ``name`` in ``stage`` (just before the event tag numbered ``before``)."""
    last = None
    for e in sorted((e for e in reg.events if e.name == name and e.stage == stage), key=lambda e: e.counter):
        if e.event in ("promoted", "demoted") and (before is None or e.counter < before):
            last = e
    if last is None or last.event != "promoted" or last.version is None:
        return None
    return next((r for r in reg.releases if r.name == name and r.version == last.version and r.valid), None)


def failures(rules: Sequence[Rule], candidate: Release, incumbent: Release | None, gates: Gates) -> list[str]:
    """One line per rule ``candidate`` does not pass (empty: it may be promoted)."""
    out = []
    label = f"{candidate.name}@{candidate.version}"
    for rule in rules:
        value = candidate.metrics.get(rule.key)
        where = f"rule `{rule.text}` ({rule.source})"
        if value is None:
            have = ", ".join(sorted(candidate.metrics)[:5]) or "none"
            out.append(f"{where}: {label} has no metric {rule.key} (it has: {have})")
            continue
        if rule.op == "better":
            old = incumbent.metrics.get(rule.key) if incumbent is not None else None
            if incumbent is None or old is None or incumbent.tag == candidate.tag:
                continue  # nothing to beat: the stage is empty, or its version never recorded the metric
            direction = gates.direction(rule.key)
            if not metrics.is_better(value, old, direction):
                word = "lower" if direction == "min" else "higher"
                out.append(f"{where}: {label} has {rule.key} {value:g}, {incumbent.name}@{incumbent.version} "
                           f"(in the stage now) has {old:g}; {word} is better")
            continue
        assert rule.value is not None
        passed = {">=": value >= rule.value, "<=": value <= rule.value, ">": value > rule.value,
                  "<": value < rule.value, "==": value == rule.value}[rule.op]
        if not passed:
            out.append(f"{where}: {label} has {rule.key} {value:g}")
    return out


def check_promotion(repo: Repo, reg: Registry, candidate: Release, stage: str, *,
                    require: Sequence[str] = (), require_better: Sequence[str] = (),
                    gates: Gates | None = None, before: int | None = None) -> list[Rule]:
    """Refuse (GateError, one line naming each failed rule and the numbers) unless ``candidate`` passes
    the rules given and the committed gates for ``stage``; returns the rules that were applied."""
    gates = gates if gates is not None else read(repo)
    rules = [*(parse_rule(r) for r in require), *(better_rule(k) for k in require_better),
             *gates.rules_for(candidate.name, stage)]
    failed = failures(rules, candidate, holder(reg, candidate.name, stage, before), gates)
    if failed:
        raise GateError(f"{candidate.name}@{candidate.version} cannot go to {stage}: {'; '.join(failed)} "
                        f"(a committed rule changes only by a commit to {GATES_FILE}, which history shows)")
    return rules
