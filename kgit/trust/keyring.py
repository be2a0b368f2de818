"""Which signing keys and which signing policy a clone trusts: anchored outside the work tree.

Anyone who can push can commit files under ``.kgit/``, so the work tree alone cannot say whom to
trust. Each clone pins its trust in ``.git/kgit/trust.json`` (local, never committed):

- **first use** (the first time a clone computes trust and its history has keys): the keys of the
  earliest commit of HEAD's history that added ``.kgit/keys/*.pem`` are the roots; they and the
  keys they endorse (transitively) are pinned, with the strongest policy the history ever had;
- then a key in the tree is trusted iff it is pinned, accepted in this clone (``kgit keys accept``),
  or endorsed by a trusted key: a signed statement ``.kgit/endorsements/<fp>-by-<fp>.json``.
  A key no longer in the tree is not trusted, and its endorsements no longer count;
- a policy in the tree stronger than the pinned one is adopted (and pinned); a weaker one only when
  a trusted key signed it (``.kgit/endorsements/policy.json``, bound to the commit that last set the
  policy before, so an old statement cannot be replayed) or when accepted in this clone.

Statements are ECDSA signatures over a canonical text that names the repository (its trust root
commit) and what is endorsed. ``unendorsed_changes`` applies the same rules to a push that a bare
repository receives; it (like importing this module) needs neither TensorFlow, DVC nor GitPython.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgit.core import bounded_yaml
from kgit.core.errors import CommandError, KgitError
from kgit.store import clone_state
from kgit.store.git_batch import read_objects

if TYPE_CHECKING:
    from kgit.store.git_ops import Repo

KEYS_DIR = ".kgit/keys"
POLICY_FILE = ".kgit/signing.yaml"
ENDORSEMENTS_DIR = ".kgit/endorsements"
POLICY_STATEMENT = f"{ENDORSEMENTS_DIR}/policy.json"
POLICIES = ("off", "optional", "required")
RANK = {p: i for i, p in enumerate(POLICIES)}
MAX_BLOB_BYTES = 1 << 20  # keys, statements and the policy are a few hundred bytes each
TRUSTED = ("pinned", "endorsed", "accepted")


class TrustError(KgitError):
    pass


# -- policy file --------------------------------------------------------------------------------
def parse_policy(text: str | None) -> str:
    """The policy a ``.kgit/signing.yaml`` text says (``off`` when there is none)."""
    if text is None:
        return "off"
    try:
        data = bounded_yaml.load(text, POLICY_FILE, max_bytes=64 << 10, max_nodes=1_000)
    except bounded_yaml.SyntaxProblem:
        data = []
    except KgitError as exc:
        raise TrustError(f"{exc}; it must say `policy: off|optional|required`") from None
    data = {} if data is None else data
    value = data.get("policy", "off") if isinstance(data, dict) else None
    if value is False:  # `policy: off` unquoted is YAML's false: files written that way mean off
        value = "off"
    if not isinstance(value, str) or value not in POLICIES:
        raise TrustError(f"{POLICY_FILE} must say `policy: off|optional|required`")
    return value


def policy_text(value: str) -> str:
    # quoted: a bare `off` would read back as a boolean
    return f'# Signing policy for kgit releases: off, optional or required.\npolicy: "{value}"\n'


def _policy_or_off(text: str | None) -> str:
    try:
        return parse_policy(text)
    except KgitError:
        return "off"


# -- keys and statements ------------------------------------------------------------------------
@dataclass
class TrustedKey:
    path: Path
    fingerprint: str


def fingerprint_of(public_key: Any) -> str:
    """sha256 of the key's PEM SubjectPublicKeyInfo: the key hint model-signing writes in a bundle."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


_FP_CACHE: dict[bytes, str | None] = {}


def key_fingerprint(pem: bytes) -> str | None:
    """The fingerprint of a PEM public key, or None if ``pem`` is not one."""
    digest = hashlib.sha256(pem).digest()
    if digest not in _FP_CACHE:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization

        try:
            _FP_CACHE[digest] = fingerprint_of(serialization.load_pem_public_key(pem))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            _FP_CACHE[digest] = None
    return _FP_CACHE[digest]


def key_statement(root: str, fp: str) -> bytes:
    return f"kgit key endorsement v1\nrepository {root}\nkey {fp}\n".encode()


def policy_statement(root: str, value: str, replaces: str | None) -> bytes:
    return f"kgit policy endorsement v1\nrepository {root}\npolicy {value}\nreplaces {replaces or '-'}\n".encode()


def sign_statement(private_key: Any, text: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(private_key.sign(text, ec.ECDSA(hashes.SHA256()))).decode()


def _verify_statement(pem: bytes, text: bytes, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(base64.b64decode(signature, validate=True), text, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Statement:
    path: str
    kind: str  # "key" or "policy"
    subject: str  # the endorsed key's fingerprint, or the policy
    by: str  # the endorser's fingerprint
    signature: str
    replaces: str | None = None  # policy statements: the commit that last set the policy before


def _parse_statement(path: str, data: bytes) -> Statement | None:
    try:
        d = bounded_yaml.load_json(data, path, max_bytes=MAX_BLOB_BYTES)
    except KgitError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("by"), str) or not isinstance(d.get("signature"), str):
        return None
    if d.get("kind") == "key" and isinstance(d.get("key"), str):
        return Statement(path, "key", d["key"], d["by"], d["signature"])
    replaces = d.get("replaces")
    if d.get("kind") == "policy" and d.get("policy") in POLICIES and (replaces is None or isinstance(replaces, str)):
        return Statement(path, "policy", d["policy"], d["by"], d["signature"], replaces or None)
    return None


def _is_key(path: str) -> bool:
    rest = path[len(KEYS_DIR) + 1 :] if path.startswith(KEYS_DIR + "/") else ""
    return bool(rest) and "/" not in rest and rest.endswith(".pem")


def _is_statement(path: str) -> bool:
    rest = path[len(ENDORSEMENTS_DIR) + 1 :] if path.startswith(ENDORSEMENTS_DIR + "/") else ""
    return bool(rest) and "/" not in rest and rest.endswith(".json")


# -- a tree: the work tree's or a commit's .kgit/ -------------------------------------------------
@dataclass
class Snapshot:
    keys: dict[str, bytes] = field(default_factory=dict)  # path -> PEM
    statements: dict[str, bytes] = field(default_factory=dict)  # path -> JSON
    policy: str | None = None  # the text of .kgit/signing.yaml

    def fingerprints(self) -> dict[str, str | None]:
        return {path: key_fingerprint(pem) for path, pem in self.keys.items()}

    def pems(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for _path, pem in sorted(self.keys.items()):
            fp = key_fingerprint(pem)
            if fp is not None:
                out.setdefault(fp, pem)
        return out

    def parsed(self) -> list[Statement]:
        return [s for p, d in sorted(self.statements.items()) if (s := _parse_statement(p, d)) is not None]


def _worktree_snapshot(root: Path) -> Snapshot:
    snap = Snapshot()
    for rel, into in ((KEYS_DIR, snap.keys), (ENDORSEMENTS_DIR, snap.statements)):
        folder = root / rel
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                path = f"{rel}/{f.name}"
                if (_is_key(path) or _is_statement(path)) and f.is_file():
                    into[path] = bounded_yaml.read_bytes(f, path, max_bytes=MAX_BLOB_BYTES)
    policy = root / POLICY_FILE
    if policy.is_file():
        snap.policy = bounded_yaml.read_bytes(policy, POLICY_FILE, max_bytes=MAX_BLOB_BYTES).decode(errors="replace")
    return snap


class _Git:
    """git as a subprocess, for a work tree (``-C``) or a bare repository (``--git-dir``); the
    environment is inherited, so objects in a push's quarantine are visible."""

    def __init__(self, base: list[str]) -> None:
        self.base = base

    @classmethod
    def work_tree(cls, root: Path) -> _Git:
        return cls(["git", "-C", str(root)])

    @classmethod
    def bare(cls, git_dir: Path) -> _Git:
        return cls(["git", f"--git-dir={git_dir}"])

    @staticmethod
    def env() -> dict[str, str]:
        return {**os.environ, "GIT_NO_REPLACE_OBJECTS": "1"}  # replace refs never change what is read

    def run(self, *args: str) -> tuple[int, bytes]:
        try:
            proc = subprocess.run([*self.base, *args], stdin=subprocess.DEVNULL, capture_output=True, env=self.env())
        except FileNotFoundError:
            raise TrustError("git not found on PATH") from None
        return proc.returncode, proc.stdout

    def lines(self, *args: str) -> list[str]:
        code, out = self.run(*args)
        return out.decode(errors="replace").split() if code == 0 else []

    def ls_tree(self, rev: str, path: str) -> dict[str, str]:
        code, out = self.run("ls-tree", "-r", "-z", rev, "--", path)
        entries: dict[str, str] = {}
        for entry in out.split(b"\0") if code == 0 else []:
            meta, _, p = entry.partition(b"\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == b"blob":
                entries[p.decode(errors="replace")] = parts[2].decode()
        return entries

    def blobs(self, oids: list[str]) -> dict[str, bytes]:
        """The content of each object of ``oids`` that exists (at most MAX_BLOB_BYTES + 1 bytes of
        one larger: nothing kgit reads under .kgit/ is anywhere near that)."""
        found: dict[str, bytes] = {}
        try:
            for obj in read_objects(list(dict.fromkeys(oids)), git=self.base, env=self.env(), max_bytes=MAX_BLOB_BYTES):
                if obj.data is not None:
                    found[obj.oid] = obj.data
        except CommandError:
            return {}
        except FileNotFoundError:
            raise TrustError("git not found on PATH") from None
        return found

    def snapshot(self, rev: str) -> Snapshot:
        entries = {
            p: o for p, o in self.ls_tree(rev, ".kgit").items() if _is_key(p) or _is_statement(p) or p == POLICY_FILE
        }
        blobs = self.blobs(list(entries.values()))
        snap = Snapshot()
        for path, oid in entries.items():
            data = blobs.get(oid, b"")
            if path == POLICY_FILE:
                snap.policy = data.decode(errors="replace")
            else:
                (snap.keys if _is_key(path) else snap.statements)[path] = data
        return snap

    def policy_changes(self, rev: str) -> list[str]:
        """The last two commits of ``rev``'s history that changed the policy file, newest first."""
        return self.lines("log", "-2", "--format=%H", rev, "--", POLICY_FILE)

    def last_change(self, path: str, rev: str = "HEAD") -> str | None:
        found = self.lines("log", "-1", "--format=%H", rev, "--", path)
        return found[0] if found else None


# -- the rules ----------------------------------------------------------------------------------
@dataclass
class Origin:
    """What a clone pins on first use, from history alone."""

    root: str  # the earliest commit that added .kgit/keys/*.pem: the repository's trust root
    roots: set[str]  # fingerprints of the keys in it
    policy: str  # the strongest policy the history ever had


def origin(g: _Git, rev: str) -> Origin | None:
    """The trust root of ``rev``'s history (None if no commit of it added a key). Four git calls."""
    added = g.lines("log", "--reverse", "--diff-filter=A", "--format=%H", rev, "--", f"{KEYS_DIR}/*.pem")
    if not added:
        return None
    root = added[0]
    keys = {p: o for p, o in g.ls_tree(root, KEYS_DIR).items() if _is_key(p)}
    code, raw = g.run("log", "--format=", "--raw", "--no-abbrev", rev, "--", POLICY_FILE)
    policy_blobs = [
        line.split()[3]
        for line in raw.decode(errors="replace").splitlines()
        if code == 0 and line.startswith(":") and len(line.split()) > 4 and set(line.split()[3]) != {"0"}
    ]
    blobs = g.blobs([*keys.values(), *policy_blobs])
    roots = {fp for o in keys.values() if (fp := key_fingerprint(blobs.get(o, b""))) is not None}
    policies = [_policy_or_off(blobs[o].decode(errors="replace")) for o in policy_blobs if o in blobs]
    return Origin(root, roots, max(policies, key=RANK.__getitem__, default="off"))


def closure(snap: Snapshot, start: set[str], root: str) -> dict[str, str | None]:
    """Every key of ``snap`` trusted from ``start``: fingerprint -> endorser (None for start keys)."""
    pems = snap.pems()
    trusted: dict[str, str | None] = {fp: None for fp in sorted(start) if fp in pems}
    pending = [s for s in snap.parsed() if s.kind == "key" and s.subject in pems]
    progress = True
    while progress:
        progress = False
        for s in pending:
            if (
                s.subject not in trusted
                and s.by in trusted
                and s.by != s.subject
                and _verify_statement(pems[s.by], key_statement(root, s.subject), s.signature)
            ):
                trusted[s.subject] = s.by
                progress = True
    return trusted


def policy_endorser(
    snap: Snapshot, trusted: set[str], root: str, value: str, changes: Callable[[], list[str]]
) -> str | None:
    """The trusted key that signed the tree's policy ``value`` as a change of the policy that was
    set before it (``changes``: the last two commits that changed the policy file), or None."""
    data = snap.statements.get(POLICY_STATEMENT)
    s = _parse_statement(POLICY_STATEMENT, data) if data is not None else None
    pems = snap.pems()
    if s is None or s.kind != "policy" or s.subject != value or s.by not in trusted or s.by not in pems:
        return None
    if not _verify_statement(pems[s.by], policy_statement(root, value, s.replaces), s.signature):
        return None
    last = changes()
    return s.by if s.replaces == (last[1] if len(last) > 1 else None) else None


# -- a clone's effective trust ------------------------------------------------------------------
@dataclass
class KeyStatus:
    path: str  # relative to the repository root
    fingerprint: str | None
    status: str  # pinned, endorsed, accepted, untrusted, or invalid (not a PEM public key)
    endorsed_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "endorsed_by": self.endorsed_by,
        }


@dataclass
class Trust:
    root_dir: Path
    root: str | None  # the trust root commit (None: no key in the history yet)
    keys: list[KeyStatus]
    policy: str  # in force
    tree_policy: str  # what .kgit/signing.yaml says
    pinned_policy: str | None
    policy_endorsed_by: str | None = None
    note: str | None = None  # why the tree's policy is not in force

    def trusted(self) -> list[TrustedKey]:
        return [
            TrustedKey(self.root_dir / k.path, k.fingerprint)
            for k in self.keys
            if k.status in TRUSTED and k.fingerprint
        ]

    def is_trusted(self, fp: str) -> bool:
        return any(k.fingerprint == fp for k in self.keys if k.status in TRUSTED)

    def vouches(self, fp: str) -> bool:
        """Trusted through the repository (pinned or endorsed), not only accepted in this clone:
        what a key must be for its endorsements to be worth committing."""
        return any(k.fingerprint == fp for k in self.keys if k.status in ("pinned", "endorsed"))

    def key(self, fp: str) -> KeyStatus | None:
        return next((k for k in self.keys if k.fingerprint == fp), None)

    def state(self) -> str:
        """What validation results depend on: the policy in force and the trusted keys."""
        fps = sorted({k.fingerprint for k in self.keys if k.status in TRUSTED and k.fingerprint})
        return hashlib.sha256(f"{self.policy};{','.join(fps)}".encode()).hexdigest()[:32]

    def added_by(self, path: str) -> str | None:
        """The commit that last wrote the key file at ``path`` (None if it is not committed)."""
        return _Git.work_tree(self.root_dir).last_change(path)

    def untrusted_reason(self, fp: str, label: str) -> str | None:
        """Why a release signed by ``fp`` is refused, if ``fp`` is a key in the tree this clone does not trust."""
        k = self.key(fp)
        if k is None or k.status in TRUSTED:
            return None
        commit = self.added_by(k.path)
        added = f"added by commit {commit[:8]}" if commit else f"{k.path}, not committed,"
        return (
            f"{label} is signed by key {fp[:16]}, {added} without endorsement by a trusted key: "
            f"if you trust it, run `kgit keys accept {fp[:16]}`"
        )

    def requirement(self) -> str:
        """Why signatures are required (when the policy in force is required)."""
        if self.note:
            return f"signed releases are required here: {self.note}"
        return f"this repository requires signed releases ({POLICY_FILE})"


_CACHE: dict[tuple[Any, ...], Trust] = {}


def _trust_path(repo: Repo) -> Path:
    return clone_state.path(repo, clone_state.TRUST)


def _stat_key(root: Path, state_path: Path) -> tuple[Any, ...]:
    paths = [root / POLICY_FILE, state_path]
    for rel in (KEYS_DIR, ENDORSEMENTS_DIR):
        if (root / rel).is_dir():
            paths += sorted((root / rel).iterdir())
    out: list[Any] = [str(root)]
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((str(p), None))
    return tuple(out)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = clone_state.read_json(path)
    except KgitError:
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(path: Path, state: dict[str, Any]) -> None:
    try:
        clone_state.write_json(path, state, indent=2)
    except OSError:  # a read-only clone still computes its trust; it just cannot remember it
        pass


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def effective(repo: Repo, *, tolerate_bad_policy: bool = False) -> Trust:
    """This clone's trust: the keys of the work tree with their status, and the policy in force.
    Pins on first use and when a stronger (or endorsed) policy is adopted; cached per process.
    A policy file that does not parse raises, unless ``tolerate_bad_policy`` (to rewrite it)."""
    state_path = _trust_path(repo)
    cached = _CACHE.get(_stat_key(repo.root, state_path))
    if cached is not None:
        return cached
    snap = _worktree_snapshot(repo.root)
    g = _Git.work_tree(repo.root)
    state = _load_state(state_path)
    changed = False
    accepted = set(_strings(state.get("accepted")))
    if not isinstance(state.get("root"), str):
        first = origin(g, "HEAD")
        if first is not None:
            pinned = first.roots | set(closure(snap, first.roots, first.root))
            state = {
                "version": 1,
                "root": first.root,
                "roots": sorted(first.roots),
                "pinned": sorted(pinned),
                "policy": first.policy,
                "accepted": sorted(accepted),
            }
            changed = True
    root = state.get("root") if isinstance(state.get("root"), str) else None
    pinned_keys = set(_strings(state.get("pinned")))
    roots = set(_strings(state.get("roots"))) if "roots" in state else pinned_keys
    # from the roots first, so a key that is endorsed shows its endorser even when it is pinned too
    via_roots = closure(snap, roots | accepted, root or "-")
    trusted = {fp: via_roots.get(fp, by) for fp, by in closure(snap, set(via_roots) | pinned_keys, root or "-").items()}
    keys = []
    for path, fp in sorted(snap.fingerprints().items()):
        if fp is None:
            keys.append(KeyStatus(path, None, "invalid"))
        elif fp in trusted and trusted[fp] is not None:
            keys.append(KeyStatus(path, fp, "endorsed", trusted[fp]))
        elif fp in trusted:
            keys.append(KeyStatus(path, fp, "pinned" if fp in pinned_keys else "accepted"))
        else:
            keys.append(KeyStatus(path, fp, "untrusted"))
    pinned_policy = state.get("policy") if state.get("policy") in POLICIES else None
    try:
        tree_policy = parse_policy(snap.policy)
        bad_policy = False
    except KgitError:
        if not tolerate_bad_policy:
            raise
        tree_policy, bad_policy = pinned_policy or "off", True
    in_force, by, note = tree_policy, None, None
    if pinned_policy is not None and RANK[tree_policy] < RANK[pinned_policy]:
        by = policy_endorser(snap, set(trusted), root or "-", tree_policy, lambda: g.policy_changes("HEAD"))
        if by is None:
            in_force = pinned_policy
            note = (
                f"{POLICY_FILE} says {tree_policy}, a weakening not endorsed by a trusted key, so the pinned "
                f"policy {pinned_policy} stays in force (to accept it in this clone: "
                f"`kgit keys accept --policy {tree_policy}`)"
            )
    if pinned_policy is not None and in_force != pinned_policy:
        state["policy"] = in_force  # stronger, or an endorsed weakening: pin it
        changed = True
    if changed:
        _save_state(state_path, state)
    result = Trust(
        repo.root, root, keys, in_force, tree_policy, state.get("policy") if pinned_policy else None, by, note
    )
    if not bad_policy:
        _CACHE[_stat_key(repo.root, state_path)] = result
    return result


def accept_key(repo: Repo, fingerprint: str) -> tuple[KeyStatus, bool]:
    """Trust the tree's key ``fingerprint`` (or a unique prefix of it) in this clone only;
    returns its status before and whether anything changed."""
    fingerprint = fingerprint.strip().lower()
    t = effective(repo)
    if len(fingerprint) < 8 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise TrustError(
            f"{fingerprint!r} is not a key fingerprint: give at least its first 8 hex digits (see `kgit keys list`)"
        )
    matches = {k.fingerprint: k for k in t.keys if k.fingerprint and k.fingerprint.startswith(fingerprint)}
    if not matches:
        raise TrustError(f"no key {fingerprint} under {KEYS_DIR}/ (see `kgit keys list`)")
    if len(matches) > 1:
        raise TrustError(f"{fingerprint} matches {len(matches)} keys: give more of the fingerprint")
    key = next(iter(matches.values()))
    if key.status in TRUSTED:
        return key, False
    path = _trust_path(repo)
    state = _load_state(path)
    state["accepted"] = sorted(set(_strings(state.get("accepted"))) | {str(key.fingerprint)})
    _save_state(path, state)
    return key, True


def accept_policy(repo: Repo, value: str) -> bool:
    """Pin ``value`` as this clone's signing policy (a stronger one in the tree still wins)."""
    if value not in POLICIES:
        raise TrustError(f"unknown signing policy {value!r}: use one of {', '.join(POLICIES)}")
    t = effective(repo)
    if t.pinned_policy == value or t.pinned_policy is None:
        return False
    path = _trust_path(repo)
    state = _load_state(path)
    state["policy"] = value
    _save_state(path, state)
    return True


def policy_history(root_dir: Path) -> list[str]:
    """The last two commits of HEAD's history that changed the policy file, newest first."""
    return _Git.work_tree(root_dir).policy_changes("HEAD")


def write_statement(root_dir: Path, rel: str, data: dict[str, Any]) -> None:
    path = root_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def key_endorsement(private_key: Any, by: str, fp: str, root: str) -> tuple[str, dict[str, Any]]:
    """(path, content) of a statement by key ``by`` endorsing key ``fp``."""
    return (
        f"{ENDORSEMENTS_DIR}/{fp[:16]}-by-{by[:16]}.json",
        {
            "kind": "key",
            "key": fp,
            "by": by,
            "repository": root,
            "signature": sign_statement(private_key, key_statement(root, fp)),
        },
    )


def policy_endorsement(private_key: Any, by: str, value: str, replaces: str | None, root: str) -> dict[str, Any]:
    return {
        "kind": "policy",
        "policy": value,
        "replaces": replaces,
        "by": by,
        "repository": root,
        "signature": sign_statement(private_key, policy_statement(root, value, replaces)),
    }


# -- a push received by a bare repository -------------------------------------------------------
def _is_zero(rev: str | None) -> bool:
    return not rev or set(rev) == {"0"}


def unendorsed_changes(git_dir: Path, old: str | None, new: str) -> list[str]:
    """One line per change under ``.kgit/`` between commits ``old`` and ``new`` that no key trusted
    at ``old`` endorses: keys added (or replaced), the signing policy weakened, endorsement files
    written that are not signed by a trusted key. ``old`` None (or all zeros): a new branch or tag,
    judged like a fresh clone of ``new`` (the keys of the earliest commit that added keys, and those
    they endorse, are trusted). Works on a bare repository and in a push's quarantine (git runs with
    the inherited environment); about ten git calls."""
    g = _Git.bare(Path(git_dir))
    if _is_zero(new):
        return []
    before = None if _is_zero(old) else origin(g, str(old))
    if before is not None:
        assert old is not None
        root = before.root
        snap_old = g.snapshot(old)
        trusted_old = set(closure(snap_old, before.roots, root))
        policy_old = _policy_or_off(snap_old.policy)
        if (
            RANK[policy_old] < RANK[before.policy]
            and policy_endorser(snap_old, trusted_old, root, policy_old, lambda: g.policy_changes(str(old))) is None
        ):
            policy_old = before.policy
        code, out = g.run("diff-tree", "-r", "--no-renames", "--name-status", "-z", old, new, "--", ".kgit")
        fields = out.decode(errors="replace").split("\0") if code == 0 else []
        changed = {fields[i + 1]: fields[i] for i in range(0, len(fields) - 1, 2) if fields[i] in "AMDT"}
        span = f"{old}..{new}"
    else:
        first = origin(g, new)
        if first is None:
            return []  # no key in the history: nothing is signed, nothing to trust
        root, trusted_old, policy_old = first.root, first.roots, first.policy
        changed = {}
        span = new
    snap = g.snapshot(new)
    if before is None:
        changed = {p: "A" for p in [*snap.keys, *snap.statements]}
        if snap.policy is not None:
            changed[POLICY_FILE] = "A"
    trusted = closure(snap, trusted_old, root)
    problems: list[str] = []

    def commit_of(path: str) -> str:
        found = g.last_change(path, span)
        return f" by commit {found[:8]}" if found else ""

    for path in sorted(changed):
        if changed[path] == "D":
            continue  # removing a key or an endorsement only reduces trust
        if _is_key(path):
            fp = key_fingerprint(snap.keys.get(path, b""))
            if fp is None:
                problems.append(f"{path}{commit_of(path)} is not a PEM public key")
            elif fp not in trusted:
                problems.append(
                    f"key {fp[:16]} ({path}) added{commit_of(path)} without endorsement by a key "
                    f"trusted before this push: a trusted key holder runs `kgit keys trust {path}`"
                )
        elif _is_statement(path) and before is not None:  # (a new ref: its keys and policy are what count)
            s = _parse_statement(path, snap.statements.get(path, b""))
            pems = snap.pems()
            if s is None:
                problems.append(f"{path}{commit_of(path)} is not a kgit endorsement statement")
            elif s.by not in trusted or s.by not in pems:
                problems.append(
                    f"{path}{commit_of(path)} is signed by key {s.by[:16]}, which is not trusted before this push"
                )
            elif s.kind == "key" and not _verify_statement(pems[s.by], key_statement(root, s.subject), s.signature):
                problems.append(f"{path}{commit_of(path)}: its signature does not verify")
    if POLICY_FILE in changed or POLICY_STATEMENT in changed:
        try:
            value = parse_policy(snap.policy)
        except KgitError as exc:
            problems.append(f"{exc}{commit_of(POLICY_FILE)}")
        else:
            if (
                RANK[value] < RANK[policy_old]
                and policy_endorser(snap, set(trusted), root, value, lambda: g.policy_changes(new)) is None
            ):
                problems.append(
                    f"{POLICY_FILE}: the signing policy is weakened from {policy_old} to {value}"
                    f"{commit_of(POLICY_FILE)} without endorsement by a key trusted before this push: "
                    f"a trusted key holder runs `kgit keys policy {value}`"
                )
    return problems
