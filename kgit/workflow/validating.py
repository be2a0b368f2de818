"""Checking released versions (``kgit validate``), incrementally.

Per version and format, in order, stopping at the first failure:
  data      the version folder is present in the work tree
  release   its ``.dvc`` file still has the DVC hash the release tag recorded
  metadata  ``metadata.json`` is the one recorded in git at the release
  files     every file's sha256 matches the metadata
  signature the signature verifies with a key this clone trusts (when signed or required)
  code      the model's configuration holds no code the person validating did not allow
            (kgit.models.config_scan; see ``code_allowed``), read without loading anything
  roundtrip reload in a fresh process, rerun reference inputs, compare within atol

A version that passed is remembered in ``.git/kgit/validated.json`` (local, never committed) with
its DVC hash and the size/mtime/ctime/inode of each file; while none of those change it is not checked
again (the ``release`` check, which reads git only, always runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgit.core import layout, packing
from kgit.core.errors import KgitError, ReleaseMismatchError
from kgit.core.fsutil import KnownSha256
from kgit.core.layout import METADATA_FILE
from kgit.core.metadata import Metadata
from kgit.registry import catalog
from kgit.store import clone_state, collected
from kgit.store.dvc_ops import read_dvc_path
from kgit.store.git_ops import Repo
from kgit.workflow.roundtrip import FolderResult, check_files

# Local git config: `signed` lets releases made with --unsafe run their code here without --unsafe
# when a key this clone trusts signed them; `never` (the default) asks for --unsafe every time.
UNSAFE_LOADING_KEY = "kgit.unsafeLoading"
UNSAFE_LOADING = ("never", "signed")


# -- the record of what was validated ---------------------------------------------------------
def _fingerprint(folder: Path) -> dict[str, list[int]]:
    """size, mtime, ctime and inode of every file: changes when any byte is rewritten, costs no hashing.

    ctime matters: mtime can be set back (``os.utime``, ``touch -d``) after an in-place edit that keeps
    the size and inode, but every write moves ctime and nothing short of changing the clock sets it back."""
    fp: dict[str, list[int]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            fp[os.path.relpath(full, folder)] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return fp


def _trust_state(root: Path) -> str:
    """The signing trust in force in this clone (policy and trusted keys, see kgit.trust.keyring): part of
    what a validation was valid for, so a change of trust invalidates the record."""
    from kgit.trust import keyring

    try:
        return keyring.effective(Repo(root)).state()
    except KgitError as exc:  # a policy file that does not parse: the signature check will say so
        return f"error: {exc}"


class Record:
    """Versions validated on this machine, keyed by ``tag/format``."""

    def __init__(self, repo: Repo) -> None:
        self.path = clone_state.path(repo, clone_state.VALIDATED)
        self.trust = _trust_state(repo.root)
        try:
            data = clone_state.read_json(self.path)
        except KgitError:
            data = None
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}

    @staticmethod
    def key(tag: str, fmt: str) -> str:
        return f"{tag}/{fmt}"

    def is_current(self, tag: str, fmt: str, md5: str | None, folder: Path) -> bool:
        entry = self.data.get(self.key(tag, fmt))
        if not entry or entry.get("md5") != md5 or not folder.is_dir():
            return False
        if entry.get("trust") != self.trust:  # trusted keys or signing policy changed: check again
            return False
        try:
            return bool(entry.get("files") == _fingerprint(folder))
        except OSError:
            return False

    def entry(self, tag: str, fmt: str) -> dict[str, Any]:
        return dict(self.data.get(self.key(tag, fmt)) or {})

    def mark(self, tag: str, fmt: str, md5: str | None, folder: Path, max_abs_diff: float | None) -> None:
        self.data[self.key(tag, fmt)] = {
            "md5": md5,
            "files": _fingerprint(folder),
            "max_abs_diff": max_abs_diff,
            "trust": self.trust,
        }

    def save(self) -> None:
        clone_state.write_json(self.path, self.data)


# -- the checks -------------------------------------------------------------------------------
@dataclass
class Target:
    release: catalog.Release
    fmt: str

    @property
    def label(self) -> str:
        return f"{self.release.name}@{self.release.version}"

    @property
    def md5(self) -> str | None:
        return (self.release.formats.get(self.fmt) or {}).get("md5")

    @property
    def rel_path(self) -> str:
        return str((self.release.formats.get(self.fmt) or {}).get("path", ""))


def targets_for(repo: Repo, refs: list[str] | None, formats: list[str] | None = None) -> list[Target]:
    """Every format of the named releases (``NAME@VERSION``), or of all releases when ``refs`` is None.

    ``formats``: only these formats of the named releases, each of which must have been released in
    it and have its data here (refused otherwise, naming the released formats or the `kgit get` that
    fetches it): git and the work tree only, so a refusal comes before any validation starts."""
    from kgit.registry.versions import parse_ref

    if formats and refs is None:
        raise KgitError("name the releases whose formats to check: kgit validate NAME@VERSION -f FORMAT")
    releases: list[catalog.Release] = []
    if refs is None:
        releases = catalog.releases(repo)
    else:
        for ref in refs:
            name, version = parse_ref(ref)
            releases.append(catalog.resolve(repo, name, version))
    if not formats:
        # an invalid release whose tag names no usable format still gets a target, to fail its release check
        return [Target(r, fmt) for r in releases for fmt in (r.formats or ["-"])]
    wanted = list(dict.fromkeys(formats))
    targets = []
    for rel in releases:
        catalog.require_formats(rel, wanted)
        for fmt in wanted:
            t = Target(rel, fmt)
            if not (repo.root / t.rel_path).exists():
                raise KgitError(
                    f"{t.label} ({fmt}) is not present locally: fetch it with `kgit get {t.label} -f {fmt}`, "
                    "then validate it"
                )
            targets.append(t)
    return targets


def _fail(t: Target, check: str, error: str, status: str = "failed", atol: float = 0.0) -> FolderResult:
    return FolderResult(t.label, t.fmt, False, atol=atol, error=error, check=check, status=status)


def release_check(repo: Repo, t: Target) -> FolderResult | None:
    """Git-only: the tag is a valid release (its message, ``.dvc`` file and metadata at the tagged
    commit agree with its name), and the work tree's ``.dvc`` file still has the hash it recorded."""
    problems = catalog.release_problems(repo, t.release, [t.fmt])
    if problems:
        return _fail(t, "release", f"{t.release.tag} is not a valid release: {problems[0]}")
    dvc_path = repo.root / layout.dvc_file(t.rel_path)
    if not dvc_path.exists():
        return None  # not in this checkout (another branch): nothing in the work tree to compare
    try:
        out = read_dvc_path(dvc_path, layout.dvc_file(t.rel_path))["outs"][0]
    except KgitError as exc:
        return _fail(t, "release", str(exc))
    if out.get("md5") != t.md5:
        return _fail(
            t,
            "release",
            f"{t.rel_path}.dvc has DVC hash {out.get('md5')}, the release tag {t.release.tag} recorded {t.md5}: "
            f"the release was changed after tagging (restore it: git checkout {t.release.tag} -- {t.rel_path}.dvc)",
        )
    return None


def _static_checks(repo: Repo, t: Target) -> tuple[FolderResult | None, Metadata | None]:
    folder = repo.root / t.rel_path
    if not (folder / METADATA_FILE).exists():
        hint = (
            f"run `kgit get {t.label} -f {t.fmt}`"
            if not folder.exists()
            else f"restore it: `dvc checkout {t.rel_path}.dvc`"
        )
        status = "missing" if not folder.exists() else "failed"
        return _fail(
            t,
            "data",
            f"data not present locally ({hint})" if status == "missing" else f"{METADATA_FILE} is missing ({hint})",
            status,
        ), None
    known: dict[str, KnownSha256] = {}  # what assembling read and checked: not read again below
    try:
        # a packed release's weight files, made from their tensor objects if they are not here
        # (a folder fetched with `dvc pull`); each is checked below like every other file
        made = packing.assemble(folder, known)
    except (KgitError, OSError) as exc:
        return _fail(t, "files", f"{exc}: fetch it again with `kgit get {t.label} -f {t.fmt}`"), None
    try:
        meta = Metadata.read(folder)
        recorded = catalog.metadata(repo, t.release, t.fmt)
    except KgitError as exc:
        return _fail(t, "metadata", str(exc)), None
    said = (meta.name, meta.version, meta.format)
    if said != (t.release.name, t.release.version, t.fmt):
        return _fail(
            t,
            "metadata",
            f"{METADATA_FILE} is for {':'.join(map(str, said))}, the release is "
            f"{t.release.name}:{t.release.version}:{t.fmt}",
        ), None
    if meta.to_dict() != recorded.to_dict():
        changed = sorted(k for k, v in meta.to_dict().items() if recorded.to_dict().get(k) != v)
        return _fail(
            t, "metadata", f"{METADATA_FILE} differs from the release's metadata in git ({', '.join(changed)})"
        ), None
    # missing files (a fetch killed midway, a file deleted): fetching completes the folder
    problem = check_files(folder, meta, known if made else None, fetch=f"kgit get {t.label} -f {t.fmt}")
    if problem:
        return _fail(t, "files", problem, atol=meta.reference.atol), None
    problem = signature_problem(repo, folder, meta, t.label + f" ({t.fmt})")
    if problem:
        return _fail(t, "signature", problem, atol=meta.reference.atol), None
    return None, meta


def verified_metadata(repo: Repo, rel: catalog.Release, fmt: str) -> Metadata:
    """The metadata of a release folder present in the work tree, after the git-free checks
    (metadata as released, every file's sha256, signature); raises KgitError naming what differs."""
    t = Target(rel, fmt)
    failed, meta = _static_checks(repo, t)
    if failed is not None:
        raise ReleaseMismatchError(
            f"{t.label} ({fmt}) does not match its release: {failed.check} check: {failed.reason()}", failed.check, fmt
        )
    assert meta is not None
    return meta


def signature_problem(repo: Repo, folder: Path, meta: Metadata, label: str) -> str | None:
    """None if the folder's signature verifies with a key this clone trusts (kgit.trust.keyring: pinned,
    endorsed or accepted; not merely present in the work tree), or it is unsigned and the policy in
    force does not require signatures; else what is wrong. Checked against the metadata's recorded signer too."""
    from kgit.trust import keyring, signing

    t = keyring.effective(repo)
    if meta.signed_by is None and t.policy != "required":
        return None
    if meta.signed_by is None:
        return f"{label} is not signed, and {t.requirement()}"
    try:
        fp = signing.verify(folder, t.trusted(), label, untrusted=lambda signer: t.untrusted_reason(signer, label))
    except KgitError as exc:
        return str(exc)
    if fp != meta.signed_by:
        return f"{label} is signed by key {fp[:16]}, but its metadata says {meta.signed_by[:16]}"
    return None


def code_allowed(repo: Repo, meta: Metadata, unsafe: bool) -> bool:
    """Whether loading a release may run the code it carries (a Lambda layer...): the person loading
    said so (``unsafe``), or this clone's git config ``kgit.unsafeLoading`` is ``signed`` and the
    release was made with ``--unsafe`` and signed by a key this clone trusts. Never decided by the
    release: ``meta`` must come from the checks that verified its signature (``verified_metadata``)."""
    if unsafe:
        return True
    setting = (repo.config_get(UNSAFE_LOADING_KEY) or "never").strip().lower()
    if setting not in UNSAFE_LOADING:
        raise KgitError(f"git config {UNSAFE_LOADING_KEY} is {setting!r}: use one of {', '.join(UNSAFE_LOADING)}")
    if setting != "signed" or not meta.unsafe or not meta.signed_by:
        return False
    from kgit.trust import keyring

    return keyring.effective(repo).is_trusted(meta.signed_by)


def code_check(repo: Repo, t: Target, meta: Metadata, unsafe: bool) -> tuple[FolderResult | None, bool]:
    """The ``code`` check of a verified folder: (the failure, or None; whether its code may run)."""
    from kgit.models import config_scan, formats

    label = f"{t.label} ({t.fmt})"
    try:
        findings = formats.release_findings(repo.root / t.rel_path, meta)
        # the caller's --unsafe passes through; the clone's policy is consulted only for code it found
        allowed = unsafe or (any(f.code for f in findings) and code_allowed(repo, meta, False))
    except KgitError as exc:
        return _fail(t, "code", f"{label}: {exc}", atol=meta.reference.atol), False
    fix = f"run `kgit validate --unsafe {t.label}` (kgit.validate(..., unsafe=True)) only if you trust who released it"
    problem = config_scan.refusal(label, findings, allow_code=allowed, fix=fix)
    return (_fail(t, "code", problem, atol=meta.reference.atol) if problem else None), allowed


def check(
    repo: Repo, targets: list[Target], *, use_record: bool = True, progress: Any = None, unsafe: bool = False
) -> list[FolderResult]:
    """Run the checks on ``targets``; remember what passed. One fresh process for all round trips.
    ``unsafe``: the caller allows the code releases carry to run in the round trip (see ``code_allowed``);
    a version validated here before is not reloaded, so nothing runs for it either way."""
    from kgit.workflow.roundtrip import roundtrip

    record = Record(repo)
    results: dict[int, FolderResult] = {}
    pending: list[tuple[int, Target, Path]] = []
    code: list[Path] = []  # folders whose code the round trip may run (Keras' safe mode off)
    for i, t in enumerate(targets):
        failed = release_check(repo, t)
        if failed:
            results[i] = failed
            continue
        folder = repo.root / t.rel_path
        if use_record and record.is_current(t.release.tag, t.fmt, t.md5, folder):
            prev = record.entry(t.release.tag, t.fmt)
            r = FolderResult(t.label, t.fmt, True, check="roundtrip", status="cached")
            if prev.get("max_abs_diff") is not None:
                from kgit.workflow.roundtrip import OutputCheck

                r.outputs = [OutputCheck("(recorded)", float(prev["max_abs_diff"]), True)]
            results[i] = r
            continue
        failed, meta = _static_checks(repo, t)
        if failed is None:
            assert meta is not None
            failed, allowed = code_check(repo, t, meta, unsafe)
        if failed:
            results[i] = failed
            continue
        pending.append((i, t, folder))
        if allowed:
            code.append(folder)
    if pending:
        if callable(progress):
            progress(f"round trip of {len(pending)} artifact(s) in a fresh process")
        by_folder = {r.folder: r for r in roundtrip([f for _, _, f in pending], unsafe=code, project=repo.root)}
        for i, t, folder in pending:
            r = by_folder[str(folder.resolve())]
            r.folder = t.label
            r.format = t.fmt
            results[i] = r
            if r.ok:
                record.mark(t.release.tag, t.fmt, t.md5, folder, r.max_abs_diff)
        record.save()
    _mark_collected(repo, [(t, results[i]) for i, t in enumerate(targets)])
    return [results[i] for i in range(len(targets))]


def _mark_collected(repo: Repo, checked: list[tuple[Target, FolderResult]]) -> None:
    """Versions whose data is not here because ``kgit gc`` collected it from the DVC remote are
    reported as collected, not as failed (one reading of the remote, only if some data is missing)."""
    missing = [(t, r) for t, r in checked if r.status == "missing"]
    if not missing:
        return
    from kgit.store import dvc_remotes, storage

    name, _url = dvc_remotes.remote_url(repo.root)
    if not name:
        return
    try:
        records = storage.collected_in_remote(repo.root, name, sorted({t.release.tag for t, _r in missing}))
    except KgitError:
        return  # the remote cannot be read: the data stays reported missing
    learnt = []
    for t, r in missing:
        rec = records.get(t.release.tag)
        if rec is not None and t.md5 in (rec.get("tops") or []):
            learnt.append({**rec, "tag": t.release.tag})
            r.ok, r.status = True, "collected"
            r.error = collected.describe(rec)
    collected.remember(repo, learnt)  # `kgit list` marks them from now on


def remember_release(repo: Repo, tag: str, formats: dict[str, dict[str, Any]], validation: list[FolderResult]) -> None:
    """A release was validated while it was made: record it, so the push does not redo it."""
    record = Record(repo)
    diffs = {r.format: r.max_abs_diff for r in validation}
    for fmt, info in formats.items():
        record.mark(tag, fmt, info.get("md5"), repo.root / info["path"], diffs.get(fmt))
    record.save()


def verify_signatures(repo: Repo, targets: list[Target]) -> list[FolderResult]:
    """Signature check only (``kgit verify``): data present, metadata as released, files, signature."""
    results = []
    for t in targets:
        failed = release_check(repo, t)
        if failed is None:
            failed, meta = _static_checks(repo, t)
        if failed is not None:
            results.append(failed)
            continue
        assert meta is not None
        if meta.signed_by is None:
            results.append(_fail(t, "signature", f"{t.label} ({t.fmt}) is not signed", status="unsigned"))
            continue
        results.append(FolderResult(t.label, t.fmt, True, check="signature", status="passed"))
    return results
