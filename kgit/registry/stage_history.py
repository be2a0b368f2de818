"""Which version held a stage at a given moment: ``kgit history NAME#STAGE --at WHEN``, from git alone.

A stage's history is its promote and demote tags (``NAME#STAGE#N``, ``NAME#STAGE!#N``), applied in
the order kgit.registry.stage_checks applies them (their event counter). The stage at a moment is
what the last of them tagged at or before that moment (by its tagger date) left: the version it
promoted (or rolled back to), or nothing after a demote. A tag without a date git would write
(made by hand) cannot be placed in time and is left out. Git only: no TensorFlow, no DVC.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kgit.core.errors import KgitError
from kgit.registry.catalog import HistoryEvent
from kgit.registry.stage_checks import in_order

_MOMENT_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?)?"
    r"\s*(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_moment(text: str, what: str = "--at") -> datetime:
    """``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]`` (this machine's local time, as git reads a date
    without a zone) or ISO 8601 with a zone (``2026-11-01T12:00:00+01:00``, ``...Z``), as an aware
    datetime; a KgitError in one line otherwise."""
    bad = KgitError(
        f"could not read {what} {str(text)[:60]!r}: use 'YYYY-MM-DD HH:MM' or ISO 8601 (e.g. 2026-11-01T12:00:00+01:00)"
    )
    m = _MOMENT_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise bad
    try:
        day = datetime.strptime(m["date"], "%Y-%m-%d")
        frac = (m["frac"] or "0")[:6].ljust(6, "0")
        moment = day.replace(
            hour=int(m["h"] or 0), minute=int(m["m"] or 0), second=int(m["s"] or 0), microsecond=int(frac)
        )
        zone = m["zone"]
        if zone is None:
            return moment.astimezone()  # local time, with this machine's offset at that date
        if zone == "Z":
            return moment.replace(tzinfo=timezone.utc)
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        return moment.replace(tzinfo=timezone(-offset if zone[0] == "-" else offset))
    except (ValueError, OverflowError):
        raise bad from None


def when_of(event: HistoryEvent) -> datetime | None:
    """The moment an event tag was made (its tagger date), None if it has none git would write."""
    try:
        return datetime.fromisoformat(event.when) if event.when else None
    except ValueError:
        return None


@dataclass
class Holding:
    """What a stage held at a moment, and the event that made it so."""

    name: str
    stage: str
    at: str  # the moment asked about, ISO 8601
    version: str | None  # the version in the stage then (None: empty, or a tag on a commit that is no valid release)
    event: HistoryEvent | None  # the last event of the stage at or before ``at`` (None: none yet)
    first_promotion: HistoryEvent | None  # the stage's earliest promotion (None: never promoted)

    @property
    def held(self) -> bool:
        return self.event is not None and self.event.event in ("promoted", "rolled back")

    def to_dict(self) -> dict[str, Any]:
        first = self.first_promotion
        return {
            "name": self.name,
            "stage": self.stage,
            "at": self.at,
            "held": self.held,
            "version": self.version,
            "event": asdict(self.event) if self.event is not None else None,
            "first_promotion": asdict(first) if first is not None else None,
        }


def holding_at(events: Sequence[HistoryEvent], name: str, stage: str, moment: datetime) -> Holding:
    """What ``stage`` of model ``name`` held at ``moment``, from the model's ``events`` (kgit history's:
    rollbacks already labelled "rolled back", notes filled in)."""
    own = [
        e
        for e in in_order(events)
        if e.name == name and e.stage == stage and e.event in ("promoted", "rolled back", "demoted")
    ]
    dated = [(e, t) for e in own if (t := when_of(e)) is not None]
    before = [e for e, t in dated if t <= moment]
    last = before[-1] if before else None  # the last in counter order made by then
    promotions = [(t, e) for e, t in dated if e.event != "demoted"]
    first = min(promotions, key=lambda te: te[0])[1] if promotions else None
    version = last.version if last is not None and last.event != "demoted" else None
    return Holding(name, stage, moment.isoformat(), version, last, first)


def stages_of(events: Sequence[HistoryEvent], name: str) -> list[str]:
    """Every stage model ``name`` has an event tag for, sorted."""
    return sorted({e.stage for e in events if e.name == name and e.stage})
