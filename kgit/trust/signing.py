"""Signed releases: prove who released a model and that no byte changed since.

Signing and verification use the OpenSSF ``model-signing`` library with elliptic-curve keys,
entirely offline (no Sigstore service). The only module that imports it, lazily.

- Public keys are committed under ``.kgit/keys/``; which of them a clone trusts, and which policy
  (``off``, ``optional``, ``required``; committed in ``.kgit/signing.yaml``) is in force, is decided by
  ``kgit.trust.keyring``: pinned per clone on first use, extended by signed endorsements or local acceptance.
- Your private key is never committed: its path is in the local git config ``kgit.signingKey``
  (``kgit keys init`` creates one under ``~/.config/kgit/keys/``).
- A signed version folder holds ``kgit.sig`` (a Sigstore bundle over every other file, the metadata
  included); the metadata records the signer's key fingerprint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError, SigningError, one_line
from kgit.core.layout import SIGNATURE_FILE
from kgit.store.git_ops import Repo
from kgit.trust import keyring as trust_rules
from kgit.trust.keyring import (
    ENDORSEMENTS_DIR,
    KEYS_DIR,
    POLICIES,
    POLICY_FILE,
    POLICY_STATEMENT,
    RANK,
    TrustedKey,
    fingerprint_of,
)

__all__ = [
    "KEYS_DIR",
    "POLICY_FILE",
    "POLICIES",
    "TrustedKey",
    "fingerprint_of",
    "SigningError",
    "sign",
    "verify",
    "signing_key",
    "init_keys",
    "trust",
    "set_policy",
    "policy",
    "tree_keys",
    "private_key_path",
]

GIT_CONFIG_KEY = "kgit.signingKey"


# -- keys -----------------------------------------------------------------------------------------
def _load_public(pem: bytes, source: str) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise KgitError(f"{source} is not a PEM public key") from None


def load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KgitError(
            f"cannot read the signing key {path}: {exc.strerror} (run `kgit keys init`, "
            f"or `git config {GIT_CONFIG_KEY} PATH`)"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KgitError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KgitError(f"{path} is not an elliptic-curve key: kgit signs with EC keys (P-256, P-384, P-521)")
    return key


def tree_keys(root: Path) -> list[TrustedKey]:
    """The public keys under ``.kgit/keys/`` (trusted or not: see ``kgit.trust.keyring``); files that are not
    PEM public keys are left out."""
    folder = root / KEYS_DIR
    keys = []
    for pem in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
        fp = trust_rules.key_fingerprint(pem.read_bytes())
        if fp is not None:
            keys.append(TrustedKey(pem, fp))
    return keys


def policy(root: Path) -> str:
    """The policy the work tree's ``.kgit/signing.yaml`` says (the one in force may be stronger:
    ``kgit.trust.keyring.effective``)."""
    path = root / POLICY_FILE
    return trust_rules.parse_policy(path.read_text(errors="replace") if path.is_file() else None)


def private_key_path(repo: Repo) -> Path | None:
    value = repo.config_get(GIT_CONFIG_KEY)
    return Path(value).expanduser() if value else None


def _my_key(repo: Repo) -> tuple[Any, str] | None:
    """(private key, fingerprint) of the configured signing key; None when none is configured."""
    path = private_key_path(repo)
    if path is None:
        return None
    key = load_private(path)
    return key, fingerprint_of(key.public_key())


def signing_key(repo: Repo) -> tuple[Path, str] | None:
    """(private key path, fingerprint) to sign new releases with, per the policy in force.

    None when the policy is off, or optional with no key configured. Raises when the policy requires
    a key that is missing, or when the key is not one this clone trusts."""
    t = trust_rules.effective(repo)
    path = private_key_path(repo)
    if t.policy == "off" or (t.policy == "optional" and path is None):
        return None
    if path is None:
        raise KgitError(
            f"{t.requirement()} and no signing key is set: run `kgit keys init` (or `kgit keys init --private-key PEM`)"
        )
    fp = fingerprint_of(load_private(path).public_key())
    if not t.is_trusted(fp):
        known = t.key(fp)
        if known is None:
            raise KgitError(
                f"your signing key {path} (fingerprint {fp[:16]}) is not trusted here: add its public key "
                f"with `kgit keys trust PUBLIC.pem` (committed under {KEYS_DIR}/)"
            )
        raise KgitError(
            f"your signing key {path} (fingerprint {fp[:16]}) is not trusted here: {known.path} is not "
            f"endorsed by a trusted key (a holder of one runs `kgit keys trust {known.path}`; "
            f"or accept it in this clone: `kgit keys accept {fp[:16]}`)"
        )
    return path, fp


# -- sign / verify --------------------------------------------------------------------------------
def _hashing_config() -> Any:
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def sign(folder: Path, private_key: Path) -> None:
    import model_signing

    try:
        (
            model_signing.signing.Config()
            .set_hashing_config(_hashing_config())
            .use_elliptic_key_signer(private_key=private_key)
            .sign(folder, folder / SIGNATURE_FILE)
        )
    except (ValueError, OSError) as exc:
        raise SigningError(f"signing {folder.name} with {private_key} failed: {one_line(exc, 200)}") from None


_HINT_RE = re.compile(rb'"hint"\s*:\s*"([0-9a-f]{64})"')
_MISMATCH_RE = re.compile(r"for '([^']+)'")


def verify(
    folder: Path, trusted: list[TrustedKey], label: str, untrusted: Callable[[str], str | None] | None = None
) -> str:
    """Check ``folder`` against its signature with the trusted keys; return the signer's fingerprint.
    ``untrusted(fp)`` may explain why a signer is not trusted (the message of the refusal)."""
    import model_signing

    sig = folder / SIGNATURE_FILE
    if not sig.is_file():
        raise SigningError(f"{label} is not signed (no {SIGNATURE_FILE})")
    m = _HINT_RE.search(sig.read_bytes())
    if not m:
        raise SigningError(f"{label}: {SIGNATURE_FILE} is corrupt (no signer key in it)")
    fp = m.group(1).decode()
    key = next((k for k in trusted if k.fingerprint == fp), None)
    if key is None:
        reason = untrusted(fp) if untrusted is not None else None
        raise SigningError(reason or f"{label} is signed by key {fp[:16]}, which is not trusted here ({KEYS_DIR}/)")
    try:
        (
            model_signing.verifying.Config()
            .use_elliptic_key_verifier(public_key=key.path)
            .set_hashing_config(_hashing_config())
            .verify(folder, sig)
        )
    except ValueError as exc:
        text = " ".join(str(exc).split())
        files = _MISMATCH_RE.findall(text)
        if "mismatch" in text.lower() and files:
            raise SigningError(
                f"{label}: signature does not match file(s) {', '.join(sorted(set(files))[:3])}"
            ) from None
        raise SigningError(f"{label}: signature does not verify ({one_line(text, 160)})") from None
    except Exception as exc:  # a corrupt bundle fails deep inside the parser
        raise SigningError(f"{label}: {SIGNATURE_FILE} is corrupt ({type(exc).__name__})") from None
    return fp


# -- setting up keys --------------------------------------------------------------------------------
def _write_public(root: Path, public_key: Any, name: str | None) -> tuple[Path, bool]:
    from cryptography.hazmat.primitives import serialization

    fp = fingerprint_of(public_key)
    for k in tree_keys(root):
        if k.fingerprint == fp:
            return k.path, False
    folder = root / KEYS_DIR
    path = folder / f"{name or fp[:16]}.pem"
    if path.exists():
        raise KgitError(f"{path.relative_to(root)} exists and holds another key: pick another --name")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path, True


def _default_private_path(repo: Repo, fp: str) -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kgit" / "keys"
    return base / f"{repo.root.name}-{fp[:16]}.pem"


def _only_here(fp: str) -> str:
    return (
        f"key {fp[:16]} is accepted in this clone only: other clones will not trust it until a holder of a "
        f"trusted key runs `kgit keys trust` on it, or they run `kgit keys accept {fp[:16]}`"
    )


def init_keys(
    repo: Repo, private_key: Path | None = None, name: str | None = None, require: bool = False
) -> dict[str, Any]:
    """Create (or register) this user's key pair; commit its public key; set the policy."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    changes: list[str] = []
    current_policy = policy(repo.root)  # a policy file that does not parse: refused before anything changes
    if private_key is not None:
        key_path = private_key.expanduser().resolve()
        if repo.root in key_path.parents and repo.try_git("check-ignore", "-q", str(key_path))[0] != 0:
            raise KgitError(
                f"{private_key} is inside the repository and not git-ignored, so it could be committed: "
                "keep private keys outside the repository (or git-ignore them)"
            )
        key = load_private(key_path)
    else:
        current = private_key_path(repo)
        if current is not None and current.exists():
            key, key_path = load_private(current), current
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            fp = fingerprint_of(key.public_key())
            key_path = _default_private_path(repo, fp)
            key_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(
                    key.private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    )
                )
            changes.append(f"created a private key {key_path} (keep it safe; it is never committed)")
    if repo.config_get(GIT_CONFIG_KEY) != str(key_path):
        repo.config_set(GIT_CONFIG_KEY, str(key_path))
        changes.append(f"set git config {GIT_CONFIG_KEY} (local, not committed)")
    pub_path, added = _write_public(repo.root, key.public_key(), name)
    if added:
        changes.append(f"added its public key: {pub_path.relative_to(repo.root)}")
    wanted = "required" if require else ("optional" if current_policy == "off" else current_policy)
    path = repo.root / POLICY_FILE
    if not path.exists() or current_policy != wanted:  # only ever stronger: needs no endorsement
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(trust_rules.policy_text(wanted))
        changes.append(f"set the signing policy to {wanted} ({POLICY_FILE})")
    commit = _commit(repo, "kgit: signing keys and policy")
    fp = fingerprint_of(key.public_key())
    t = trust_rules.effective(repo)
    if not t.is_trusted(fp):
        trust_rules.accept_key(repo, fp)
        changes.append(_only_here(fp))
        t = trust_rules.effective(repo)
    return {
        "private_key": str(key_path),
        "public_key": str(pub_path.relative_to(repo.root)),
        "fingerprint": fp,
        "policy": t.policy,
        "changes": changes,
        "commit": commit,
    }


def trust(repo: Repo, public_key: Path, name: str | None = None) -> dict[str, Any]:
    """Add a public key under ``.kgit/keys/``. Signed with your signing key when this clone trusts it
    (an endorsement every clone honours); otherwise accepted in this clone only."""
    try:
        data = public_key.read_bytes()
    except OSError as exc:
        raise KgitError(f"cannot read {public_key}: {exc.strerror}") from None
    key = _load_public(data, str(public_key))
    fp = fingerprint_of(key)
    t = trust_rules.effective(repo)
    mine = _my_key(repo)
    endorser = mine if mine is not None and t.root is not None and t.vouches(mine[1]) and mine[1] != fp else None
    statement = trust_rules.key_endorsement(endorser[0], endorser[1], fp, t.root) if endorser and t.root else None
    path, added = _write_public(repo.root, key, name)
    endorsed = statement is not None and not (repo.root / statement[0]).exists()
    if statement is not None and endorsed:
        trust_rules.write_statement(repo.root, *statement)
    commit = _commit(repo, "kgit: trust a signing key") if added or endorsed else None
    accepted = False
    if endorser is None and not t.is_trusted(fp):
        accepted = trust_rules.accept_key(repo, fp)[1]
    status = trust_rules.effective(repo).key(fp)
    return {
        "public_key": str(path.relative_to(repo.root)),
        "fingerprint": fp,
        "added": added,
        "endorsed_by": endorser[1] if endorsed and endorser else None,
        "accepted": accepted,
        "status": status.status if status else "untrusted",
        "commit": commit,
        "warning": _only_here(fp) if accepted else None,
    }


def set_policy(repo: Repo, value: str) -> dict[str, Any]:
    """Set the repository's policy. With your trusted signing key the change is signed (so other
    clones honour a weakening); a weakening without one is accepted in this clone only."""
    if value not in POLICIES:
        raise KgitError(f"unknown signing policy {value!r}: use one of {', '.join(POLICIES)}")
    if value != "off" and not tree_keys(repo.root):
        raise KgitError(f"no keys in {KEYS_DIR}/: run `kgit keys init` first")
    t = trust_rules.effective(repo, tolerate_bad_policy=True)
    path = repo.root / POLICY_FILE
    try:
        in_tree: str | None = policy(repo.root) if path.exists() else None
    except KgitError:
        in_tree = None
    result: dict[str, Any] = {
        "policy": value,
        "changed": False,
        "endorsed_by": None,
        "accepted": False,
        "in_force": t.policy,
        "commit": None,
        "warning": None,
    }
    if in_tree == value and t.policy == value:
        return result
    weaker = RANK[value] < RANK[t.policy]
    mine = _my_key(repo)
    endorser = mine if mine is not None and t.root is not None and t.vouches(mine[1]) else None
    statement = None
    if endorser is not None and t.root is not None:
        committed = in_tree == value and (repo.show_file("HEAD", POLICY_FILE) or "").strip() == path.read_text().strip()
        last = trust_rules.policy_history(repo.root)
        replaces = (last[1] if len(last) > 1 else None) if committed else (last[0] if last else None)
        statement = trust_rules.policy_endorsement(endorser[0], endorser[1], value, replaces, t.root)
    if in_tree != value:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(trust_rules.policy_text(value))
    stale = repo.root / POLICY_STATEMENT
    if statement is not None:
        trust_rules.write_statement(repo.root, POLICY_STATEMENT, statement)
    elif stale.exists():
        stale.unlink()  # a statement for another policy (or another change): void, so removed
    result["commit"] = _commit(repo, f"kgit: signing policy {value}")
    result["changed"] = True
    if statement is not None:
        result["endorsed_by"] = endorser[1] if endorser else None
    elif weaker:
        trust_rules.accept_policy(repo, value)
        result["accepted"] = True
        result["warning"] = (
            f"the signing policy {value} is accepted in this clone only: other clones keep "
            f"{t.policy} until a holder of a trusted key runs `kgit keys policy {value}`, "
            f"or they run `kgit keys accept --policy {value}`"
        )
    result["in_force"] = trust_rules.effective(repo).policy
    return result


def _commit(repo: Repo, message: str) -> str | None:
    paths = [
        p
        for p in (KEYS_DIR, POLICY_FILE, ENDORSEMENTS_DIR)
        if (repo.root / p).exists() or repo.git("ls-files", "--", p)
    ]
    if not paths:
        return None
    repo.git("add", "-A", "--", *paths)
    staged = repo.git("diff", "--cached", "--name-only", "--", *paths)
    if not staged:
        return None
    return repo.commit_paths(message + "\n", staged.split("\n"))


def accept(repo: Repo, fingerprint: str | None = None, policy_value: str | None = None) -> dict[str, Any]:
    """Trust a key of the repository and/or a signing policy in this clone only (.git/kgit/trust.json)."""
    if fingerprint is None and policy_value is None:
        raise KgitError("give a key FINGERPRINT to accept, or --policy off|optional|required (see `kgit keys list`)")
    if policy_value is not None and policy_value not in POLICIES:
        raise KgitError(f"unknown signing policy {policy_value!r}: use one of {', '.join(POLICIES)}")
    result: dict[str, Any] = {}
    if fingerprint is not None:
        key, changed = trust_rules.accept_key(repo, fingerprint)
        now = trust_rules.effective(repo).key(str(key.fingerprint))
        result.update(
            {
                "fingerprint": key.fingerprint,
                "file": key.path,
                "accepted": changed,
                "status": now.status if now else key.status,
            }
        )
    if policy_value is not None:
        result["policy_accepted"] = trust_rules.accept_policy(repo, policy_value)
    result["policy"] = trust_rules.effective(repo).policy
    return result


def overview(repo: Repo) -> dict[str, Any]:
    """The repository's public keys with their trust in this clone, the policy, and this user's key."""
    t = trust_rules.effective(repo)
    keys = []
    for k in t.keys:
        entry = k.to_dict()
        entry["added_by"] = t.added_by(k.path) if k.status in ("untrusted", "invalid") else None
        keys.append(entry)
    mine = private_key_path(repo)
    return {
        "policy": t.policy,
        "policy_file": POLICY_FILE,
        "tree_policy": t.tree_policy,
        "pinned_policy": t.pinned_policy,
        "policy_endorsed_by": t.policy_endorsed_by,
        "policy_note": t.note,
        "root": t.root,
        "keys": keys,
        "trusted": [
            {"file": k["file"], "fingerprint": k["fingerprint"]} for k in keys if k["status"] in trust_rules.TRUSTED
        ],
        "signing_key": str(mine) if mine else None,
    }
