"""The release metadata record: one dataclass, its schema version, and JSON in and out.

The same record is written as ``metadata.json`` inside each version folder (travels with the bytes)
and into the ``meta`` of the folder's ``.dvc`` file (travels with git, readable before `dvc pull`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kgit.core import bounded_yaml
from kgit.core.errors import KgitError, describe
from kgit.core.fsutil import regular_files
from kgit.core.layout import METADATA_FILE, SIGNATURE_FILE

SCHEMA_VERSION = 1
FORMATS = ("savedmodel", "keras", "h5", "weights")
MAX_DEPTH = 64  # nesting kgit reads from git or files; deeper data is refused, never recursed into
MAX_FILE_BYTES = 16 << 20  # a metadata.json; hyperparameters are at most 1 MB of it


@dataclass
class TensorSpec:
    name: str
    shape: list[int | None]
    dtype: str


@dataclass
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # How the model is called / what it returns: "single", "list" or "dict".
    input_structure: str = "single"
    output_structure: str = "single"


@dataclass
class GitInfo:
    commit: str | None
    branch: str | None
    dirty: bool


@dataclass
class SourceInfo:
    """Whether the code that made the model is committed: HEAD, the script or module the model came
    from (``entry``: relative to the repository's root; an absolute path or ``<stdin>`` when it is
    not in the repository), and which of the files of the repository the releasing process had
    imported are not in HEAD as they are (``modified``: tracked but changed; ``untracked``: not in
    HEAD at all). ``dirty``: the code is not all committed."""

    commit: str | None
    entry: str | None
    dirty: bool
    modified: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)

    @property
    def entry_outside(self) -> bool:
        """The entry is not a file of the repository (a script elsewhere, ``<stdin>``, a notebook cell)."""
        return self.entry is not None and (self.entry.startswith(("/", "<")) or Path(self.entry).is_absolute())

    @property
    def uncommitted(self) -> list[str]:
        """Every file not in HEAD as it is, each with why (``train.py (modified)``): the entry first,
        then modified files, then untracked ones."""
        files = [(p, "modified") for p in sorted(self.modified)] + [(p, "untracked") for p in sorted(self.untracked)]
        files.sort(key=lambda pw: pw[0] != self.entry)  # stable: the entry first, the rest as they were
        return [f"{p} ({why})" for p, why in files]

    def summary(self, branch: str | None = None) -> str:
        """``abc123456789 + 2 uncommitted files: train.py (modified), layers.py (untracked)`` (with
        ``branch``: ``abc123456789 on main + ...``)."""
        return (self.commit or "no commit")[:12] + (f" on {branch}" if branch else "") + self.details()

    def details(self) -> str:
        """What ``summary`` says after the commit: `` + 2 uncommitted files: ...``, or "" when all is committed."""
        text = ""
        files = self.uncommitted
        if files:
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            text += f" + {len(files)} uncommitted file{'s' if len(files) != 1 else ''}: {shown}"
        if self.entry_outside:
            text += f"; the model came from {self.entry}, outside the repository"
        return text

    def entry_text(self) -> str:
        """The entry and whether it is committed: ``train.py (committed)``."""
        if self.entry is None:
            return "unknown (released from a file, not from code kgit could see)"
        if self.entry_outside:
            return f"{self.entry} (outside the repository: not committed)"
        state = (
            "modified" if self.entry in self.modified else "untracked" if self.entry in self.untracked else "committed"
        )
        return f"{self.entry} ({state})"

    @classmethod
    def from_dict(cls, d: Any) -> SourceInfo | None:
        """The block as recorded (None for a release made before kgit recorded it)."""
        if d is None:
            return None
        if not isinstance(d, dict):
            raise TypeError("source is not an object")
        return cls(
            commit=d.get("commit"),
            entry=d.get("entry"),
            dirty=bool(d.get("dirty")),
            modified=[str(p) for p in d.get("modified") or []],
            untracked=[str(p) for p in d.get("untracked") or []],
        )


@dataclass
class DatasetInfo:
    id: str | None = None
    path: str | None = None
    dvc_hash: str | None = None


@dataclass
class ReferenceInfo:
    inputs_file: str
    inputs_sha256: str
    outputs_file: str
    outputs_sha256: str
    atol: float
    generated: bool  # True when kgit generated the inputs from the signature


@dataclass
class Metadata:
    name: str
    version: str
    format: str
    formats: list[str]
    created_at: str
    git: GitInfo
    dataset: DatasetInfo
    hyperparameters: dict[str, Any]
    training: dict[str, Any]  # optimizer config, loss and metrics read from the compiled model
    libraries: dict[str, str]
    signature: Signature
    reference: ReferenceInfo
    files: dict[str, str]  # relative path -> sha256, every file in the folder but metadata.json
    custom_objects: list[str] = field(default_factory=list)  # "module:attr" passed by the user
    custom_modules: list[str] = field(default_factory=list)  # modules defining registered classes
    builder: str | None = None
    unsafe: bool = False
    notes: str | None = None
    signed_by: str | None = None  # fingerprint of the key that signed the folder, if signed
    # Whether the release holds the model's training state (optimizer, step), so training resumes:
    # false for an inference-only release and for a model that was never compiled.
    resumable: bool = True
    keras_flavour: str = "keras"  # "keras" (Keras 3) or "tf_keras" (Keras 2, validated with TF_USE_LEGACY_KERAS=1)
    # How good the model is: flat dotted keys (val.accuracy) -> finite numbers (kgit.core.metrics); also in
    # the release tag's summary. ``measured``: the keys the ``evaluate`` function (MODULE:FUNC) returned
    # when run on the model reloaded from the artifact in the fresh validation process.
    metrics: dict[str, float] = field(default_factory=dict)
    measured: list[str] = field(default_factory=list)
    evaluate: str | None = None
    # Where the model came from: the code that made it and whether it was committed (kgit.workflow.provenance);
    # None in releases made before kgit recorded it.
    source: SourceInfo | None = None
    # sha256 of the model's weights and, if compiled, its optimizer's variables, in order: the same
    # digest as an earlier version's means nothing was trained in between. None in older releases.
    weights_sha256: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # schema_version first, so a human reading the file sees it first.
        return {"schema_version": d.pop("schema_version"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metadata:
        try:
            if d.get("schema_version") != SCHEMA_VERSION:
                raise KgitError(
                    f"metadata schema version {d.get('schema_version')!r} is not supported by this kgit "
                    f"(it reads version {SCHEMA_VERSION}): upgrade kgit"
                )
            sig = d["signature"]
            kwargs = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            if "resumable" not in d:  # written before kgit recorded it: a compiled model kept its state
                kwargs["resumable"] = bool((d.get("training") or {}).get("compiled"))
            kwargs["git"] = GitInfo(**d["git"])
            kwargs["source"] = SourceInfo.from_dict(d.get("source"))
            kwargs["dataset"] = DatasetInfo(**d["dataset"])
            kwargs["reference"] = ReferenceInfo(**d["reference"])
            kwargs["signature"] = Signature(
                inputs=[TensorSpec(**t) for t in sig["inputs"]],
                outputs=[TensorSpec(**t) for t in sig["outputs"]],
                input_structure=sig.get("input_structure", "single"),
                output_structure=sig.get("output_structure", "single"),
            )
            return cls(**kwargs)
        except KgitError:
            raise
        except (KeyError, TypeError, AttributeError) as exc:
            raise KgitError(f"metadata is malformed ({describe(exc)})") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "metadata") -> Metadata:
        data = bounded_yaml.load_json(text, source, max_bytes=MAX_FILE_BYTES)
        if not isinstance(data, dict):
            raise KgitError(f"{source} is not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def read(cls, folder: Path) -> Metadata:
        path = folder / METADATA_FILE
        return cls.from_json(bounded_yaml.read_bytes(path, str(path), max_bytes=MAX_FILE_BYTES), str(path))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def hash_folder(
    folder: Path, exclude: tuple[str, ...] = (METADATA_FILE, SIGNATURE_FILE), known: dict[str, str] | None = None
) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (sorted relative POSIX paths); hashes in
    ``known`` are taken as given."""
    known = known or {}
    return {rel: known.get(rel) or sha256_file(folder / rel) for rel in regular_files(folder, exclude)}


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True if ``value`` nests lists/dicts deeper than ``limit`` (checked without recursion)."""
    return bounded_yaml.nesting_depth(value, limit) > limit


def check_json_serialisable(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except RecursionError:
        raise KgitError(f"{what} are nested too deeply to record: flatten them") from None
    except (TypeError, ValueError) as exc:
        raise KgitError(f"{what} is not JSON-serialisable ({exc}): use numbers, strings, lists and dicts") from None
