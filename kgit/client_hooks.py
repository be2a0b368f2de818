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

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kgit import project, registry, txn
from kgit.errors import KgitError, one_line
from kgit.fsutil import write_json
from kgit.git_ops import Repo, hook_records
from kgit.metadata import ARTIFACTS_DIR
from kgit.roundtrip import FolderResult
from kgit.versions import parse_event, parse_tag

ZERO = "0" * 40
PUBLISHED_FILE = "published.json"


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
    return [RefUpdate(os.environ.get("PRE_COMMIT_LOCAL_BRANCH", "HEAD"), to_ref,
                      os.environ.get("PRE_COMMIT_REMOTE_BRANCH", ""), os.environ.get("PRE_COMMIT_FROM_REF") or ZERO)]


@dataclass
class PushPlan:
    tags: list[str] = field(default_factory=list)  # release tags the push brings
    violations: list[str] = field(default_factory=list)  # released versions changed by the push
    tag_changes: list[str] = field(default_factory=list)  # release/stage tags the push moves or deletes
    promotions: list[str] = field(default_factory=list)  # new stage tags the push brings (checked by the gates)


def is_protected_tag(ref: str) -> bool:
    """Release tags (NAME@vX.Y.Z) and GTO event tags (stages, deprecations) never change once shared."""
    if not ref.startswith("refs/tags/"):
        return False
    tag = ref[len("refs/tags/"):]
    return parse_tag(tag) is not None or parse_event(tag) is not None


def protected_tag_change(ref: str, old: str, new: str) -> str | None:
    """One line if updating ``ref`` from ``old`` to ``new`` moves or deletes a release/stage tag."""
    if old == ZERO or old == new or not is_protected_tag(ref):
        return None
    tag = ref[len("refs/tags/"):]
    kind = "release" if parse_tag(tag) is not None else "stage/deprecation"
    if new == ZERO:
        return f"deleting the {kind} tag {tag} (it is shared: teammates and deployments resolve it)"
    return (f"moving the {kind} tag {tag} from {old[:8]} to {new[:8]} (a shared release is never replaced: "
            "release the new model as a new version)")


def _range(repo: Repo, u: RefUpdate, remote: str) -> list[str]:
    """Arguments for git log selecting the commits this update sends."""
    if u.remote_sha != ZERO and repo.try_git("cat-file", "-e", f"{u.remote_sha}^{{commit}}")[0] == 0:
        return [f"{u.remote_sha}..{u.local_sha}"]
    return [u.local_sha, "--not", f"--remotes={remote}"]


def plan_push(repo: Repo, updates: list[RefUpdate], remote: str) -> PushPlan:
    """Git only: which releases a push brings, and which released versions it changes."""
    plan = PushPlan()
    known = KnownReleases(repo)
    for u in updates:
        change = protected_tag_change(u.remote_ref, u.remote_sha, u.local_sha)
        if change:
            plan.tag_changes.append(change)
            continue
        if u.local_sha == ZERO:
            continue  # a deletion sends nothing
        if u.local_ref.startswith("refs/tags/"):
            tag = u.local_ref[len("refs/tags/"):]
            if tag in known.staged and u.remote_sha == ZERO:
                plan.promotions.append(tag)
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
        plan.violations += changed_releases(repo, rng, u.local_sha, known)
    return plan


class KnownReleases(Mapping[str, tuple[registry.Release, str]]):
    """The releases (read from the tags on first use: a push of plain commits that touch no
    released file, the common case, reads no tag) and, as a mapping, their ``.dvc`` files.
    ``extra``: releases not tagged here yet (a server's list of those the push brings, which grows
    as the push is checked), whose files count too."""

    def __init__(self, repo: Repo, *, remember: bool = True, extra: list[registry.Release] | None = None) -> None:
        self.repo = repo
        self.remember = remember
        self.extra = extra if extra is not None else []

    @cached_property
    def reg(self) -> registry.Registry:
        return registry.read(self.repo, remember=self.remember)

    @cached_property
    def released(self) -> dict[str, registry.Release]:
        return {r.tag: r for r in self.reg.releases}

    @cached_property
    def staged(self) -> dict[str, str]:
        # a pushed stage tag brings the version it points to (validated before it reaches production)
        return {e.tag: f"{e.name}@{e.version}" for e in self.reg.events if e.event == "promoted" and e.version}

    @cached_property
    def tag_of(self) -> dict[str, str]:
        return {f"{r.name}@{r.version}": r.tag for r in self.reg.releases}

    @cached_property
    def by_dvc_file(self) -> dict[str, tuple[registry.Release, str]]:
        return dvc_files_of(self.reg.releases)

    def _all_files(self) -> dict[str, tuple[registry.Release, str]]:
        return {**self.by_dvc_file, **dvc_files_of(self.extra)} if self.extra else self.by_dvc_file

    def __getitem__(self, path: str) -> tuple[registry.Release, str]:
        return self._all_files()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all_files())

    def __len__(self) -> int:
        return len(self._all_files())


def gate_problems(repo: Repo, tags: list[str], rev: str = "HEAD") -> list[str]:
    """Git only: the stage tags (already made here) whose version the promotion gates committed at
    ``rev`` refuse, each judged against the version that held the stage just before it."""
    from kgit import gates

    reg = registry.read(repo, remember=False)
    try:
        rules = gates.read(repo, rev)
    except KgitError as exc:
        return [f"cannot apply the promotion gates: {exc}"]
    problems = []
    for tag in tags:
        event = parse_event(tag)
        found = next((e for e in reg.events if e.tag == tag), None)
        if event is None or event.stage is None or found is None:
            continue
        rel = next((r for r in reg.releases if r.name == event.name and r.version == found.version and r.valid), None)
        if rel is None:
            continue  # not a valid version: refused elsewhere
        try:
            gates.check_promotion(repo, reg, rel, event.stage, gates=rules, before=event.counter)
        except KgitError as exc:
            problems.append(f"{tag}: {exc}")
    return problems


def changed_releases(repo: Repo, rng: list[str], tip: str,
                     by_dvc_file: Mapping[str, tuple[registry.Release, str]]) -> list[str]:
    """Released versions whose ``.dvc`` file the commits ``rng`` change, as they stand at ``tip``."""
    from kgit.dvc_ops import read_dvc_file

    problems = []
    touched = repo.git("log", "--format=", "--name-only", *rng, "--", ARTIFACTS_DIR)
    for path in sorted(set(touched.split())):
        if path not in by_dvc_file:
            continue
        rel, fmt = by_dvc_file[path]
        text = repo.show_file(tip, path)
        want = rel.formats[fmt].get("md5")
        if text is None:
            problems.append(f"{rel.name}@{rel.version} ({fmt}): {path} is deleted by the pushed commits")
            continue
        try:
            got = read_dvc_file(text, path)["outs"][0].get("md5")
        except KgitError as exc:
            problems.append(f"{rel.name}@{rel.version} ({fmt}): {exc}")
            continue
        if got != want:
            problems.append(f"{rel.name}@{rel.version} ({fmt}): {path} in the pushed commits has DVC hash {got}, "
                            f"its release tag recorded {want}")
    return problems


def dvc_files_of(releases: list[registry.Release]) -> dict[str, tuple[registry.Release, str]]:
    return {f"{info['path']}.dvc": (r, fmt) for r in releases if r.valid for fmt, info in r.formats.items()}


# -- the published record ---------------------------------------------------------------------
def _published_path(repo: Repo) -> Path:
    return txn.state_dir(repo) / PUBLISHED_FILE


def _published(repo: Repo) -> dict[str, list[str]]:
    try:
        data = json.loads(_published_path(repo).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _mark_published(repo: Repo, url: str, md5s: list[str]) -> None:
    data = _published(repo)
    data[url] = sorted(set(data.get(url, [])) | set(md5s))
    write_json(_published_path(repo), data)


def remote_url(repo: Repo) -> tuple[str | None, str | None]:
    """(name, url) of the default DVC remote from the config files, without importing DVC."""
    from kgit.storage import default_remote_in

    return default_remote_in(_config_texts(repo))


def remote_settings(repo: Repo) -> dict[str, str]:
    """The default DVC remote's settings (url, endpointurl, ...) from the config files, no DVC import."""
    from kgit.storage import default_remote_config_in

    return default_remote_config_in(_config_texts(repo))[1]


def _config_texts(repo: Repo) -> list[str]:
    texts = []
    for fname in ("config", "config.local"):  # config.local overrides, like DVC
        try:
            texts.append((repo.root / ".dvc" / fname).read_text())
        except OSError:
            continue
    return texts


# -- the hooks --------------------------------------------------------------------------------
def _say(message: str) -> None:
    sys.stderr.write(f"kgit: {message}\n")


def pre_push(remote: str, updates: list[RefUpdate], repo: Repo | None = None) -> int:
    """The pre-push hook; returns the exit code (0 lets the push go on)."""
    from kgit import validating

    repo = repo or Repo(".")
    plan = plan_push(repo, updates, remote)
    if plan.tag_changes:
        _say(f"push refused: release and stage tags on {remote} never change:")
        for c in plan.tag_changes:
            sys.stderr.write(f"  - {c}\n")
        _say(f"publish a different model as a new version; to get the shared tag back here: "
             f"git tag -d TAG && git fetch {remote} tag TAG (--no-verify does not help: a server with kgit's hook refuses too)")
        return 1
    if plan.violations:
        _say("push refused: released versions must not change:")
        for v in plan.violations:
            sys.stderr.write(f"  - {v}\n")
        _say("restore them (git checkout <tag> -- <file>) and amend, or push with --no-verify to override")
        return 1
    if plan.promotions:
        refused = gate_problems(repo, plan.promotions)
        if refused:
            _say("push refused: stage tags that the promotion gates refuse:")
            for p in refused:
                sys.stderr.write(f"  - {p}\n")
            _say("demote the stage (`kgit demote`), or change the rule in .kgit/gates.yaml and commit it")
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
    name, url = remote_url(repo)
    if not url:
        _say("push refused: no default DVC remote, so teammates could not fetch the models: "
             "run `kgit init --remote PATH_OR_URL` (or `dvc remote add -d NAME URL`) and push again")
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
    from kgit import storage

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
        _say(f"push refused: the data of {labels(absent)} is not in the local DVC cache ({n} object(s) missing, "
             "e.g. after `dvc gc`), so it cannot be uploaded and teammates could not fetch it: bring it back "
             f"(`dvc pull` from another remote, `dvc fetch`, or re-add the folder from a backup), then push again")
        return 1
    where = storage.Where.of(name, url, remote_settings(repo))
    if not_there:
        from kgit import dvc_ops, progress

        size = sum(int(t.release.formats[t.fmt].get("size") or 0) for t in to_upload if t.md5 in not_there)
        _say(f"uploading {labels(not_there)}: {size / 1e6:.1f} MB to {where}")
        # git hands the hook its own stderr: a terminal gets a progress bar, a pipe or CI only these lines
        try:
            with progress.Meter("uploading", size, show=progress.wanted()) as meter:
                dvc_ops.push(repo.root, [str(t.md5) for t in to_upload if t.md5 in not_there], name, meter)
        except dvc_ops.TransferFailed as exc:
            _say(f"push refused: uploading to {where} failed: {exc}; "
                 + ("push again once that is fixed" if exc.explained else
                    "fix the remote (see `dvc remote list`) and push again, or push with --no-verify to skip"))
            return 1
    try:
        absent = storage.missing_in_remote(repo.root, name, oids)
    except KgitError as exc:
        _say(f"push refused: could not confirm the upload: {exc}")
        return 1
    if absent:
        n = sum(len(v) for v in absent.values())
        _say(f"push refused: after `dvc push`, {where} still lacks {n} object(s) of "
             f"{labels(absent)}: check the remote (space, permissions) and push again")
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
    if name == "pre-commit":
        return pre_commit()
    if name == "pre-receive":
        from kgit import server

        return server.pre_receive(stdin_text)
    raise KgitError(f"unknown hook {name!r}: kgit provides pre-push, pre-commit and pre-receive")


def _run_stage(repo: Repo, labels: list[str]) -> int:
    """Validate ``labels`` by reproducing the kgit-validate stage of dvc.yaml."""
    data = project.read_dvc_yaml(repo.root) or {}
    stage = (data.get("stages") or {}).get(project.STAGE_NAME)
    if stage is None:
        _say(f"push refused: dvc.yaml has no {project.STAGE_NAME} stage to validate releases with: run `kgit init`")
        return 1
    if dict(stage) != project.VALIDATE_STAGE:
        # The hook runs on every push: it must never run a command someone else committed.
        changed = ", ".join(f"{k}: {one_line(v, 80)!r}" for k, v in sorted(dict(stage).items())
                            if project.VALIDATE_STAGE.get(k) != v) or "its fields"
        commit = repo.git("log", "-1", "--format=%h by %an", "--", project.DVC_YAML, check=False) or "uncommitted"
        _say(f"push refused: the {project.STAGE_NAME} stage in dvc.yaml is not kgit's ({changed}; last changed "
             f"in {commit}): kgit runs only its own validation; restore the stage with `kgit init` and commit it")
        return 1
    _say(f"validating {', '.join(labels)} (dvc repro {project.STAGE_NAME})")
    env = dict(os.environ)
    env[STAGE_ONLY_ENV] = " ".join(labels)
    # the stage's `kgit` must be this kgit, even when the hook was started by absolute path
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", project.STAGE_NAME],
                          cwd=repo.root, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
    return proc.returncode


def pre_commit(repo: Repo | None = None) -> int:
    """The pre-commit hook; returns the exit code."""
    repo = repo or Repo(".")
    out = repo.git("diff", "--cached", "--name-status", "-z", "--no-renames", "--", ARTIFACTS_DIR, raw=True)
    fields = [f for f in out.split("\0") if f]
    changes = list(zip(fields[::2], fields[1::2]))
    if not changes:
        return 0
    releases = registry.releases(repo)
    by_dvc_file = {f"{info['path']}.dvc": (r, fmt) for r in releases for fmt, info in r.formats.items()}
    folders = {f"{info['path']}/": (r, fmt) for r in releases for fmt, info in r.formats.items()}
    problems = []
    for status, path in changes:
        if path in by_dvc_file and status != "A":
            rel, fmt = by_dvc_file[path]
            what = {"D": "deletes", "M": "modifies"}.get(status[0], "changes")
            problems.append(f"{rel.name}@{rel.version} ({fmt}): the commit {what} {path}")
        for prefix, (rel, fmt) in folders.items():
            if path.startswith(prefix):
                problems.append(f"{rel.name}@{rel.version} ({fmt}): the commit adds {path} to git (release data lives in DVC)")
    if not problems:
        return 0
    _say("commit refused: released versions are immutable:")
    for p in problems:
        sys.stderr.write(f"  - {p}\n")
    _say("unstage them (git restore --staged <file>; git checkout -- <file>), or commit with --no-verify to override")
    return 1
