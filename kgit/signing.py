"""Signed releases: prove who released a model and that no byte changed since.

Signing and verification use the OpenSSF ``model-signing`` library with elliptic-curve keys,
entirely offline (no Sigstore service). The only module that imports it, lazily.

- Trusted public keys are committed under ``.kgit/keys/`` (a team may trust several).
- The repository's policy is committed in ``.kgit/signing.yaml``: ``off``, ``optional`` or ``required``.
- Your private key is never committed: its path is in the local git config ``kgit.signingKey``
  (``kgit keys init`` creates one under ``~/.config/kgit/keys/``).
- A signed version folder holds ``kgit.sig`` (a Sigstore bundle over every other file, the metadata
  included); the metadata records the signer's key fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgit.errors import KgitError
from kgit.git_ops import Repo
from kgit.metadata import SIGNATURE_FILE

KEYS_DIR = ".kgit/keys"
POLICY_FILE = ".kgit/signing.yaml"
POLICIES = ("off", "optional", "required")
GIT_CONFIG_KEY = "kgit.signingKey"


class SignatureError(KgitError):
    pass


# -- keys -----------------------------------------------------------------------------------------
def _load_public(pem: bytes, source: str) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise KgitError(f"{source} is not a PEM public key") from None


def fingerprint_of(public_key: Any) -> str:
    """sha256 of the key's PEM SubjectPublicKeyInfo: the key hint model-signing writes in a bundle."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KgitError(f"cannot read the signing key {path}: {exc.strerror} (run `kgit keys init`, "
                        f"or `git config {GIT_CONFIG_KEY} PATH`)") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KgitError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KgitError(f"{path} is not an elliptic-curve key: kgit signs with EC keys (P-256, P-384, P-521)")
    return key


@dataclass
class TrustedKey:
    path: Path
    fingerprint: str


def trusted_keys(root: Path) -> list[TrustedKey]:
    folder = root / KEYS_DIR
    keys = []
    for pem in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
        keys.append(TrustedKey(pem, fingerprint_of(_load_public(pem.read_bytes(), str(pem.relative_to(root))))))
    return keys


def policy(root: Path) -> str:
    path = root / POLICY_FILE
    if not path.exists():
        return "off"
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
        value = str(data.get("policy", "off")) if isinstance(data, dict) else ""
    except yaml.YAMLError:
        value = ""
    if value not in POLICIES:
        raise KgitError(f"{POLICY_FILE} must say `policy: off|optional|required`")
    return value


def private_key_path(repo: Repo) -> Path | None:
    value = repo.config_get(GIT_CONFIG_KEY)
    return Path(value).expanduser() if value else None


def signing_key(repo: Repo) -> tuple[Path, str] | None:
    """(private key path, fingerprint) to sign new releases with, per the repository's policy.

    None when the policy is off, or optional with no key configured. Raises when the policy requires
    a key that is missing, or when the key is not one of the repository's trusted keys."""
    mode = policy(repo.root)
    path = private_key_path(repo)
    if mode == "off" or (mode == "optional" and path is None):
        return None
    if path is None:
        raise KgitError(f"this repository requires signed releases ({POLICY_FILE}) and no signing key is set: "
                        "run `kgit keys init` (or `kgit keys init --private-key PEM`)")
    fp = fingerprint_of(load_private(path).public_key())
    if fp not in {k.fingerprint for k in trusted_keys(repo.root)}:
        raise KgitError(f"your signing key {path} (fingerprint {fp[:16]}) is not trusted here: add its public key "
                        f"with `kgit keys trust PUBLIC.pem` (committed under {KEYS_DIR}/)")
    return path, fp


# -- sign / verify --------------------------------------------------------------------------------
def _hashing_config() -> Any:
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def sign(folder: Path, private_key: Path) -> None:
    import model_signing

    try:
        (model_signing.signing.Config().set_hashing_config(_hashing_config())
         .use_elliptic_key_signer(private_key=private_key).sign(folder, folder / SIGNATURE_FILE))
    except (ValueError, OSError) as exc:
        raise SignatureError(f"signing {folder.name} with {private_key} failed: {' '.join(str(exc).split())[:200]}") from None


_HINT_RE = re.compile(rb'"hint"\s*:\s*"([0-9a-f]{64})"')
_MISMATCH_RE = re.compile(r"for '([^']+)'")


def verify(folder: Path, trusted: list[TrustedKey], label: str) -> str:
    """Check ``folder`` against its signature with the trusted keys; return the signer's fingerprint."""
    import model_signing

    sig = folder / SIGNATURE_FILE
    if not sig.is_file():
        raise SignatureError(f"{label} is not signed (no {SIGNATURE_FILE})")
    m = _HINT_RE.search(sig.read_bytes())
    if not m:
        raise SignatureError(f"{label}: {SIGNATURE_FILE} is corrupt (no signer key in it)")
    fp = m.group(1).decode()
    key = next((k for k in trusted if k.fingerprint == fp), None)
    if key is None:
        raise SignatureError(f"{label} is signed by key {fp[:16]}, which is not trusted here ({KEYS_DIR}/)")
    try:
        (model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key.path)
         .set_hashing_config(_hashing_config()).verify(folder, sig))
    except ValueError as exc:
        text = " ".join(str(exc).split())
        files = _MISMATCH_RE.findall(text)
        if "mismatch" in text.lower() and files:
            raise SignatureError(f"{label}: signature does not match file(s) {', '.join(sorted(set(files))[:3])}") from None
        raise SignatureError(f"{label}: signature does not verify ({text[:160]})") from None
    except Exception as exc:  # a corrupt bundle fails deep inside the parser
        raise SignatureError(f"{label}: {SIGNATURE_FILE} is corrupt ({type(exc).__name__})") from None
    return fp


# -- setting up keys --------------------------------------------------------------------------------
def _write_public(root: Path, public_key: Any, name: str | None) -> tuple[Path, bool]:
    from cryptography.hazmat.primitives import serialization

    fp = fingerprint_of(public_key)
    for k in trusted_keys(root):
        if k.fingerprint == fp:
            return k.path, False
    folder = root / KEYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or fp[:16]}.pem"
    if path.exists():
        raise KgitError(f"{path.relative_to(root)} exists and holds another key: pick another --name")
    path.write_bytes(public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, True


def _default_private_path(repo: Repo, fp: str) -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kgit" / "keys"
    return base / f"{repo.root.name}-{fp[:16]}.pem"


def init_keys(repo: Repo, private_key: Path | None = None, name: str | None = None,
              require: bool = False) -> dict[str, Any]:
    """Create (or register) this user's key pair; trust its public key; set the policy."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    changes: list[str] = []
    if private_key is not None:
        key_path = private_key.expanduser().resolve()
        if repo.root in key_path.parents and repo.try_git("check-ignore", "-q", str(key_path))[0] != 0:
            raise KgitError(f"{private_key} is inside the repository and not git-ignored, so it could be committed: "
                            "keep private keys outside the repository (or git-ignore them)")
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
                fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
            changes.append(f"created a private key {key_path} (keep it safe; it is never committed)")
    if repo.config_get(GIT_CONFIG_KEY) != str(key_path):
        repo.config_set(GIT_CONFIG_KEY, str(key_path))
        changes.append(f"set git config {GIT_CONFIG_KEY} (local, not committed)")
    pub_path, added = _write_public(repo.root, key.public_key(), name)
    if added:
        changes.append(f"trusted its public key: {pub_path.relative_to(repo.root)}")
    wanted = "required" if require else ("optional" if policy(repo.root) == "off" else policy(repo.root))
    if set_policy(repo, wanted, commit=False):
        changes.append(f"set the signing policy to {wanted} ({POLICY_FILE})")
    commit = _commit(repo, "kgit: signing keys and policy")
    return {"private_key": str(key_path), "public_key": str(pub_path.relative_to(repo.root)),
            "fingerprint": fingerprint_of(key.public_key()), "policy": policy(repo.root), "changes": changes,
            "commit": commit}


def trust(repo: Repo, public_key: Path, name: str | None = None) -> dict[str, Any]:
    try:
        data = public_key.read_bytes()
    except OSError as exc:
        raise KgitError(f"cannot read {public_key}: {exc.strerror}") from None
    key = _load_public(data, str(public_key))
    path, added = _write_public(repo.root, key, name)
    commit = _commit(repo, "kgit: trust a signing key") if added else None
    return {"public_key": str(path.relative_to(repo.root)), "fingerprint": fingerprint_of(key), "added": added, "commit": commit}


def set_policy(repo: Repo, value: str, commit: bool = True) -> bool:
    if value not in POLICIES:
        raise KgitError(f"unknown signing policy {value!r}: use one of {', '.join(POLICIES)}")
    if value != "off" and not trusted_keys(repo.root):
        raise KgitError(f"no trusted keys in {KEYS_DIR}/: run `kgit keys init` first")
    path = repo.root / POLICY_FILE
    if path.exists() and policy(repo.root) == value:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Signing policy for kgit releases: off, optional or required.\npolicy: {value}\n")
    if commit:
        _commit(repo, f"kgit: signing policy {value}")
    return True


def _commit(repo: Repo, message: str) -> str | None:
    paths = [p for p in (KEYS_DIR, POLICY_FILE) if (repo.root / p).exists()]
    repo.add(paths)
    staged = repo.git("diff", "--cached", "--name-only", "--", *paths)
    if not staged:
        return None
    return repo.commit_paths(message + "\n", staged.split("\n"))
