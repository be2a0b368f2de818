"""Promotion gates: rules on a release's metrics that a promotion to a stage must pass.

Rules come from ``kgit promote --require "val.accuracy>=0.9" --require-better KEY`` and from the
committed ``.kgit/gates.yaml``, which applies to every promotion (by the CLI, and by the pre-push
and server hooks for stage tags made any other way)::

    metrics:              # which way is better, per metric key: max or min (default: from the name,
      val.auc: max        # kgit.core.metrics.default_direction: *loss, *error, *mae, *mse, *rmse are min)
    stages:
      prod:               # every model's prod; "mnist#prod" for one model's only
        require: ["val.accuracy >= 0.9", "val.loss <= 0.35"]
        require_better: [val.accuracy]     # strictly better than the stage's last holder
        min_relative_change: {val.accuracy: 0.01}   # better than the last holder by >= 1 % of its value
        min_absolute_change: {val.loss: 0.005}      # better than the last holder by >= 0.005
        allow_rollback: true               # `kgit rollback` may skip this entry's champion rules
        require_compat: [serving]          # a compat record that loads in .kgit/compat.yaml's `serving`

There is no override flag: to let a model through, change the committed rule, which history shows.
Which version of the file applies: the one committed at HEAD (``kgit promote``, pre-push), and on
the server the one on the repository's HEAD branch *before* the push, so a push that weakens the
file cannot use the weaker rule for a stage tag it carries (the rule counts from the next push). A
server whose HEAD names no existing branch applies every branch's rules at once (``read_on_server``).
Which version a rule compares with, counters and rollbacks: kgit.registry.stage_checks. A
``require_compat`` rule takes its environment's specifiers from ``.kgit/compat.yaml`` committed at the
same commit as the gates (kgit.registry.compat_envs) and looks for a passing record among the
release's compat tags (kgit.registry.compat_records).
Git only: no TensorFlow, no DVC.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kgit.core import metrics
from kgit.core.errors import KgitError, closest

if TYPE_CHECKING:
    from kgit.registry.catalog import Release
    from kgit.store.git_ops import Repo

GATES_FILE = ".kgit/gates.yaml"
DIRECTIONS = ("max", "min")
STAGE_FIELDS = (
    "require",
    "require_better",
    "min_relative_change",
    "min_absolute_change",
    "allow_rollback",
    "require_compat",
)
# rules that compare with the stage's last holder (its "champion"): strictly better, better by a
# fraction of the holder's value, better by an amount
CHAMPION_OPS = ("better", "relative", "absolute")
_CHANGE_FIELDS = {"min_relative_change": "relative", "min_absolute_change": "absolute"}
MAX_FILE_BYTES = 100_000
_OPS = (">=", "<=", "==", ">", "<")
_RULE_RE = re.compile(r"^\s*(?P<key>[^\s<>=!]+)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>\S+)\s*$")


class GateError(KgitError):
    """A promotion that a gate refuses, or a gate that cannot be read."""


@dataclass(frozen=True)
class Rule:
    key: str
    op: str  # one of _OPS, one of CHAMPION_OPS (compared with the stage's last holder), or "compat"
    value: float | None = None  # the threshold; for "relative" a fraction (0.01: 1 %), "absolute" an amount
    source: str = "--require"  # where the rule comes from, shown when it refuses
    rollback_ok: bool = False  # a champion rule a rollback skips (its entry sets allow_rollback: true)
    # a "compat" rule (key: the environment's name): the specifiers a passing record's packages must meet
    specs: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        if self.op == "compat":
            return f"compat {self.key}"
        if self.op == "better":
            return f"better {self.key}"
        if self.op == "relative":
            return f"{self.key} ≥{_percent(self.value)} better"
        if self.op == "absolute":
            return f"{self.key} ≥{self.value:g} better"
        return f"{self.key} {self.op} {self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "op": self.op, "value": self.value, "source": self.source, "text": self.text}
        return {**out, "specs": list(self.specs)} if self.op == "compat" else out


@dataclass
class Gates:
    """What ``.kgit/gates.yaml`` says (empty when there is none)."""

    directions: dict[str, str] = field(default_factory=dict)
    stages: dict[str, list[Rule]] = field(default_factory=dict)  # "prod" or "mnist#prod" -> rules
    commit: str | None = None  # the commit the file was read at
    note: str | None = None  # why these rules, when it is not the plain reading of one file

    def direction(self, key: str) -> str:
        """ "max" (higher is better) or "min": declared under ``metrics:``, else from the key's name."""
        return metrics.direction(key, self.directions)

    def rules_for(self, name: str, stage: str) -> list[Rule]:
        return [*self.stages.get(stage, []), *self.stages.get(f"{name}#{stage}", [])]


def parse_rule(text: str, source: str = "--require") -> Rule:
    """``KEY OP NUMBER`` (``val.accuracy>=0.9``; OP one of >=, <=, ==, >, <)."""
    m = _RULE_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise GateError(
            f'{source} rule {str(text)[:80]!r} is not KEY OP NUMBER (e.g. "val.accuracy>=0.9"; '
            f"OP one of {', '.join(_OPS)})"
        )
    key = metrics.check_key(m["key"], f"{source} rule")
    try:
        value = float(m["value"])
    except ValueError:
        raise GateError(f"{source} rule {text!r}: {m['value'][:40]!r} is not a number") from None
    return Rule(key, m["op"], metrics.number(value, key, f"{source} rule"), source)


def better_rule(key: str, source: str = "--require-better", rollback_ok: bool = False) -> Rule:
    return Rule(
        metrics.check_key(key.strip() if isinstance(key, str) else key, source), "better", None, source, rollback_ok
    )


def _percent(fraction: float | None) -> str:
    return f"{(fraction or 0.0) * 100:.6g}%"


def _change_rules(value: Any, field_name: str, stage: str, where: str, rollback_ok: bool) -> list[Rule]:
    """``min_relative_change:``/``min_absolute_change:`` of a stage entry: metric key -> a number >= 0."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise GateError(
            f"{where}: {stage}.{field_name} must map metric keys to numbers "
            f"(e.g. {field_name}: {{val.accuracy: {0.01 if field_name == 'min_relative_change' else 0.005}}})"
        )
    out = []
    for key, amount in value.items():
        metrics.check_key(key, f"{where}: {stage}.{field_name}")
        number = metrics.number(amount, key, f"{where}: {stage}.{field_name}")
        if number < 0:
            raise GateError(
                f"{where}: {stage}.{field_name} {key} is {number:g}: use a number >= 0 "
                "(how much better than the stage's holder a new version must be)"
            )
        out.append(Rule(key, _CHANGE_FIELDS[field_name], number, f"{where} ({stage})", rollback_ok))
    return out


def parse(text: str, where: str = GATES_FILE) -> Gates:
    """The gates a ``.kgit/gates.yaml`` text declares; a GateError naming the problem if malformed
    (an unknown field is refused: a typo must not switch a gate off silently)."""
    from kgit.core import bounded_yaml

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
            raise GateError(f"{where}: stage {stage} must be a mapping of rules ({', '.join(STAGE_FIELDS)})")
        extra = sorted(str(k) for k in spec if k not in STAGE_FIELDS)
        if extra:
            raise GateError(
                f"{where}: stage {stage}: unknown field {extra[0][:40]!r} (known: {', '.join(STAGE_FIELDS)})"
            )
        rollback_ok = spec.get("allow_rollback", False)
        if not isinstance(rollback_ok, bool):
            raise GateError(f"{where}: stage {stage}: allow_rollback is {str(rollback_ok)[:20]!r}: use true or false")
        source = f"{where} ({stage})"
        rules = [parse_rule(r, source) for r in _list(spec.get("require"), f"{where}: {stage}.require")]
        rules += [
            better_rule(k, source, rollback_ok)
            for k in _list(spec.get("require_better"), f"{where}: {stage}.require_better")
        ]
        for field_name in _CHANGE_FIELDS:
            rules += _change_rules(spec.get(field_name), field_name, stage, where, rollback_ok)
        rules += [
            _compat_rule(k, source, f"{where}: {stage}.require_compat")
            for k in _list(spec.get("require_compat"), f"{where}: {stage}.require_compat")
        ]
        gates.stages[stage] = rules
    return gates


def _compat_rule(env: str, source: str, where: str) -> Rule:
    """A ``require_compat`` entry; its specifiers come from .kgit/compat.yaml (``with_environments``)."""
    from kgit.registry.versions import check_name

    try:
        check_name(env)
    except KgitError:
        raise GateError(f"{where}: {env[:40]!r} is not an environment name of .kgit/compat.yaml") from None
    return Rule(env, "compat", None, source)


def with_environments(gates: Gates, envs: dict[str, list[str]], where: str) -> Gates:
    """``gates`` with each compat rule given its environment's specifiers from ``envs`` (read at the
    same commit); GateError naming a rule whose environment is not defined there."""
    from kgit.registry import compat_envs

    for stage, rules in gates.stages.items():
        filled = []
        for rule in rules:
            if rule.op == "compat":
                try:
                    specs = compat_envs.lookup(envs, rule.key, where)
                except KgitError as exc:
                    raise GateError(f"{GATES_FILE} (stage {stage}) requires compat {rule.key}, but {exc}") from None
                rule = Rule(rule.key, "compat", None, rule.source, specs=tuple(specs))
            filled.append(rule)
        gates.stages[stage] = filled
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
    from kgit.registry.versions import check_name, check_stage

    if not isinstance(key, str):
        raise GateError(f"{where}: stage {str(key)[:40]!r} is not a stage name")
    name, sep, stage = key.rpartition("#")
    try:
        check_stage(stage)
        if sep:
            check_name(name)
    except KgitError:
        raise GateError(f"{where}: {key[:40]!r} is not a stage (prod) or a model's stage (mnist#prod)") from None


def read(repo: Repo, rev: str = "HEAD", where: str = GATES_FILE) -> Gates:
    """The gates committed at ``rev`` (works in a bare repository; none if the file or commit is absent)."""
    commit = repo.git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False)
    if not commit:
        return Gates()
    text = repo.show_file(commit, GATES_FILE)
    if text is None:
        return Gates(commit=commit)
    gates = parse(text, f"{where} (at {commit[:8]})")
    gates.commit = commit
    if any(r.op == "compat" for rules in gates.stages.values() for r in rules):
        from kgit.registry import compat_envs

        where_envs = f"{compat_envs.ENVS_FILE} (at {commit[:8]})"
        with_environments(gates, compat_envs.read_at(repo, commit, compat_envs.ENVS_FILE), where_envs)
    return gates


def read_on_server(repo: Repo) -> Gates:
    """The gates a bare repository applies to pushed stage tags: those committed on its HEAD branch
    (before the push, as refs are while pre-receive runs). If HEAD names no existing branch (a bare
    repository made with git's default ``master`` while the team pushes ``main``) or is not a
    branch, every branch's rules at once, the strictest reading, never none; ``note`` then says so
    and how to fix HEAD."""
    head = repo.git("symbolic-ref", "-q", "HEAD", check=False)
    if head.startswith("refs/heads/") and repo.git("rev-parse", "--verify", "-q", f"{head}^{{commit}}", check=False):
        return read(repo, head)
    what = f"HEAD names {head}, which does not exist" if head else "HEAD is not a branch"
    fix = "point HEAD at the team's branch in the bare repository: git symbolic-ref HEAD refs/heads/main"
    branches = [b[len("refs/heads/") :] for b in repo.git("for-each-ref", "--format=%(refname)", "refs/heads").split()]
    try:
        merged = union([(b, read(repo, f"refs/heads/{b}", f"{GATES_FILE} on {b}")) for b in branches])
    except GateError as exc:
        raise GateError(f"{exc} ({what}, so every branch's gates apply; {fix})") from None
    merged.note = f"{what}: the promotion gates of every branch apply ({len(branches)} branch(es)); {fix}"
    return merged


def union(parts: Sequence[tuple[str, Gates]]) -> Gates:
    """Every rule of every ``(label, gates)``, for each stage: a promotion must pass them all. Two
    that declare opposite directions for a metric are a GateError (no rule could pass both)."""
    out = Gates()
    declared: dict[str, list[str]] = {}
    for label, gates in parts:
        for key, direction in gates.directions.items():
            declared.setdefault(key, []).append(f"{label}: {direction}")
            if out.directions.setdefault(key, direction) != direction:
                raise GateError(
                    f"{GATES_FILE} says {key} is better both ways ({', '.join(declared[key])}): "
                    "no promotion could pass both"
                )
        for stage, rules in gates.stages.items():
            have = out.stages.setdefault(stage, [])
            same = {(r.key, r.op, r.value, r.rollback_ok, r.specs) for r in have}
            have += [r for r in rules if (r.key, r.op, r.value, r.rollback_ok, r.specs) not in same]
    return out


def directions(repo: Repo | str | os.PathLike[str] = ".") -> dict[str, str]:
    """Per metric key, "max" (higher is better) or "min", as declared in the committed
    ``.kgit/gates.yaml`` at HEAD (``repo``: a Repo or a path). Keys not declared take their default
    from the name: look them up with ``kgit.core.metrics.direction(key, declared)``. Git only;
    GateError if the committed file is malformed."""
    from kgit.store.git_ops import Repo as GitRepo

    return dict(read(repo if isinstance(repo, GitRepo) else GitRepo(repo)).directions)


def _compat_failure(rule: Rule, candidate: Release) -> str | None:
    """Why ``candidate`` has no compat record passing ``rule``, or None."""
    from kgit.registry import compat_records

    label = f"{candidate.name}@{candidate.version}"
    if any(compat_records.passes(rec, rule.specs) for rec in candidate.compat):
        return None
    near = [rec for rec in candidate.compat if not compat_records.unmet(rec, rule.specs)]
    seen = "; ".join(
        f"{rec.describe_env(compat_records.package_requirements(rule.specs))}: {rec.text}" for rec in near[:2]
    )
    return (
        f"{label} has no compat record that loads in {rule.key} ({', '.join(rule.specs)})"
        + (f" (recorded there: {seen})" if seen else "")
        + f": run `kgit compat {label} --env {rule.key}` and push its record"
    )


def waived(rule: Rule, rollback: bool) -> bool:
    """Whether ``rule`` does not apply: a rollback skips the champion rules (require_better,
    min_relative_change, min_absolute_change) of an entry with ``allow_rollback: true``."""
    return rollback and rule.op in CHAMPION_OPS and rule.rollback_ok


def needed(rule: Rule, old: float, direction: str) -> float:
    """The value a champion rule needs to beat ``old`` (the holder's): for "max" at least this, for
    "min" at most this ("better": ``old`` itself, which must then be passed strictly)."""
    amount = 0.0 if rule.value is None else rule.value
    step = amount * abs(old) if rule.op == "relative" else amount if rule.op == "absolute" else 0.0
    return old - step if direction == "min" else old + step


def passes_change(rule: Rule, value: float, old: float, direction: str) -> bool:
    """Whether ``value`` passes a "relative" or "absolute" rule against ``old``: better by at least the
    amount, in ``direction``, up to float rounding (0.9 * 1.01 is 0.9090000000000001 in binary). A
    holder at 0 has no relative scale: any strict improvement passes a relative rule."""
    if rule.op == "relative" and old == 0:
        return metrics.is_better(value, old, direction)
    bound = needed(rule, old, direction)
    slack = 1e-12 * max(1.0, abs(bound))
    return value <= bound + slack if direction == "min" else value >= bound - slack


def failures(
    rules: Sequence[Rule],
    candidate: Release,
    incumbent: Release | None,
    gates: Gates,
    *,
    rollback: bool = False,
    stage: str = "the stage",
    current: bool = True,
) -> list[str]:
    """One line per rule ``candidate`` does not pass (empty: it may be promoted). ``incumbent``: the
    version the champion rules compare with (kgit.registry.stage_checks: the stage's last holder),
    in ``stage`` now if ``current``, else demoted since; ``rollback``: the promotion is a rollback
    (see ``waived``)."""
    out = []
    label = f"{candidate.name}@{candidate.version}"
    why = (
        f" (a rollback skips the rules that compare with the stage's holder only where the stage's entry in "
        f"{GATES_FILE} sets `allow_rollback: true`)"
        if rollback
        else ""
    )
    for rule in rules:
        if waived(rule, rollback):
            continue
        where = f"rule `{rule.text}` ({rule.source})"
        if rule.op == "compat":
            problem = _compat_failure(rule, candidate)
            if problem:
                out.append(f"{where}: {problem}")
            continue
        value = candidate.metrics.get(rule.key)
        if value is None:
            have = ", ".join(sorted(candidate.metrics)[:5]) or "none"
            match = closest(rule.key, candidate.metrics)
            hint = f"; did you mean {match}?" if match is not None else ""
            out.append(f"{where}: {label} has no metric {rule.key} (it has: {have}){hint}")
            continue
        if rule.op in CHAMPION_OPS:
            old = incumbent.metrics.get(rule.key) if incumbent is not None else None
            if incumbent is None or old is None or incumbent.tag == candidate.tag:
                continue  # nothing to beat: the stage never had a version, or it never recorded the metric
            assert incumbent is not None
            direction = gates.direction(rule.key)
            word = "lower" if direction == "min" else "higher"
            them = f"{incumbent.name}@{incumbent.version}"
            if rule.op == "better":
                if not metrics.is_better(value, old, direction):
                    out.append(
                        f"{where}: {label} has {rule.key} {value:g}, {them} "
                        f"({'in the stage now' if current else f'the last version in {stage}'}) has {old:g}; "
                        f"{word} is better{why}"
                    )
            elif not passes_change(rule, value, old, direction):
                how = _percent(rule.value) if rule.op == "relative" else f"{rule.value:g}"
                holder = f"{stage} holder {them}" if current else f"last {stage} holder {them} (demoted since)"
                out.append(
                    f"{where}: {rule.key} {value:g} is not ≥{how} better than {holder}'s {old:g} "
                    f"(needs {'≤' if direction == 'min' else '≥'} {needed(rule, old, direction):.6g}; "
                    f"{word} is better){why}"
                )
            continue
        assert rule.value is not None
        passed = {
            ">=": value >= rule.value,
            "<=": value <= rule.value,
            ">": value > rule.value,
            "<": value < rule.value,
            "==": value == rule.value,
        }[rule.op]
        if not passed:
            out.append(f"{where}: {label} has {rule.key} {value:g}")
    return out
