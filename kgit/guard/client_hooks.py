"""What kgit's git hooks do: guard every push and every commit.

pre-push (``kgit hook pre-push REMOTE URL``, refs on stdin):
  1. find the releases the pushed refs bring (release commits in the pushed range, release tags)
     and any released version whose ``.dvc`` file the pushed commits change or delete;
  2. git only, no TensorFlow, no DVC: if nothing is new or changed, exit at once;
  3. validate what is new or changed through the ``kgit-validate`` stage of dvc.yaml
     (``dvc repro``; kgit validate is incremental, so versions validated at release are not redone);
  4. upload those versions' data to the default DVC remote (as ``dvc push`` does; a progress bar on a terminal),
     remembering per remote what was uploaded, so a retry after a failure uploads it again.

pre-commit: refuse a commit that modifies, deletes or renames a released version's ``.dvc`` file
(its metadata lives there), or adds files inside a released version's folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError, one_line
from kgit.core.layout import ARTIFACTS_DIR, DVC_YAML, STAGE_NAME
from kgit.core.sizes import human_size
from kgit.guard import invariants
from kgit.registry import catalog
from kgit.registry.versions import parse_compat, parse_event, parse_tag
from kgit.store import clone_state, dvc_remotes, txn
from kgit.store.git_ops import Repo, hook_records
from kgit.workflow import project
from kgit.workflow.roundtrip import FolderResult

ZERO = invariants.ZERO


@dataclass
class RefUpdate:
    local_ref: str
    local_sha: str
    remote_ref: str
    remote_sha: str


def parse_updates(text: str) -> list[RefUpdate]:
    return [RefUpdate(*fields) for fields in hook_records(text, 4)]


def updates_from_pre_commit_framework() -> list[RefUpdate]:
    """The pre-commit framework passes the push in environment variables, not on stdin."""
    to_ref = os.environ.get("PRE_COMMIT_TO_REF")
    if not to_ref:
        return []
    return [
        RefUpdate(
            os.environ.get("PRE_COMMIT_LOCAL_BRANCH", "HEAD"),
            to_ref,
            os.environ.get("PRE_COMMIT_REMOTE_BRANCH", ""),
            os.environ.get("PRE_COMMIT_FROM_REF") or ZERO,
        )
    ]


@dataclass
class PushPlan:
    tags: list[str] = field(default_factory=list)  # release tags the push brings
    violations: list[str] = field(default_factory=list)  # released versions changed by the push
    tag_changes: list[str] = field(default_factory=list)  # release/stage tags the push moves or deletes
    promotions: list[str] = field(
        default_factory=list
    )  # new stage/deprecation tags (kgit.registry.stage_checks judges them)
    compat: list[tuple[str, str]] = field(default_factory=list)  # new compat records: (tag, tag object)


def _remote_tip(repo: Repo, u: RefUpdate) -> str | None:
    """The tip the remote has for ``u``'s ref, when this clone has that commit (else None)."""
    if u.remote_sha == ZERO or repo.try_git("cat-file", "-e", f"{u.remote_sha}^{{commit}}")[0] != 0:
        return None
    return u.remote_sha


def _range(repo: Repo, u: RefUpdate, remote: str) -> list[str]:
    """Arguments for git log selecting the commits this update sends."""
    old = _remote_tip(repo, u)
    return [f"{old}..{u.local_sha}"] if old else [u.local_sha, "--not", f"--remotes={remote}"]


def plan_push(repo: Repo, updates: list[RefUpdate], remote: str) -> PushPlan:
    """Git only: which releases a push brings, and which released versions it changes."""
    plan = PushPlan()
    known = invariants.KnownReleases(repo)
    tips = []
    for u in updates:
        change = invariants.protected_tag_change(u.remote_ref, u.remote_sha, u.local_sha)
        if change:
            plan.tag_changes.append(change)
            continue
        if u.local_sha == ZERO:
            continue  # a deletion sends nothing
        if not u.remote_ref.startswith(("refs/heads/", "refs/tags/")):
            plan.violations.append(invariants.foreign_ref_problem(u.remote_ref))
            continue
        if u.local_ref.startswith("refs/tags/"):
            tag = u.local_ref[len("refs/tags/") :]
            problem = invariants.new_tag_problem(repo, tag, u.local_sha) if u.remote_sha == ZERO else None
            if problem:
                plan.violations.append(problem)
                continue
            if u.remote_sha == ZERO and parse_event(tag) is not None:
                plan.promotions.append(tag)
            if u.remote_sha == ZERO and parse_compat(tag) is not None:
                plan.compat.append((tag, u.local_sha))
            tag = known.tag_of.get(known.staged.get(tag, ""), tag)
            if tag in known.released and tag not in plan.tags:
                plan.tags.append(tag)
            continue
        if repo.try_git("cat-file", "-e", f"{u.local_sha}^{{commit}}")[0] != 0:
            continue
        rng = _range(repo, u, remote)
        trailers = repo.git("log", f"--format=%(trailers:key={txn.TRAILER},valueonly,separator=%x20)", *rng)
        for tag in trailers.split():
            if tag in known.released and tag not in plan.tags:
                plan.tags.append(tag)
        if u.remote_ref.startswith("refs/heads/"):
            tips.append(invariants.Tip(u.remote_ref[len("refs/heads/") :], _remote_tip(repo, u), u.local_sha))
    plan.violations += invariants.tip_problems(repo, tips, lambda: known.reg.releases)
    return plan


def compat_problems(repo: Repo, pushed: list[tuple[str, str]]) -> list[str]:
    """Git only: the new compat records (tag, tag object) that the server would refuse
    (kgit.registry.compat_records.push_problem, the same judgement)."""
    from kgit.registry import compat_records

    releases = catalog.read(repo, remember=False).releases
    return [
        problem
        for tag, oid in pushed
        if (problem := compat_records.push_problem(repo.tag_object(oid, tag), tag, releases)[1]) is not None
    ]


def gate_problems(repo: Repo, tags: list[str], rev: str = "HEAD") -> list[str]:
    """Git only: the new stage and deprecation tags (already made here) that kgit.registry.stage_checks
    refuses, as the server judges them: a counter that is not the next after this clone's other
    event tags, a promotion the gates committed at ``rev`` refuse (against the stage's last holder),
    a rollback to a version that never held the stage."""
    from kgit.registry import gates, stage_checks

    reg = catalog.read(repo, remember=False)
    log = stage_checks.StageLog.of(reg, leave_out=tags)
    new = stage_checks.read_local(repo, tags)
    return [f"{tag}: {why}" for tag, why in stage_checks.problems(log, new, lambda: gates.read(repo, rev))]


# -- the published record ---------------------------------------------------------------------
def _published_path(repo: Repo) -> Path:
    return clone_state.path(repo, clone_state.PUBLISHED)


def _published(repo: Repo) -> dict[str, list[str]]:
    try:
        data = clone_state.read_json(_published_path(repo))
    except KgitError:
        return {}
    return data if isinstance(data, dict) else {}


def _mark_published(repo: Repo, url: str, md5s: list[str]) -> None:
    data = _published(repo)
    data[url] = sorted(set(data.get(url, [])) | set(md5s))
    clone_state.write_json(_published_path(repo), data)


# -- the hooks --------------------------------------------------------------------------------
def _say(message: str) -> None:
    sys.stderr.write(f"kgit: {message}\n")


def pre_push(remote: str, updates: list[RefUpdate], repo: Repo | None = None) -> int:
    """The pre-push hook; returns the exit code (0 lets the push go on)."""
    from kgit.workflow import validating

    repo = repo or Repo(".")
    plan = plan_push(repo, updates, remote)
    if plan.tag_changes:
        _say(f"push refused: release and stage tags on {remote} never change:")
        for c in plan.tag_changes:
            sys.stderr.write(f"  - {c}\n")
        _say(
            f"publish a different model as a new version; to get the shared tag back here: "
            f"git tag -d TAG && git fetch {remote} tag TAG (--no-verify does not help: a server with kgit's hook refuses too)"
        )
        return 1
    if plan.violations:
        _say("push refused: released versions must not change:")
        for v in plan.violations:
            sys.stderr.write(f"  - {v}\n")
        _say("restore them (git checkout <tag> -- <file>) and amend, or push with --no-verify to override")
        return 1
    if plan.compat:
        refused = compat_problems(repo, plan.compat)
        if refused:
            _say("push refused: compat records that are not valid:")
            for p in refused:
                sys.stderr.write(f"  - {p}\n")
            _say("delete them here (git tag -d TAG) and record again with `kgit compat NAME@VERSION --with ...`")
            return 1
    if plan.promotions:
        refused = gate_problems(repo, plan.promotions)
        if refused:
            _say("push refused: stage tags that the event counters or the promotion gates refuse:")
            for p in refused:
                sys.stderr.write(f"  - {p}\n")
            _say(
                "delete the refused tag here (git tag -d TAG), or change the rule in .kgit/gates.yaml and commit it; "
                f"to push the rest without it: git push --no-follow-tags {remote} BRANCH, then any other tag by name"
            )
            return 1
    if not plan.tags:
        return 0  # nothing new: the common case, and it touched git only
    try:
        targets = [t for tag in plan.tags for t in validating.targets_for(repo, [_ref_of(tag)])]
    except KgitError as exc:  # e.g. a tag that is not a valid release, or changed since first seen
        _say(f"push refused: {exc}")
        return 1
    broken = [r for r in (validating.release_check(repo, t) for t in targets) if r is not None]
    if broken:
        return _refuse_validation(broken)
    record = validating.Record(repo)
    stale = [t for t in targets if not record.is_current(t.release.tag, t.fmt, t.md5, repo.root / t.rel_path)]
    if stale:
        try:
            project.before_dvc(repo, log=_say)  # `dvc repro` reads every DVC file and DVC's lock file
        except KgitError as exc:
            _say(f"push refused: {exc}")
            return 1
        code = _run_stage(repo, sorted({t.label for t in stale}))
        if code != 0:
            _say("push refused: the validation above failed; fix or re-release, or push with --no-verify to override")
            return 1
    name, url = dvc_remotes.remote_url(repo.root)
    if not url:
        _say(
            "push refused: no default DVC remote, so teammates could not fetch the models: "
            "run `kgit init --remote PATH_OR_URL` (or `dvc remote add -d NAME URL`) and push again"
        )
        return 1
    done = set(_published(repo).get(url, []))
    to_upload = [t for t in targets if t.md5 not in done]
    if not to_upload:
        return 0
    return _upload(repo, str(name), url, to_upload)


def _upload(repo: Repo, name: str, url: str, to_upload: list[Any]) -> int:
    """``dvc push`` the targets' data, then confirm every object arrived before recording it as
    published. DVC only warns about objects missing from the local cache, so check those first; and
    reach the remote before uploading, so an unreachable server or refused credentials is one line."""
    from kgit.store import storage

    def labels(oids: Any) -> str:
        return ", ".join(sorted({f"{t.label} ({t.fmt})" for t in to_upload if t.md5 in oids}))

    oids = [str(t.md5) for t in to_upload]
    try:
        absent, not_there = storage.presence(repo.root, name, oids)
    except KgitError as exc:
        _say(f"push refused: {exc}; nothing was uploaded")
        return 1
    if absent:
        n = sum(len(v) for v in absent.values())
        _say(
            f"push refused: the data of {labels(absent)} is not in the local DVC cache ({n} object(s) missing, "
            "e.g. after `dvc gc`), so it cannot be uploaded and teammates could not fetch it: bring it back "
            f"(`dvc pull` from another remote, `dvc fetch`, or re-add the folder from a backup), then push again"
        )
        return 1
    where = dvc_remotes.Where.of(name, url, dvc_remotes.remote_settings(repo.root))
    if not_there:
        from kgit.core import progress
        from kgit.store import dvc_ops

        size = sum(int(t.release.formats[t.fmt].get("size") or 0) for t in to_upload if t.md5 in not_there)
        _say(f"uploading {labels(not_there)}: {human_size(size)} to {where}")
        # git hands the hook its own stderr: a terminal gets a progress bar, a pipe or CI only these lines
        try:
            with progress.Meter("uploading", size, show=progress.wanted()) as meter:
                dvc_ops.push(repo.root, [str(t.md5) for t in to_upload if t.md5 in not_there], name, meter)
        except dvc_ops.TransferFailed as exc:
            _say(
                f"push refused: uploading to {where} failed: {exc}; "
                + (
                    "push again once that is fixed"
                    if exc.explained
                    else "fix the remote (see `dvc remote list`) and push again, or push with --no-verify to skip"
                )
            )
            return 1
    try:
        absent = storage.missing_in_remote(repo.root, name, oids)
    except KgitError as exc:
        _say(f"push refused: could not confirm the upload: {exc}")
        return 1
    if absent:
        n = sum(len(v) for v in absent.values())
        _say(
            f"push refused: after `dvc push`, {where} still lacks {n} object(s) of "
            f"{labels(absent)}: check the remote (space, permissions) and push again"
        )
        return 1
    if not not_there:
        _say(f"the data of {labels(oids)} is already in {where}")
    _mark_published(repo, url, oids)
    return 0


def _ref_of(tag: str) -> str:
    parsed = parse_tag(tag)
    assert parsed is not None
    return f"{parsed[0]}@{parsed[1].semver}"


def _refuse_validation(results: list[FolderResult]) -> int:
    _say("push refused: released versions differ from their release:")
    for r in results:
        sys.stderr.write(f"  - {r.folder} ({r.format}) {r.check}: {r.reason()}\n")
    return 1


# How the hook tells the kgit-validate stage (`kgit validate --all`, run by `dvc repro`) which
# releases this push carries, so the stage checks those and not every release.
STAGE_ONLY_ENV = "KGIT_VALIDATE_ONLY"


def stage_targets() -> list[str] | None:
    """The releases (NAME@VERSION) the running kgit-validate stage is narrowed to by the pre-push
    hook, or None outside the hook (then the stage checks every release)."""
    only = os.environ.get(STAGE_ONLY_ENV)
    return only.split() if only is not None else None


def run_hook(name: str, args: list[str], stdin_text: str) -> int:
    """Run one of kgit's git hooks as the shims in .git/hooks call it; returns the exit code."""
    if name == "pre-push":
        updates = parse_updates(stdin_text) or updates_from_pre_commit_framework()
        return pre_push((args or ["origin"])[0], updates)
    if name in ("pre-commit", "pre-merge-commit"):  # a merge git concludes itself runs only the latter
        return pre_commit()
    if name == "pre-receive":
        from kgit.guard import server

        return server.pre_receive(stdin_text)
    raise KgitError(f"unknown hook {name!r}: kgit provides pre-push, pre-commit, pre-merge-commit and pre-receive")


def _run_stage(repo: Repo, labels: list[str]) -> int:
    """Validate ``labels`` by reproducing the kgit-validate stage of dvc.yaml."""
    data = project.read_dvc_yaml(repo.root) or {}
    stage = (data.get("stages") or {}).get(STAGE_NAME)
    if stage is None:
        _say(f"push refused: dvc.yaml has no {STAGE_NAME} stage to validate releases with: run `kgit init`")
        return 1
    if dict(stage) != project.VALIDATE_STAGE:
        # The hook runs on every push: it must never run a command someone else committed.
        changed = (
            ", ".join(
                f"{k}: {one_line(v, 80)!r}"
                for k, v in sorted(dict(stage).items())
                if project.VALIDATE_STAGE.get(k) != v
            )
            or "its fields"
        )
        commit = repo.git("log", "-1", "--format=%h by %an", "--", DVC_YAML, check=False) or "uncommitted"
        _say(
            f"push refused: the {STAGE_NAME} stage in dvc.yaml is not kgit's ({changed}; last changed "
            f"in {commit}): kgit runs only its own validation; restore the stage with `kgit init` and commit it"
        )
        return 1
    _say(f"validating {', '.join(labels)} (dvc repro {STAGE_NAME})")
    env = dict(os.environ)
    env[STAGE_ONLY_ENV] = " ".join(labels)
    # the stage's `kgit` must be this kgit, even when the hook was started by absolute path
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--single-item", STAGE_NAME],
        cwd=repo.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    return proc.returncode


def pre_commit(repo: Repo | None = None) -> int:
    """The pre-commit hook; returns the exit code. The tree about to be committed (the index) is
    held to the same rules as a pushed branch tip, its parents being HEAD and, while a merge is
    concluded, the commits being merged."""
    repo = repo or Repo(".")
    # the commits being merged: MERGE_HEAD when `git commit` concludes a merge; git merge runs
    # pre-merge-commit before writing it, with each merged commit in a GITHEAD_<id> variable
    merging = [line for line in (repo.show_file_at_git_dir("MERGE_HEAD") or "").split() if line]
    merging += [k[len("GITHEAD_") :] for k in os.environ if k.startswith("GITHEAD_") and len(k) in (48, 72)]
    staged = repo.git("diff", "--cached", "--name-only", "-z", "--no-renames", "--", ARTIFACTS_DIR, raw=True)
    if not staged.strip("\0") and not merging:
        return 0  # nothing under artifacts/ changes: the common case reads no tag
    tree = repo.git("write-tree")
    parents = [c for c in (repo.head(), *merging) if c]
    files = invariants.released_files(repo, catalog.releases(repo))
    problems = invariants.problems(repo, tree, parents, files, "the commit")
    if not problems:
        return 0
    _say("commit refused: released versions are immutable:")
    for p in problems:
        sys.stderr.write(f"  - {p}\n")
    _say("unstage them (git restore --staged <file>; git checkout -- <file>), or commit with --no-verify to override")
    return 1
