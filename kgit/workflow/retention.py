"""``kgit gc``: reclaim the storage of releases nobody keeps, never a byte a kept release needs.

A **policy** says which releases are kept (``.kgit/retention.yaml``, or flags over it): the newest N
versions of each model, every version that ever held a stage, every signed version, every version
whose release commit is reachable from given refs. Releases kgit cannot judge (a tag that is not a
valid release) and releases present in this work tree are always kept.

The **plan** is computed from git and the storages' own listings, state not events:

- the objects of a release are its version folders' DVC directory objects and the files they list;
- an object may be deleted only if some dropped release has it and nothing else does: no kept
  release, and no DVC output outside the released versions (a dataset's ``.dvc`` file, a pipeline's
  ``dvc.lock``) in any commit of any branch or tag;
- a kept release whose listing can be read neither here nor in the storage being collected stops
  the plan: kgit cannot prove what it needs, so it deletes nothing.

``plan`` decides (a pure function, what the property-based tests attack); ``collect`` deletes, under
kgit's repository lock, only what the plan decided. Dry run by default. Collected from the DVC remote,
a release leaves a record there (kgit.store.storage.write_collected), so ``kgit get`` and ``kgit
check`` say "collected" instead of "missing", on every clone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kgit.core import bounded_yaml, layout
from kgit.core.errors import KgitError, did_you_mean
from kgit.core.metadata import MAX_FILE_BYTES
from kgit.core.sizes import human_size
from kgit.registry import catalog
from kgit.registry.versions import Version, parse_tag
from kgit.store import collected
from kgit.store.git_ops import Repo

RETENTION_FILE = ".kgit/retention.yaml"
POLICY_KEYS = ("keep_last", "keep_stages", "keep_signed", "keep_refs")
DEFAULT_KEEP_LAST = 5


@dataclass(frozen=True)
class Policy:
    """Which releases are kept. ``keep_last`` None: every version (nothing is dropped for age)."""

    keep_last: int | None = DEFAULT_KEEP_LAST
    keep_stages: bool = True
    keep_signed: bool = True
    keep_refs: tuple[str, ...] = ()
    source: str = "defaults"  # where it came from: defaults, .kgit/retention.yaml, flags

    def describe(self) -> str:
        parts = [
            f"keep the last {self.keep_last} of each model" if self.keep_last is not None else "keep every version"
        ]
        if self.keep_stages:
            parts.append("every version that ever held a stage")
        if self.keep_signed:
            parts.append("every signed version")
        if self.keep_refs:
            parts.append("everything reachable from " + ", ".join(self.keep_refs))
        return "; ".join(parts) + f" ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep_last": self.keep_last,
            "keep_stages": self.keep_stages,
            "keep_signed": self.keep_signed,
            "keep_refs": list(self.keep_refs),
            "source": self.source,
        }


def read_policy(repo: Repo, **flags: Any) -> Policy:
    """The policy of ``.kgit/retention.yaml`` in the work tree (defaults where it is silent or absent),
    each flag given (not None) replacing its key."""
    path = repo.root / RETENTION_FILE
    values: dict[str, Any] = {}
    source = "defaults"
    if path.exists():
        data = bounded_yaml.load(path.read_bytes(), RETENTION_FILE, max_bytes=MAX_FILE_BYTES, max_nodes=1000)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise KgitError(f"{RETENTION_FILE} must be a mapping of {', '.join(POLICY_KEYS)}")
        for key in data:
            if key not in POLICY_KEYS:
                raise KgitError(
                    f"{RETENTION_FILE}: unknown key {str(key)[:60]!r}: "
                    + did_you_mean(str(key), POLICY_KEYS, "use " + ", ".join(POLICY_KEYS))
                )
        values.update(data)
        source = RETENTION_FILE
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    if given:
        values.update(given)
        source = f"{source} and flags" if source != "defaults" else "flags"
    return Policy(
        keep_last=_keep_last(values.get("keep_last", DEFAULT_KEEP_LAST)),
        keep_stages=_flag(values.get("keep_stages", True), "keep_stages"),
        keep_signed=_flag(values.get("keep_signed", True), "keep_signed"),
        keep_refs=_refs(values.get("keep_refs", ())),
        source=source,
    )


def _keep_last(value: Any) -> int | None:
    if value is None or value == "all":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KgitError(f"keep_last must be a whole number of versions (0 or more) or all, not {str(value)[:40]!r}")
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise KgitError(f"{key} must be true or false, not {str(value)[:40]!r}")
    return value


def _refs(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(r, str) and r for r in items):
        raise KgitError("keep_refs must be a list of git refs (branches, tags or commits)")
    return tuple(items)


# -- what gc knows of each release, and the decision (pure: no git, no DVC) ---------------------
@dataclass(frozen=True)
class Holding:
    """One release as gc judges it."""

    tag: str
    name: str
    version: Version | None  # None: the tag is not a valid release (always kept)
    tops: tuple[str, ...]  # the DVC object of each format (a directory object ``<md5>.dir``)
    staged: bool = False  # ever held a stage
    signed: bool = False
    reachable: bool = False  # from one of the policy's refs
    here: bool = False  # present in this work tree


def choose(holdings: Iterable[Holding], policy: Policy) -> dict[str, list[str]]:
    """For each release tag, why it is kept (empty: dropped)."""
    held = list(holdings)
    reasons: dict[str, list[str]] = {h.tag: [] for h in held}
    by_model: dict[str, list[Holding]] = {}
    for h in held:
        if h.version is None:
            reasons[h.tag].append("not a valid release: never collected")
            continue
        by_model.setdefault(h.name, []).append(h)
        if policy.keep_stages and h.staged:
            reasons[h.tag].append("held a stage")
        if policy.keep_signed and h.signed:
            reasons[h.tag].append("signed")
        if h.reachable:
            reasons[h.tag].append("reachable from " + ", ".join(policy.keep_refs))
        if h.here:
            reasons[h.tag].append("present in this work tree")
    for versions in by_model.values():
        newest = sorted(versions, key=lambda h: h.version, reverse=True)  # type: ignore[arg-type,return-value]
        keep = len(newest) if policy.keep_last is None else policy.keep_last
        for h in newest[:keep]:
            reasons[h.tag].append(f"one of the last {keep}" if policy.keep_last is not None else "every version kept")
    return reasons


def objects_of(tops: Iterable[str], listings: Mapping[str, list[str] | None]) -> set[str]:
    """The objects of these tops: each top, and each file its listing names (when it could be read)."""
    found: set[str] = set()
    for top in tops:
        found.add(top)
        found.update(listings.get(top) or ())
    return found


def doomed(
    holdings: Iterable[Holding],
    kept: Mapping[str, list[str]],
    listings: Mapping[str, list[str] | None],
    protected: Iterable[str] = (),
) -> set[str]:
    """The objects that only dropped releases have: what gc may delete. A kept top without a
    listing is the caller's to refuse before this (``unprovable``)."""
    held = list(holdings)
    keep = set(protected)
    drop: set[str] = set()
    for h in held:
        (keep if kept.get(h.tag) else drop).update(objects_of(h.tops, listings))
    return drop - keep


def unprovable(
    holdings: Iterable[Holding], kept: Mapping[str, list[str]], listings: Mapping[str, list[str] | None]
) -> list[str]:
    """Kept releases whose listing could not be read anywhere: what they need cannot be proven."""
    return [
        h.tag
        for h in holdings
        if kept.get(h.tag) and any(t.endswith(".dir") and listings.get(t) is None for t in h.tops)
    ]


# -- gathering the facts from git -----------------------------------------------------------------
def holdings(repo: Repo, policy: Policy) -> tuple[list[Holding], set[str]]:
    """Every release tag of the repository (all models), as ``choose`` judges them, and the paths of
    their ``.dvc`` files."""
    reg = catalog.read(repo, remember=False)
    staged = {(e.name, e.version) for e in reg.events if e.event in ("promoted", "rolled back") and e.version}
    texts = repo.show_files([(r.commit, layout.dvc_file(i["path"])) for r in reg.releases for i in r.formats.values()])
    tips = _ref_commits(repo, policy.keep_refs)
    reachable = repo.reachable_from([r.commit for r in reg.releases], tips) if tips else set()
    found = []
    for r in reg.releases:
        problems, meta = catalog.checked_metadata(repo, r, texts)
        parsed = parse_tag(r.tag)
        tops = tuple(str(i.get("md5")) for i in r.formats.values() if i.get("md5"))
        here = any((repo.root / i["path"]).exists() for i in r.formats.values())
        found.append(
            Holding(
                tag=r.tag,
                name=r.name,
                version=parsed[1] if parsed is not None and not problems else None,
                tops=tops,
                staged=(r.name, r.version) in staged,
                signed=bool(meta is not None and meta.signed_by),
                reachable=r.commit in reachable,
                here=here,
            )
        )
    return found, {layout.dvc_file(i["path"]) for r in reg.releases for i in r.formats.values()}


def _ref_commits(repo: Repo, refs: Iterable[str]) -> list[str]:
    commits = []
    for ref in refs:
        code, out, _ = repo.try_git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if code != 0 or not out.strip():
            raise KgitError(f"keep_refs: {ref!r} is not a branch, tag or commit here: fetch it or fix the policy")
        commits.append(out.strip())
    return commits


def _is_dvc_file(path: str) -> bool:
    return layout.is_dvc_file(path) or path.rsplit("/", 1)[-1] == layout.DVC_LOCK


def other_outputs(repo: Repo, released_paths: set[str]) -> set[str]:
    """The DVC objects of every output outside the released versions, in any commit of any branch or
    tag and in the work tree (committed or not): the ``.dvc`` and ``dvc.lock`` files, less the
    released versions' own ``.dvc`` files. What gc never touches, whatever the policy."""
    out = repo.git("rev-list", "--objects", "--all")
    wanted: dict[str, str] = {}
    for line in out.splitlines():
        oid, _, path = line.partition(" ")
        if path and path not in released_paths and _is_dvc_file(path):
            wanted.setdefault(oid, path)
    texts = [(wanted[oid], text) for oid, text in repo.read_blobs(list(wanted), max_bytes=MAX_FILE_BYTES).items()]
    listed = repo.git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for path in (p for p in listed if p and p not in released_paths and _is_dvc_file(p)):
        try:
            with (repo.root / path).open("rb") as fh:
                texts.append((path, fh.read(MAX_FILE_BYTES + 1).decode("utf-8", errors="replace")))
        except OSError:
            continue
    return _outs(texts)


def _outs(texts: Iterable[tuple[str, str | None]]) -> set[str]:
    """The ``md5`` of every output of these ``.dvc`` / ``dvc.lock`` texts (path, text)."""
    from kgit.store.dvc_ops import read_dvc_file

    found: set[str] = set()
    for path, text in texts:
        if text is None:
            continue
        try:
            if layout.is_dvc_file(path):
                outs = read_dvc_file(text, path).get("outs") or []
            else:
                data = bounded_yaml.load(text, path, max_bytes=MAX_FILE_BYTES, max_nodes=100_000)
                stages = (data or {}).get("stages") if isinstance(data, dict) else None
                outs = [o for s in (stages or {}).values() if isinstance(s, dict) for o in (s.get("outs") or [])]
        except KgitError:
            continue  # not a DVC file kgit can read: it protects nothing gc could name
        for o in outs:
            md5 = o.get("md5") if isinstance(o, dict) else None
            if isinstance(md5, str):
                found.add(md5)
    return found


# -- the plan and its execution -------------------------------------------------------------------
@dataclass
class StorePlan:
    where: str  # "the DVC cache" or "the DVC remote NAME (URL)"
    objects: list[str] = field(default_factory=list)  # to delete
    bytes: int = 0
    deleted: int = 0  # objects deleted (0 in a dry run)

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "objects": len(self.objects), "bytes": self.bytes, "deleted": self.deleted}


@dataclass
class GcResult:
    policy: Policy
    kept: dict[str, list[str]]  # tag -> reasons
    dropped: list[str]  # tags
    stores: list[StorePlan]
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "dry_run": self.dry_run,
            "kept": [{"tag": t, "why": w} for t, w in self.kept.items()],
            "dropped": self.dropped,
            "stores": [s.to_dict() for s in self.stores],
            "bytes": sum(s.bytes for s in self.stores),
        }


def gc(repo: Repo, policy: Policy, *, remote: str | None = None, delete: bool = False, log: Any = None) -> GcResult:
    """Plan (and with ``delete``, carry out) the collection of the local DVC cache and, with
    ``remote`` (a DVC remote's name, or "" for the default one), of that remote too."""
    from kgit.store import storage, txn

    say = log or (lambda _m: None)
    with txn.writing(repo, log=say) if delete else contextlib.nullcontext():
        held, released_paths = holdings(repo, policy)
        kept = choose(held, policy)
        dropped = [h.tag for h in held if not kept[h.tag]]
        protected = other_outputs(repo, released_paths)
        with storage.gc_stores(repo.root, remote) as stores:
            tops = sorted({t for h in held for t in h.tops} | protected)
            listings = storage.listings(stores, tops)  # from whichever storage holds them
            blind = unprovable(held, kept, listings) + [t for t in sorted(protected) if listings.get(t, []) is None]
            if blind:
                what = blind[0] if "@" in blind[0] else f"DVC output {blind[0]} (outside the releases)"
                raise KgitError(
                    f"{what} is kept, but the list of its files is in neither the DVC cache nor the remote: "
                    "kgit cannot prove what it needs, so it deletes nothing (fetch it, or run gc where it is)"
                )
            gone = sorted(doomed(held, kept, listings, objects_of(protected, listings)))
            plans = []
            for store in (s for s in stores if s.collect):
                present = storage.sizes(store, gone)  # what this storage holds of them
                plans.append(StorePlan(store.where, sorted(present), sum(present.values())))
            if delete:
                by_tag = {h.tag: h for h in held}
                for store, plan in zip((s for s in stores if s.collect), plans):
                    if store.remote:
                        records = [_record(repo, by_tag[t], policy) for t in dropped if by_tag[t].tops]
                        storage.write_collected(store, records)
                        collected.remember(repo, records)  # `kgit list` here marks them at once
                    say(f"deleting {len(plan.objects)} object(s) ({human_size(plan.bytes)}) from {plan.where}")
                    plan.deleted = storage.delete(store, plan.objects)
    return GcResult(policy, {t: w for t, w in kept.items() if w}, dropped, plans, not delete)


def _record(repo: Repo, h: Holding, policy: Policy) -> dict[str, Any]:
    who = repo.config_get("user.name") or "unknown"
    return {
        "tag": h.tag,
        "tops": list(h.tops),
        "collected_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "by": who[:200],
        "policy": policy.describe(),
    }
