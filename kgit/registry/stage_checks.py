"""What a new stage or deprecation tag must satisfy: one judgement, made the same way by ``kgit
promote``/``kgit rollback`` before they tag, by the pre-push hook and by the server hook.

- **Next counter only.** A new event tag's ``#N`` is exactly 1 + the highest counter of its model's
  event tags already there, the other new tags of the same push counting in counter order. A tag
  therefore lands after every event it was made after, and is judged against the stage as it is
  when it lands, never against an earlier holder.
- **Gates against the last holder.** A promotion must pass the stage's rules (kgit.registry.gates);
  ``require_better`` compares with the version that most recently held the stage, even if it was
  demoted since: a demote does not empty the bar.
- **Rollbacks.** A promotion whose message's ``kgit-event`` line says ``"event": "rollback"`` is a
  rollback. It must name what the tag does and go back to a version that held the stage before (a
  message claiming a rollback to any other version is refused); it then skips the require_better
  rules of the entries in ``.kgit/gates.yaml`` that set ``allow_rollback: true``.

Git only: no TensorFlow, no DVC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError
from kgit.registry import gates as gates_mod
from kgit.registry.catalog import HistoryEvent, Registry, Release
from kgit.registry.gates import GateError, Gates, Rule
from kgit.registry.versions import Event, Version, parse_event
from kgit.store.git_ops import MAX_TAG_BYTES, Repo

EVENT_MARK = "kgit-event:"
ROLLBACK = "rollback"


@dataclass(frozen=True)
class NewTag:
    """A stage or deprecation tag not yet among the tags it is judged with."""

    tag: str
    commit: str  # the commit it points at
    message: str = ""  # "" for a lightweight tag


def read_new(repo: Repo, refs: Sequence[tuple[str, str]]) -> list[NewTag]:
    """NewTag of each ``(tag name, object id)`` (an annotated tag's object or a commit), also for
    objects no ref points at yet (a push being received); objects that are neither are left out."""
    out = []
    for name, oid in refs:
        info = repo.tag_object(oid, name)
        if info is not None:
            out.append(NewTag(name, info.target, info.message))
    return out


def read_local(repo: Repo, tags: Sequence[str]) -> list[NewTag]:
    """NewTag of each of this repository's tags named in ``tags``."""
    return read_new(repo, [(name, oid) for name, _otype, oid in repo.tag_refs(*(f"refs/tags/{t}" for t in tags))])


def event_body(message: str) -> dict[str, Any] | None:
    """The JSON of a tag message's last ``kgit-event:`` line (kgit.workflow.stages writes it), or None."""
    lines = [line for line in message.splitlines() if line.startswith(EVENT_MARK)]
    if not lines:
        return None
    try:
        body = bounded_yaml.load_json(lines[-1][len(EVENT_MARK) :], "event", max_bytes=MAX_TAG_BYTES)
    except KgitError:
        return None
    return body if isinstance(body, dict) else None


def event_note(message: str) -> str | None:
    """The note (``--note``) an event tag's message carries: the text between its title line and its
    ``kgit-event:`` line (kgit.workflow.stages writes it), or None."""
    lines = message.split("\n")
    ends = [i for i, line in enumerate(lines) if line.startswith(EVENT_MARK)]
    note = "\n".join(lines[1 : ends[-1]] if ends else lines[1:]).strip()
    return note or None


def event_notes(repo: Repo, names: Sequence[str]) -> dict[str, str]:
    """The notes of the stage and deprecation tags of models ``names``, by tag name (one git call)."""
    patterns = [p for n in names for p in (f"refs/tags/{n}#*", f"refs/tags/{n}@*!*")]
    notes = {}
    for tag in repo.tags(*patterns) if patterns else ():
        note = event_note(tag.message) if tag.annotated else None
        if note:
            notes[tag.name] = note
    return notes


def deprecation_note(repo: Repo, name: str, version: Version) -> str | None:
    """The note of the tag that deprecated ``name@version`` (the last one, if there are several)."""
    found = [
        (event.counter, tag)
        for tag in repo.tags(f"refs/tags/{name}@{version.semver}!*")
        if tag.annotated and (event := parse_event(tag.name)) is not None and event.kind == "deprecate"
    ]
    return event_note(max(found, key=lambda f: f[0])[1].message) if found else None


@dataclass
class StageLog:
    """Per model, the next event counter; per (model, stage), what each promote and demote tag did,
    in counter order: the commit it put in the stage, None for a demote."""

    releases: dict[tuple[str, str], Release] = field(default_factory=dict)  # (name, commit) -> valid release
    counters: dict[str, int] = field(default_factory=dict)  # name -> highest counter
    entries: dict[tuple[str, str], list[str | None]] = field(default_factory=dict)
    latest: dict[str, datetime] = field(default_factory=dict)  # name -> the date of its newest event tag

    @classmethod
    def of(cls, reg: Registry, *, leave_out: Sequence[str] = (), releases: Sequence[Release] = ()) -> StageLog:
        """The log of ``reg``'s event tags but those named in ``leave_out`` (tags being judged), with
        ``releases`` (a push's new releases) known as well."""
        log = cls({(r.name, r.commit): r for r in [*reg.releases, *releases] if r.valid})
        skip = set(leave_out)
        for e in in_order(e for e in reg.events if e.tag not in skip):
            log.apply(e)
        return log

    def apply(self, e: HistoryEvent) -> None:
        """Add an event tag already there."""
        staged = e.event in ("promoted", "demoted")
        with contextlib.suppress(ValueError, TypeError):  # no date (or none git would write): not counted
            when = datetime.fromisoformat(e.when)
            if e.name not in self.latest or when > self.latest[e.name]:
                self.latest[e.name] = when
        self.add(e.name, e.stage if staged else None, e.counter, e.commit if e.event == "promoted" else None)

    def add(self, name: str, stage: str | None, counter: int, commit: str | None) -> None:
        self.counters[name] = max(self.counters.get(name, 0), counter)
        if stage is not None:
            self.entries.setdefault((name, stage), []).append(commit)

    def next_counter(self, name: str) -> int:
        return self.counters.get(name, 0) + 1

    def current(self, name: str, stage: str) -> str | None:
        """The commit in the stage now (None: empty)."""
        entries = self.entries.get((name, stage), [])
        return entries[-1] if entries else None

    def holders(self, name: str, stage: str) -> list[str]:
        """The commits each promotion put in the stage, oldest first."""
        return [c for c in self.entries.get((name, stage), []) if c is not None]

    def release(self, name: str, commit: str | None) -> Release | None:
        return self.releases.get((name, commit)) if commit is not None else None

    def last_holder(self, name: str, stage: str) -> Release | None:
        """The valid version that most recently held the stage, in it now or demoted since."""
        return next((r for c in reversed(self.holders(name, stage)) if (r := self.release(name, c)) is not None), None)


def judge_promotion(
    log: StageLog, gates: Gates, rel: Release, stage: str, *, rollback: bool = False, extra: Sequence[Rule] = ()
) -> tuple[list[Rule], list[str]]:
    """(the rules that apply to putting ``rel`` in ``stage`` now, one line per rule it fails)."""
    rules = [r for r in [*extra, *gates.rules_for(rel.name, stage)] if not gates_mod.waived(r, rollback)]
    incumbent = log.last_holder(rel.name, stage)
    now = incumbent is not None and log.current(rel.name, stage) == incumbent.commit
    failed = gates_mod.failures(rules, rel, incumbent, gates, rollback=rollback, stage=stage, current=now)
    return rules, failed


def refusal(rel: Release, stage: str, failed: list[str]) -> str:
    return (
        f"{rel.name}@{rel.version} cannot go to {stage}: {'; '.join(failed)} "
        f"(a committed rule changes only by a commit to {gates_mod.GATES_FILE}, which history shows)"
    )


def check_promotion(
    repo: Repo,
    log: StageLog,
    rel: Release,
    stage: str,
    *,
    rollback: bool = False,
    require: Sequence[str] = (),
    require_better: Sequence[str] = (),
) -> list[Rule]:
    """For ``kgit promote``/``kgit rollback``: refuse (GateError naming each failed rule and the
    numbers) unless ``rel`` passes the ``require`` rules, is better than the stage's last holder on
    the ``require_better`` keys, and passes the gates committed at HEAD; the rules it passed."""
    extra = [*(gates_mod.parse_rule(r) for r in require), *(gates_mod.better_rule(k) for k in require_better)]
    rules, failed = judge_promotion(log, gates_mod.read(repo), rel, stage, rollback=rollback, extra=extra)
    if failed:
        hint = ""
        if not rollback and rel.commit in log.holders(rel.name, stage):
            hint = (
                f"; {rel.name}@{rel.version} held {stage} before: "
                f"`kgit rollback {rel.name} {stage} --to {rel.version}` goes back to it as a rollback"
            )
        raise GateError(refusal(rel, stage, failed) + hint)
    return rules


def _rollback_problem(log: StageLog, event: Event, rel: Release, body: dict[str, Any]) -> str | None:
    """Why a rollback claim (``body``, its message's kgit-event) is not one, or None."""
    said = (body.get("name"), body.get("stage"), body.get("version"))
    try:
        same_version = isinstance(said[2], str) and Version.parse(said[2]).key == rel.key
    except KgitError:
        same_version = False
    if said[0] != event.name or said[1] != event.stage or not same_version:
        shown = ":".join(str(x)[:40] for x in said)
        return f"its message says it rolls back {shown}, but the tag puts {rel.name}@{rel.version} in {event.stage}"
    if rel.commit not in log.holders(event.name, str(event.stage)):
        return (
            f"its message says it rolls {event.stage} back to {rel.name}@{rel.version}, which never held "
            f"{event.stage}: a rollback goes back to a version that held the stage (promote this one instead)"
        )
    return None


def _judge(log: StageLog, event: Event, new: NewTag, read_gates: Callable[[], Gates]) -> str | None:
    if event.kind != "promote" or event.stage is None:
        return None
    rel = log.release(event.name, new.commit)
    if rel is None:
        return None  # not a valid release commit: refused by the checks of where a tag points
    body = event_body(new.message)
    rollback = body is not None and body.get("event") == ROLLBACK
    if rollback:
        assert body is not None
        problem = _rollback_problem(log, event, rel, body)
        if problem:
            return problem
    _rules, failed = judge_promotion(log, read_gates(), rel, event.stage, rollback=rollback)
    return refusal(rel, event.stage, failed) if failed else None


def problems(log: StageLog, new: Sequence[NewTag], read_gates: Callable[[], Gates]) -> list[tuple[str, str]]:
    """(tag, why) for each tag of ``new`` (stage and deprecation tags a push brings) that may not
    land on the tags of ``log``; ``log`` ends as the tags would leave it.
    ``read_gates`` gives the gates, called only if a promotion needs them (a KgitError from it
    refuses the promotions, naming the first)."""
    out: list[tuple[str, str]] = []
    events = sorted(
        ((e, t) for t in new if (e := parse_event(t.tag)) is not None),
        key=lambda et: (et[0].name, et[0].counter, et[1].tag),
    )
    cache: list[Gates] = []

    def gates() -> Gates:
        if not cache:
            cache.append(read_gates())
        return cache[0]

    for event, tag in events:
        want = log.next_counter(event.name)
        if event.counter != want:
            have = f"its event tags end at #{want - 1}" if want > 1 else "it has no event tags yet"
            out.append(
                (
                    tag.tag,
                    f"#{event.counter} is not the next event counter of {event.name}: expected #{want} "
                    f"({have}); fetch the tags (git fetch --tags), delete this one (git tag -d "
                    f"'{tag.tag}') and make it again with kgit promote/rollback/demote/deprecate",
                )
            )
            continue
        try:
            problem = _judge(log, event, tag, gates)
        except KgitError as exc:  # the gates file is malformed: no promotion can be judged
            return [*out, (tag.tag, f"cannot apply the promotion gates: {exc}")]
        if problem:
            out.append((tag.tag, problem))
        log.add(event.name, event.stage, event.counter, tag.commit if event.kind == "promote" else None)
    return out


def rollbacks(repo: Repo, reg: Registry, name: str) -> set[str]:
    """The stage tags of ``name`` that are rollbacks (for ``kgit history``): a rollback message that
    names what its tag does, going back to a version that held the stage before."""
    promotes = [
        (t, oid)
        for t, otype, oid in repo.tag_refs(f"refs/tags/{name}#*")
        if otype == "tag" and (ev := parse_event(t)) is not None and ev.kind == "promote"
    ]
    claims = {}
    for info in repo.annotated_tags(promotes):
        body = event_body(info.message)
        if body is not None and body.get("event") == ROLLBACK:
            claims[info.name] = body
    if not claims:
        return set()
    found = set()
    log = StageLog({(r.name, r.commit): r for r in reg.releases if r.valid})
    for e in in_order(e for e in reg.events if e.name == name):
        event = parse_event(e.tag) if e.tag in claims else None
        rel = log.release(name, e.commit)
        if event is not None and rel is not None and not _rollback_problem(log, event, rel, claims[e.tag]):
            found.add(e.tag)
        log.apply(e)
    return found


def in_order(events: Iterable[HistoryEvent]) -> list[HistoryEvent]:
    """The event tags among ``events`` (no releases) in the order they apply: counter, then date."""
    return sorted((e for e in events if e.event != "released"), key=lambda e: (e.counter, e.when, e.tag))
