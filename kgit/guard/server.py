"""The server-side guard: a ``pre-receive`` hook for the bare repository everyone pushes to.

Client hooks can be skipped (``git push --no-verify``) or never installed; a server hook cannot.
``kgit server install BARE_REPO`` puts kgit's check in the bare repository's ``pre-receive`` hook
(chaining any hook already there). For each push it rejects, with a one-line reason the pusher sees
as ``remote: kgit: ...``:

- deleting or moving a release tag (``NAME@vX.Y.Z``) or a stage/deprecation tag;
- a branch update (non-fast-forward or deletion) that drops a release commit from every branch;
- commits that change or delete a released version's ``.dvc`` file;
- a new release tag that is not a consistent kgit release (its message, ``.dvc`` files and metadata
  must agree with its name), or a lightweight/foreign tag using a kgit model's release tag name;
- a stage tag pointing at an unknown, invalid or deprecated version; a stage or deprecation tag whose
  counter is not its model's next; a promotion the gates in ``.kgit/gates.yaml`` (as on the HEAD
  branch before the push; every branch's if HEAD names none) refuse, or a false rollback
  (kgit.registry.stage_checks, the same judgement as the client's pre-push hook);
- a compat record (``NAME@vX.Y.Z#compat#KEY``) that is lightweight, malformed, or not on its release's
  commit (kgit.registry.compat_records);
- a new release whose DVC objects are not in the DVC remote (``--remote``, else the default
  remote named in the tagged commit's ``.dvc/config``);
- with signing keys in the repository, changes under ``.kgit/`` not endorsed by a key already trusted.

Git only, plus DVC's filesystem for the data check: no TensorFlow. The same checks run in a clone
for hosted forges without server hooks (``kgit check``).
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kgit.core import layout
from kgit.core.errors import KgitError
from kgit.guard import invariants
from kgit.registry import catalog
from kgit.registry.catalog import Release
from kgit.registry.versions import parse_compat, parse_event, parse_tag
from kgit.store import dvc_remotes, githooks, txn
from kgit.store.git_ops import Repo, hook_records

ZERO = invariants.ZERO
HOOK = "pre-receive"
REMOTE_CONFIG_KEY = "kgit.dvcRemote"
REMOTE_OPTION_KEY = "kgit.dvcRemoteOption"  # multi-valued: KEY=VALUE, the remote's DVC settings


@dataclass
class Update:
    old: str
    new: str
    ref: str


def parse_updates(text: str) -> list[Update]:
    return [Update(*fields) for fields in hook_records(text, 3)]


# -- install -----------------------------------------------------------------------------------
def install(
    path: str | Path, dvc_remote: str | None = None, dvc_remote_options: dict[str, str] | None = None
) -> list[str]:
    """Install kgit's pre-receive hook in the bare repository at ``path`` (idempotent).

    ``dvc_remote_options`` are the remote's DVC settings (``endpointurl``, ``region``, ``profile``...),
    kept in the bare repository's git config; credentials are refused there: the hook takes them from
    the server's environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``, ``~/.aws``)."""
    repo = _bare(path)
    if dvc_remote_options:
        _check_server_options(repo, dvc_remote, dvc_remote_options)
    changes = githooks.install(repo, (HOOK,))
    if dvc_remote is not None:
        if repo.config_get(REMOTE_CONFIG_KEY) != dvc_remote:
            repo.config_set(REMOTE_CONFIG_KEY, dvc_remote)
            changes.append(f"set {REMOTE_CONFIG_KEY} = {dvc_remote} (the DVC remote pushed releases must be in)")
    if dvc_remote_options:
        wanted = [f"{k}={v}" for k, v in sorted(dvc_remote_options.items())]
        if _stored_options(repo) != dict(sorted(dvc_remote_options.items())):
            repo.git("config", "--unset-all", REMOTE_OPTION_KEY, check=False)
            for item in wanted:
                repo.git("config", "--add", REMOTE_OPTION_KEY, item)
            changes.append(f"set {REMOTE_OPTION_KEY} = {', '.join(wanted)} (the DVC remote's settings)")
    return changes


def _check_server_options(repo: Repo, dvc_remote: str | None, options: dict[str, str]) -> None:
    from kgit.store import dvc_ops

    url = dvc_remote or repo.config_get(REMOTE_CONFIG_KEY)
    if not url:
        raise KgitError("--remote-option needs the remote it configures: give --remote URL too")
    secret = sorted(k for k in options if k in dvc_remotes.SECRET_OPTIONS)
    if secret:
        raise KgitError(
            f"--remote-option {secret[0]}: credentials are not stored in the repository's config; "
            "give them to the hook through the server's environment (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws of the user git runs as)"
        )
    dvc_remotes.require_plugin(url)
    dvc_ops.check_remote_options(url, options, "--remote-option")


def _stored_options(repo: Repo) -> dict[str, str]:
    out = repo.git("config", "--get-all", REMOTE_OPTION_KEY, check=False)
    pairs = (line.partition("=") for line in out.splitlines() if "=" in line)
    return dict(sorted((k, v) for k, _, v in pairs))


def uninstall(path: str | Path) -> list[str]:
    repo = _bare(path)
    changes = githooks.uninstall(repo, (HOOK,))
    if repo.config_get(REMOTE_CONFIG_KEY) is not None:
        repo.git("config", "--unset", REMOTE_CONFIG_KEY, check=False)
        changes.append(f"removed {REMOTE_CONFIG_KEY}")
    if _stored_options(repo):
        repo.git("config", "--unset-all", REMOTE_OPTION_KEY, check=False)
        changes.append(f"removed {REMOTE_OPTION_KEY}")
    return changes


def _bare(path: str | Path) -> Repo:
    repo = Repo(path, bare=True)
    if not repo.bare:
        raise KgitError(
            f"{path} has a work tree: `kgit server install` is for the bare repository people push to "
            "(for your own clone, `kgit hooks install` installs the client githooks)"
        )
    return repo


# -- the checks ----------------------------------------------------------------------------------
@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    new_releases: list[Release] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # shown to the pusher whatever the verdict


def check_updates(
    repo: Repo,
    updates: list[Update],
    dvc_remote: str | None = None,
    dvc_remote_options: dict[str, str] | None = None,
    *,
    check_data: bool = True,
) -> Verdict:
    """Everything the pre-receive hook refuses, as one-line problems (empty: accept the push)."""
    verdict = Verdict()
    # the tags are read only if the push needs them: a plain push that touches no release reads none
    known = invariants.KnownReleases(repo, remember=False, extra=verdict.new_releases)
    pushed_events: list[tuple[str, str, str]] = []  # (tag, commit, tag object)
    pushed_compat: list[tuple[str, str]] = []  # (tag, tag object)
    tips: list[invariants.Tip] = []
    allowed = _allowed_refs(repo)
    for u in updates:
        if not u.ref.startswith(invariants.OWN_NAMESPACES):
            if u.new != ZERO and not any(fnmatch.fnmatchcase(u.ref, glob) for glob in allowed):
                verdict.problems.append(invariants.foreign_ref_problem(u.ref))
            continue
        change = invariants.protected_tag_change(u.ref, u.old, u.new)
        if change:
            verdict.problems.append(change)
            continue
        if u.ref.startswith("refs/tags/") and u.new != ZERO:
            tag = u.ref[len("refs/tags/") :]
            problem = invariants.new_tag_problem(repo, tag, u.new)
            if problem:
                verdict.problems.append(problem)
            elif parse_tag(tag) is not None:
                _check_new_release(repo, tag, u.new, known, verdict)
            elif parse_event(tag) is not None:
                target = repo.git("rev-parse", "--verify", "-q", f"{u.new}^{{commit}}", check=False)
                pushed_events.append((tag, target, u.new))
            elif parse_compat(tag) is not None:
                pushed_compat.append((tag, u.new))
        elif u.ref.startswith("refs/heads/") and u.new != ZERO:
            verdict.problems += _trust_problems(repo, u)
            tips.append(
                invariants.Tip(u.ref[len("refs/heads/") :], u.old if u.old != ZERO else _held_base(repo, u.new), u.new)
            )
    heads = [u for u in updates if u.ref.startswith("refs/heads/")]
    if heads or verdict.new_releases:
        before = _branches(repo)
        after = {**before, **{u.ref: u.new for u in heads}}
        after = {ref: sha for ref, sha in after.items() if sha != ZERO}
        verdict.problems += _lost_releases(repo, heads, after, known)
        others = {ref[len("refs/heads/") :]: sha for ref, sha in after.items() if ref not in {u.ref for u in heads}}
        verdict.problems += invariants.tip_problems(
            repo, tips, lambda: known.reg.releases, verdict.new_releases, others
        )
        held = repo.reachable_from([r.commit for r in verdict.new_releases], list(after.values()))
        verdict.problems += [
            f"new tag {r.tag}: no branch holds its release commit {r.commit[:8]}: push the branch "
            "it was released on with it"
            for r in verdict.new_releases
            if r.commit not in held
        ]
    if pushed_compat:  # before the gates: a promotion may count on a record the same push brings
        verdict.problems += _check_compat(repo, known, verdict, pushed_compat)
    if pushed_events:
        verdict.problems += _check_events(known.reg, verdict.new_releases, pushed_events)
        verdict.problems += _gate_problems(repo, known.reg, verdict, pushed_events)
    if check_data and verdict.new_releases and not verdict.problems:
        verdict.problems += data_problems(repo, verdict.new_releases, dvc_remote, dvc_remote_options)
    return verdict


def _allowed_refs(repo: Repo) -> list[str]:
    return repo.git("config", "--get-all", invariants.ALLOW_REF_KEY, check=False).split()


def _held_base(repo: Repo, new: str) -> str | None:
    """For a new branch: the tip of a branch the server holds (so checked already) that ``new``
    contains, to check the new branch against as if it moved from there; None: check it whole."""
    out = repo.git(
        "for-each-ref",
        f"--merged={new}",
        "--count=1",
        "--sort=-committerdate",
        "--format=%(objectname)",
        "refs/heads/",
        check=False,
    )
    return out.strip() or None


def _branches(repo: Repo) -> dict[str, str]:
    """Every branch's ref name and tip before the push."""
    out = repo.git("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")
    return {ref: sha for ref, _, sha in (line.partition(" ") for line in out.splitlines())}


def _check_new_release(repo: Repo, tag: str, oid: str, known: invariants.KnownReleases, verdict: Verdict) -> None:
    parsed = parse_tag(tag)
    assert parsed is not None
    info = repo.tag_object(oid, tag)
    rel = catalog.release_from_tag(info) if info is not None else None
    if rel is None:
        commit = info.target if info is not None else oid
        kgit_model = (
            any(r.name == parsed[0] for r in known.reg.releases)
            or repo.try_git("cat-file", "-e", f"{commit}:{layout.model_dir(parsed[0])}")[0] == 0
        )
        if kgit_model:
            what = "a lightweight tag" if info is not None and not info.annotated else "not a kgit release tag"
            verdict.problems.append(
                f"new tag {tag} is {what}, but {parsed[0]} is a kgit model: "
                "release versions with `kgit release`, which tags them"
            )
        return
    problems = catalog.release_problems(repo, rel)
    if problems:
        verdict.problems.append(f"new tag {tag} is not a valid release: {problems[0]}")
        return
    verdict.new_releases.append(rel)


def _check_events(reg: catalog.Registry, new: list[Release], events: list[tuple[str, str, str]]) -> list[str]:
    """Stage and deprecation tags must point at a valid, known, not deprecated release."""
    problems = []
    releases = [r for r in reg.releases + new if r.valid]
    by_commit = {(r.name, r.commit): r for r in releases}
    by_key = {(r.name, r.key): r for r in releases}
    deprecating = set()
    for tag, _commit, _oid in events:
        event = parse_event(tag)
        if event is not None and event.kind == "deprecate" and event.version is not None:
            deprecating.add((event.name, event.version.key))
    for tag, commit, _oid in events:
        event = parse_event(tag)
        assert event is not None
        if event.kind == "deprecate" and event.version is not None:
            if (event.name, event.version.key) not in by_key:
                problems.append(f"new tag {tag} deprecates {event.name}@{event.version}, which is not a valid release")
            continue
        if event.kind != "promote":
            continue
        rel = by_commit.get((event.name, commit))
        if rel is None:
            problems.append(
                f"new stage tag {tag} points at {commit[:8]}, which is not a release commit of a valid "
                f"{event.name} version"
            )
        elif rel.deprecated or (rel.name, rel.key) in deprecating:
            problems.append(
                f"new stage tag {tag} puts {rel.name}@{rel.version} in {event.stage}, but that version is deprecated"
            )
    return problems


def _check_compat(
    repo: Repo, known: invariants.KnownReleases, verdict: Verdict, pushed: list[tuple[str, str]]
) -> list[str]:
    """Each new compat record must be well formed and on its (valid) release's commit; the valid ones
    are attached to their releases, where the ``require_compat`` gates look for them."""
    from kgit.registry import compat_records

    releases = [*known.reg.releases, *verdict.new_releases]
    problems = []
    for tag, oid in pushed:
        record, problem = compat_records.push_problem(repo.tag_object(oid, tag), tag, releases)
        if problem is not None:
            problems.append(problem)
        elif record is not None:
            compat_records.attach([record], releases)
    return problems


def _gate_problems(
    repo: Repo, reg: catalog.Registry, verdict: Verdict, events: list[tuple[str, str, str]]
) -> list[str]:
    """The new stage and deprecation tags kgit.registry.stage_checks refuses (as the client's pre-push hook
    does), with the gates in ``.kgit/gates.yaml`` as committed on this repository's HEAD branch
    *before* the push (refs are not updated yet while pre-receive runs), so a push that weakens the
    file and brings a stage tag is judged by the rule it weakens; if HEAD names no existing branch,
    every branch's rules (kgit.registry.gates.read_on_server), never none."""
    from kgit.registry import gates, stage_checks

    def read_gates() -> gates.Gates:
        found = gates.read_on_server(repo)
        if found.note:
            verdict.notes.append(found.note)
        return found

    log = stage_checks.StageLog.of(reg, releases=verdict.new_releases)
    new = stage_checks.read_new(repo, [(tag, oid) for tag, _commit, oid in events])
    problems = [
        f"new {'deprecation' if '@' in tag else 'stage'} tag {tag}: {why}"
        for tag, why in stage_checks.problems(log, new, read_gates)
    ]
    if problems:
        verdict.notes.append(
            "git takes or refuses a push whole: delete the refused tag in your clone (git tag -d TAG) "
            "or push the rest without it (git push --no-follow-tags origin BRANCH, then other tags "
            "by name: git push origin refs/tags/NAME@vX.Y.Z)"
        )
    return problems


def _lost_releases(
    repo: Repo, updates: list[Update], after: dict[str, str], known: invariants.KnownReleases
) -> list[str]:
    """Release commits some branch held before the push that no branch holds after it (branches
    rewritten or deleted, however many at once): the state after the push, not each update alone."""
    gone = [
        u.old
        for u in updates
        if u.ref.startswith("refs/heads/")
        and u.old != ZERO
        and (u.new == ZERO or repo.try_git("merge-base", "--is-ancestor", u.old, u.new)[0] != 0)
    ]
    if not gone:
        return []
    out = repo.git(
        "log",
        f"--format=%H %(trailers:key={txn.TRAILER},valueonly,separator=%x20)",
        *gone,
        "--not",
        *after.values(),
        "--",
    )
    if not out.strip():
        return []
    release_commits = {r.commit: r for r in known.reg.releases + known.extra if r.valid}
    lost = []
    for line in out.splitlines():
        sha, _, tags = line.partition(" ")
        lost += [release_commits[sha].tag] if sha in release_commits else [t for t in tags.split() if parse_tag(t)]
    if not lost:
        return []
    return [
        f"the push leaves no branch holding the release commit of {', '.join(sorted(set(lost))[:3])} "
        "(a branch rewritten or deleted): merge or rebase onto it instead"
    ]


def _trust_problems(repo: Repo, u: Update) -> list[str]:
    """Changes under .kgit/ (keys, policy) must be endorsed by a key trusted before the push."""
    from kgit.trust import keyring

    old = u.old if u.old != ZERO else None
    return keyring.unendorsed_changes(repo.git_dir, old, u.new)


def data_problems(
    repo: Repo, releases: list[Release], dvc_remote: str | None, options: dict[str, str] | None = None
) -> list[str]:
    """Each release's DVC objects must be in its remote before its tag is accepted: ``dvc_remote``
    with ``options``, else the default remote of the release commit's .dvc/config with its shared
    settings (``endpointurl``, ``region``...; credentials come from the server's environment)."""
    from kgit.store import storage

    problems = []
    for rel in releases:
        url, settings = (dvc_remote, options or {}) if dvc_remote else _remote_at(repo, rel.commit)
        if url is None:
            problems.append(
                f"cannot check that {rel.tag}'s data was uploaded: its commit's .dvc/config names no "
                "default DVC remote (install the hook with `kgit server install --remote URL`)"
            )
            continue
        if "://" not in url and not Path(url).expanduser().is_absolute():
            problems.append(
                f"cannot check that {rel.tag}'s data was uploaded: its DVC remote {url!r} is a relative "
                "path (install the hook with `kgit server install --remote URL`)"
            )
            continue
        oids = {str(i.get("md5")): fmt for fmt, i in rel.formats.items()}
        try:
            odb, where = storage.odb_at_url(str(Path(url).expanduser()) if "://" not in url else url, settings)
            absent = storage.missing(odb, oids, where)
            wrong = storage.identity_problems(odb, [(o, (rel.name, rel.version, f)) for o, f in oids.items()], where)
        except KgitError as exc:
            problems.append(f"cannot check that {rel.tag}'s data was uploaded: {exc}")
            continue
        for oid, objs in absent.items():
            problems.append(
                f"{rel.tag} ({oids[oid]}): {len(objs)} DVC object(s) are not in the DVC remote {url}: "
                "push the data first (kgit's pre-push hook does; or `dvc push`), then push the tag"
            )
        for oid, _want, why in wrong:
            problems.append(
                f"new tag {rel.tag} ({oids[oid]}) is not a valid release: {why} (a tag made by hand "
                "over another release's data)"
            )
    return problems


def _remote_at(repo: Repo, commit: str) -> tuple[str | None, dict[str, str]]:
    """The default DVC remote's URL in ``commit``'s .dvc/config, and its settings but the personal
    ones (a pushed commit does not choose which files or credentials of the server are used)."""
    from kgit.store.dvc_remotes import PERSONAL_OPTIONS, default_remote_config_in

    text = repo.show_file(commit, ".dvc/config")
    settings = default_remote_config_in([text])[1] if text else {}
    url = settings.pop("url", None)
    return url, {k: v for k, v in settings.items() if k not in PERSONAL_OPTIONS}


# -- the hook --------------------------------------------------------------------------------------
def pre_receive(text: str, repo: Repo | None = None) -> int:
    """The pre-receive hook; returns the exit code (non-zero rejects the whole push)."""
    repo = repo or Repo(".", bare=True)
    updates = parse_updates(text)
    if not updates:
        return 0
    try:
        remote = repo.config_get(REMOTE_CONFIG_KEY)
        verdict = check_updates(repo, updates, remote, _stored_options(repo) if remote else None)
    except KgitError as exc:
        verdict = Verdict([f"could not check the push: {exc}"])
    if not verdict.problems:
        for note in verdict.notes:
            sys.stderr.write(f"kgit: note: {note}\n")
        return 0
    for p in verdict.problems:
        sys.stderr.write(f"kgit: rejected: {p}\n")
    for note in verdict.notes:
        sys.stderr.write(f"kgit: note: {note}\n")
    sys.stderr.write(
        "kgit: push rejected by kgit's server hook: released models are immutable and must be "
        "complete (see `kgit check` and kgit's threat model, docs/threat-model.md)\n"
    )
    return 1


# -- the same checks in a clone (hosted forges without server githooks) --------------------------------
def check_clone(repo: Repo, since: str | None = None, *, check_data: bool = True) -> list[str]:
    """What the server hook would refuse, found in a clone (``kgit check``): every release tag
    consistent, every stage tag on a valid version, every release's data in the DVC remote, and with
    ``since`` the commits since then changing no release and no trust unendorsed."""
    reg = catalog.read(repo, remember=False)
    found = {r.tag: catalog.release_problems(repo, r) for r in reg.releases}
    # releases that share their data: the data read from the remote tells which is genuine
    undecided = {r.tag for r in reg.releases if check_data and r.only_shares_data and len(found[r.tag]) == 1}
    problems = [f"{tag} is not a valid release: {p[0]}" for tag, p in found.items() if p and tag not in undecided]
    valid = [r for r in reg.releases if not found[r.tag] or r.tag in undecided]
    for e in reg.events:
        if e.event == "promoted" and e.version is None:
            problems.append(f"stage tag {e.tag} points at {e.commit[:8]}, which is not a valid release of {e.name}")
    problems += [f"compat record {c.tag} is not valid: {c.problems[0]}" for c in reg.compat if not c.valid]
    for r in valid:
        if r.deprecated and r.stages:
            problems.append(f"{r.tag} is deprecated but still in stage {', '.join(r.stages)}: demote it")
    problems += [
        f"tag {t[:80]!r} looks like a kgit release or stage tag but is not in kgit's exact form: "
        "delete it (git push origin :refs/tags/TAG)"
        for t in repo.tag_names()
        if invariants.is_lookalike(t)
    ]
    tips = _clone_tips(repo)
    files = invariants.released_files(repo, valid)
    for tip, name in tips.items():
        problems += invariants.problems(repo, tip, [tip], files, name)
    if since is not None and since.strip("0"):  # CI systems pass all zeros for a new branch: nothing before
        head = repo.git("rev-parse", "HEAD")
        base = repo.git("rev-parse", "--verify", "-q", f"{since}^{{commit}}", check=False)
        if not base:
            raise KgitError(f"--since {since!r} is not a commit here (fetch it, or use the pipeline's before-SHA)")
        problems += _trust_problems(repo, Update(base, head, "refs/heads/HEAD"))
    if check_data and valid:
        problems += _clone_data_problems(repo, valid)
    return problems


def _clone_tips(repo: Repo) -> dict[str, str]:
    """Every tip a clone knows (HEAD, its branches, the remotes' branches): commit -> a name for it."""
    out = repo.git("for-each-ref", "--format=%(objectname) %(refname:short)", "refs/heads/", "refs/remotes/")
    tips: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        if not name.endswith("/HEAD"):
            tips.setdefault(sha, f"branch {name}")
    head = repo.head()
    if head:
        tips.setdefault(head, "HEAD")
    return tips


def _clone_data_problems(repo: Repo, releases: list[Release]) -> list[str]:
    from kgit.store import storage

    name, url = dvc_remotes.remote_url(repo.root)
    if not name:
        return [
            "no default DVC remote is configured, so the releases' data cannot be checked: run `kgit init --remote URL`"
        ]
    oids = {str(i.get("md5")): (r, fmt) for r in releases for fmt, i in r.formats.items()}
    wanted = [(str(i.get("md5")), (r.name, r.version, fmt)) for r in releases for fmt, i in r.formats.items()]
    absent, wrong = storage.check_remote(repo.root, name, oids, wanted)
    if absent:  # releases kgit gc collected from the remote are collected, not missing
        records = storage.collected_in_remote(repo.root, name, sorted({oids[o][0].tag for o in absent}))
        absent = {o: objs for o, objs in absent.items() if o not in (records.get(oids[o][0].tag) or {}).get("tops", [])}
    return [
        f"{oids[o][0].tag} ({oids[o][1]}): {len(objs)} DVC object(s) are not in the DVC remote {name} ({url}): "
        "whoever released it must push its data (`git push` with kgit's hook, or `dvc push`)"
        for o, objs in absent.items()
    ] + [
        f"{n}@{v} ({f}) is not a valid release: {why} (a tag made by hand over another release's data)"
        for _o, (n, v, f), why in wrong
    ]
