"""A release, as steps: check -> prepare the model -> lock -> version -> stage -> validate ->
place and track with DVC -> commit -> tag. Read top to bottom, this is the release path.

Nothing reaches the work tree before validation passed; from the moment it does, a journal makes
the rest all-or-nothing (see kgit.store.txn).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kgit.core import layout
from kgit.core import metrics as metrics_mod
from kgit.core.errors import (
    DirtyRepoError,
    KgitError,
    KgitWarning,
    ModelSignatureError,
    ValidationError,
    VersionExistsError,
    describe,
    did_you_mean,
)
from kgit.core.fsutil import FileDigest, FolderDigests, regular_files, write_atomic
from kgit.core.layout import (
    ARTIFACTS_DIR,
    DVC_YAML,
    METADATA_FILE,
    REFERENCE_INPUTS_FILE,
    REFERENCE_OUTPUTS_FILE,
    SIGNATURE_FILE,
)
from kgit.core.metadata import (
    FORMATS,
    DatasetInfo,
    GitInfo,
    Metadata,
    ReferenceInfo,
    Signature,
    SourceInfo,
    check_json_serialisable,
    hash_folder,
    sha256_file,
)
from kgit.core.packing import PieceStore
from kgit.core.sizes import human_size
from kgit.registry import catalog
from kgit.registry.versions import Version, check_name, next_version, tag_name
from kgit.store import clone_state, dvc_ops, failpoints, txn
from kgit.store.git_ops import Repo
from kgit.workflow import project, provenance

Progress = Callable[[str], None]
MAX_PARAMS_BYTES = 1_000_000  # hyperparameters as JSON; they travel in every .dvc file and metadata.json


@dataclass
class ReleaseRecord:
    """What a release produced."""

    name: str
    version: str
    tag: str
    commit: str
    formats: dict[str, dict[str, Any]]  # format -> {path, md5, size, nfiles}
    metadata: dict[str, Any]  # metadata of the first format (the others differ only in format/files)
    validation: list[dict[str, Any]] = field(default_factory=list)
    # what the releaser should know: the code was not all committed, the weights repeat a version's
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "tag": self.tag,
            "commit": self.commit,
            "formats": self.formats,
            "validation": self.validation,
            "metadata": self.metadata,
            "warnings": self.warnings,
        }


@dataclass
class _Request:
    name: str
    formats: list[str]
    version: str | None
    bump: str | None
    dataset_id: str | None
    dataset: str | None
    hyperparams: dict[str, Any]
    notes: str | None
    custom_objects: list[str]
    builder: str | None
    reference_input: Any
    atol: float
    allow_dirty: bool
    unsafe: bool
    sign_with: tuple[Path, str] | None = None  # (private key, fingerprint) per the signing policy
    dataset_hash: str | None = None  # the DVC hash of ``dataset``
    root: Path | None = None  # the repository's root: the project's modules import from it (kgit.models.usercode)
    # the version found free (here and on origin) before the model was loaded; under the lock, any
    # other version is checked again, origin included
    early: Version | None = None
    inference_only: bool = False  # release without the training state (recorded as resumable: false)
    pack: bool = True  # each large tensor of the weight files its own object (kgit.core.packing)
    metrics: dict[str, float] = field(default_factory=dict)  # given by the user (kgit.core.metrics)
    evaluate: str | None = None  # MODULE:FUNC measuring metrics on the model reloaded from the artifact
    caller: provenance.Caller | None = None  # the user's code calling from Python (None: the command line)


def release(
    model: Any,
    name: str,
    *,
    formats: Sequence[str] | str = ("savedmodel",),
    version: str | None = None,
    bump: str | None = None,
    dataset_id: str | None = None,
    dataset: str | os.PathLike[str] | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    notes: str | None = None,
    custom_objects: Sequence[Any] | Mapping[str, Any] | None = None,
    builder: Any = None,
    reference_inputs: Any = None,
    atol: float = 1e-6,
    allow_dirty: bool = False,
    unsafe: bool = False,
    inference_only: bool = False,
    metrics: Mapping[str, Any] | None = None,
    evaluate: Any = None,
    pack: bool = True,
    repo: str | os.PathLike[str] = ".",
    progress: Progress | None = None,
) -> ReleaseRecord:
    """Release ``model`` (a keras.Model, a .keras/.h5 path, a SavedModel folder or "module:function")
    as the next version of ``name``; returns what was released. See ``kgit release --help``.

    A compiled model's training state (optimizer and its step) is released with it and checked on
    reload, or the release is refused; ``inference_only=True`` releases the model without it.

    Each large tensor of the weight files is stored as its own DVC object (kgit.core.packing), so a
    version stores only the tensors that changed; the files stay in the folder, assembled, for Keras
    to load. ``pack=False`` stores the weight files whole, as DVC alone would.

    ``metrics`` (nested allowed: ``{"val": {"accuracy": 0.93}}`` is recorded as ``val.accuracy``)
    are recorded in the metadata and the tag; ``evaluate`` (a function or "module:function") is called
    with the model reloaded from the artifact in the fresh validation process, and the metrics it
    returns are recorded as measured.

    The metadata's ``source`` records whether the code that made the model was committed
    (kgit.workflow.provenance); a model whose weights and optimizer state equal an earlier version's
    is released with a warning (``ReleaseRecord.warnings``, and Python's ``warnings`` when called
    from Python)."""
    call = provenance.caller()
    say = progress or (lambda _msg: None)
    git = Repo(repo)
    project.require_initialised(git)
    project.check_dvc_files(git)  # DVC reads them all in `dvc add`: refuse what it would hang on, now
    req = _check_request(
        git,
        name=name,
        formats=formats,
        version=version,
        bump=bump,
        dataset_id=dataset_id,
        dataset=dataset,
        hyperparams=hyperparams,
        notes=notes,
        custom_objects=custom_objects,
        builder=builder,
        reference_inputs=reference_inputs,
        atol=atol,
        allow_dirty=allow_dirty,
        unsafe=unsafe,
        inference_only=inference_only,
        metrics=metrics,
        evaluate=evaluate,
    )
    req.pack = bool(pack)
    from kgit.models.source_kind import source_kind

    source_kind(model)  # a missing file: refused before TensorFlow
    req.caller = call
    from kgit.workflow.roundtrip import preload

    # The validation process imports TensorFlow while this one loads and writes the model.
    preload()
    say("loading the model")
    prepared = _prepare_model(model, req)

    with txn.writing(git, log=say):
        if not req.allow_dirty:
            _check_clean(git)  # again, under the lock: another release may have committed meanwhile
        ver = _choose_version(git, req)
        tag = tag_name(req.name, ver)
        label = str(ver)
        staging = txn.staging_dir(git) / f"{req.name}-{label}"
        hashing: dict[str, FolderDigests] = {}  # per format: sha256 and md5 of its files, in one read
        # git only: what the release records of its code, and whether it repeats a version
        source = provenance.source_info(git, model, req.builder, req.caller)
        warned = [
            w
            for w in (
                provenance.source_warning(source),
                provenance.duplicate_warning(req.name, provenance.same_weights(git, req.name, prepared.weights_sha256)),
            )
            if w
        ]
        for text in warned:
            say(f"warning: {text}")
        try:
            metas, stored = _stage(git, req, prepared, label, staging, hashing, say, source)
            failpoints.failpoint("staged")
            say(f"validating {req.name} {label} in a fresh process")
            validation = _validate(staging, req)
            digests = _seal(staging, req, metas, _measured(validation, req), hashing, say)
            failpoints.failpoint("validated")
            record = _publish(git, req, label, tag, staging, metas, validation, digests, say, stored)
        finally:
            for h in hashing.values():
                h.stop()
            shutil.rmtree(staging, ignore_errors=True)
    record.warnings = warned
    if req.caller is not None:  # from Python: say it where Python says such things
        import warnings

        for text in warned:
            warnings.warn(f"{record.tag}: {text}", KgitWarning, stacklevel=2)
    return record


# -- 1. check the request (cheap, no TensorFlow) ----------------------------------------------
def _check_request(
    git: Repo,
    *,
    name: str,
    formats: Sequence[str] | str,
    version: str | None,
    bump: str | None,
    dataset_id: str | None,
    dataset: Any,
    hyperparams: Mapping[str, Any] | None,
    notes: str | None,
    custom_objects: Any,
    builder: Any,
    reference_inputs: Any,
    atol: float,
    allow_dirty: bool,
    unsafe: bool,
    inference_only: bool,
    metrics: Mapping[str, Any] | None,
    evaluate: Any,
) -> _Request:
    check_name(name)
    fmts = [formats] if isinstance(formats, str) else list(formats) or ["savedmodel"]
    for f in fmts:
        if f not in FORMATS:
            raise KgitError(f"unknown format {f!r}: {did_you_mean(f, FORMATS, 'use one of ' + ', '.join(FORMATS))}")
    fmts = list(dict.fromkeys(fmts))
    if "weights" in fmts and builder is None:
        raise KgitError("--format weights needs --builder MODULE:FUNCTION that rebuilds the architecture")
    if version is not None or bump is not None:
        next_version([], version, bump)  # the syntax, before anything is read
    try:
        atol = float(atol)
    except (TypeError, ValueError):
        raise KgitError(f"invalid --atol {atol!r}: give a non-negative number") from None
    if not (atol >= 0 and atol != float("inf")):
        raise KgitError(f"invalid --atol {atol!r}: give a non-negative finite number")
    params = dict(hyperparams or {})
    check_json_serialisable(params, "hyperparameters")
    if len(json.dumps(params)) > MAX_PARAMS_BYTES:
        raise KgitError(
            f"hyperparameters are larger than {human_size(MAX_PARAMS_BYTES)} of JSON: record a file path "
            "or a dataset id instead"
        )
    dataset_rel = dataset_hash = None
    if dataset is not None:
        dataset_rel = os.path.relpath(Path(dataset).resolve(), git.root)
        if dataset_rel.startswith(".."):
            raise KgitError(f"dataset {dataset} is outside the repository")
        dataset_hash = dvc_ops.dataset_hash(git.root, dataset_rel)
    if not allow_dirty and not clone_state.writer_active(git) and not txn.Journal.path(git).exists():
        # early, before the model is loaded; while another release writes, its own files are uncommitted
        # for a moment, and a killed one left them until recovery: then only the check under the lock counts
        _check_clean(git)
    co_specs = _custom_object_specs(custom_objects)
    builder_spec = _callable_spec(builder, "builder") if builder is not None else None
    from kgit.trust import signing

    sign_with = signing.signing_key(git)
    req = _Request(
        name=name,
        formats=fmts,
        version=version,
        bump=bump,
        dataset_id=dataset_id,
        dataset=dataset_rel,
        hyperparams=params,
        notes=notes,
        custom_objects=co_specs,
        builder=builder_spec,
        reference_input=reference_inputs,
        atol=atol,
        allow_dirty=allow_dirty,
        unsafe=unsafe,
        sign_with=sign_with,
        inference_only=bool(inference_only),
        metrics=metrics_mod.flatten(metrics or {}, "metrics"),
        evaluate=_callable_spec(evaluate, "evaluate function") if evaluate is not None else None,
        dataset_hash=dataset_hash,
        root=git.root,
    )
    # the version is free here and on origin: checked now, before the model is loaded (again under the lock)
    req.early = _choose_version(git, req)
    return req


def check_options(
    repo: str | os.PathLike[str],
    name: str,
    *,
    formats: Sequence[str] | str = ("savedmodel",),
    bump: str | None = None,
    dataset_id: str | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    notes: str | None = None,
    custom_objects: Sequence[Any] | Mapping[str, Any] | None = None,
    builder: Any = None,
    allow_dirty: bool = False,
    unsafe: bool = False,
    inference_only: bool = False,
    evaluate: Any = None,
) -> dict[str, Any]:
    """What ``release`` refuses before it looks at a model, checked now for releases another process
    makes later (a training run checks at its start, not hours later). Returns these options as
    ``release`` takes them, JSON-safe: functions and classes as MODULE:NAME."""
    git = Repo(repo)
    project.require_initialised(git)
    project.check_dvc_files(git)
    req = _check_request(
        git,
        name=name,
        formats=formats,
        version=None,
        bump=bump,
        dataset_id=dataset_id,
        dataset=None,
        hyperparams=hyperparams,
        notes=notes,
        custom_objects=custom_objects,
        builder=builder,
        reference_inputs=None,
        atol=1e-6,
        allow_dirty=allow_dirty,
        unsafe=unsafe,
        inference_only=inference_only,
        metrics=None,
        evaluate=evaluate,
    )
    return {
        "formats": req.formats,
        "bump": req.bump,
        "dataset_id": req.dataset_id,
        "hyperparams": req.hyperparams,
        "notes": req.notes,
        "custom_objects": req.custom_objects,
        "builder": req.builder,
        "allow_dirty": req.allow_dirty,
        "unsafe": req.unsafe,
        "inference_only": req.inference_only,
        "evaluate": req.evaluate,
    }


def _check_clean(git: Repo) -> None:
    dirty = git.dirty_paths(exclude_prefix=ARTIFACTS_DIR)
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        raise DirtyRepoError(
            f"uncommitted changes in {shown}: commit them so the release records the code that made it, "
            "or pass --allow-dirty (recorded as dirty: true)"
        )


def _callable_spec(obj: Any, what: str) -> str:
    if isinstance(obj, str):
        if ":" not in obj:
            raise KgitError(f"{what} {obj!r} is not of the form MODULE:NAME")
        return obj
    from kgit.models.usercode import qualified_name

    return qualified_name(obj, what)


def _custom_object_specs(custom_objects: Any) -> list[str]:
    if not custom_objects:
        return []
    items = custom_objects.values() if isinstance(custom_objects, Mapping) else custom_objects
    return [_callable_spec(o, "custom object") for o in items]


# -- 2. the model, its signature and reference data (TensorFlow from here on) ------------------
@dataclass
class _Prepared:
    model: Any
    signature: Signature
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    generated: bool
    custom_modules: list[str]
    training: dict[str, Any]
    libraries: dict[str, str]
    resumable: bool  # the release holds the training state (and validation checks it comes back)
    keras_flavour: str  # "keras" (Keras 3) or "tf_keras" (Keras 2)
    weights_sha256: str | None  # the weights and optimizer variables (kgit.models.training_state.weights_digest)


def _prepare_model(source: Any, req: _Request) -> _Prepared:
    from kgit.models import (
        formats,
        model_source,
        runtime,
        tf_keras_flavour,
        training_state,
        usercode,
    )
    from kgit.models.reference import check_finite, check_inputs, generate_inputs, load_npz

    usercode.use_project(req.root)  # the project's modules import from any folder of it, as at validation
    formats.import_keras()
    custom = usercode.load_custom_objects(req.custom_objects)
    if req.builder:
        usercode.resolve_attr(req.builder, "builder")  # fail now if it cannot be imported
    if req.evaluate:
        usercode.resolve_attr(req.evaluate, "evaluate function")
    model = model_source.obtain_model(source, custom, req.unsafe, training_state=not req.inference_only)
    # a plain SavedModel (no Keras model inside) is only ever re-exported, never Keras-serialised
    formats.check_plain_savedmodel(model, req.formats, req.inference_only)
    flavour = tf_keras_flavour.FLAVOUR if tf_keras_flavour.is_model(model) else "keras"
    if flavour == tf_keras_flavour.FLAVOUR:
        tf_keras_flavour.check_formats(req.formats)
    modules = (
        [] if formats.is_plain_savedmodel(model) else model_source.inspect_custom_objects(model, custom, req.unsafe)
    )

    given = req.reference_input
    arrays = None
    if given is not None:
        arrays = load_npz(Path(given)) if isinstance(given, (str, os.PathLike)) else _as_arrays(given)
    vocabulary = model_source.string_vocabulary(model)
    sig = model_source.model_signature(model)
    if sig is None:  # a subclassed model: from the user's inputs, else from the shapes it was built with
        sig = (
            model_source.infer_signature(model, arrays)
            if arrays is not None
            else model_source.built_signature(model, req.name, vocabulary)
        )
    inputs = check_inputs(arrays, sig) if arrays is not None else generate_inputs(sig, req.name, vocabulary)
    try:
        outputs = formats.run_model(model, inputs, sig)
    except Exception as exc:
        raise ModelSignatureError(f"the model failed on the reference inputs: {describe(exc)}") from None
    missing = [s.name for s in sig.outputs if s.name not in outputs]
    if missing:
        raise ModelSignatureError(f"the model did not return outputs {missing}")
    check_finite(outputs)
    training = model_source.training_config(model)
    # A compiled model's optimizer state is released with it (validation checks it comes back) unless
    # the user asked for an inference-only release; an uncompiled model has none to lose.
    resumable = bool(training.get("compiled")) and not req.inference_only
    libraries = runtime.library_versions()
    if flavour == tf_keras_flavour.FLAVOUR:
        libraries["tf_keras"] = tf_keras_flavour.version() or "unknown"
    return _Prepared(
        model=model,
        signature=sig,
        inputs=inputs,
        outputs=outputs,
        generated=arrays is None,
        custom_modules=modules,
        training=training,
        libraries=libraries,
        resumable=resumable,
        keras_flavour=flavour,
        weights_sha256=training_state.weights_digest(model),
    )


def _as_arrays(value: Any) -> dict[str, Any]:
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): np.asarray(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (
            {f"arr_{i}": np.asarray(v) for i, v in enumerate(value)}
            if len(value) > 1
            else {"arr_0": np.asarray(value[0])}
        )
    return {"arr_0": np.asarray(value)}


def _choose_version(git: Repo, req: _Request) -> Version:
    existing = catalog.existing_versions(git, req.name)
    ver = next_version(existing, req.version, req.bump)
    label = str(ver)
    tag = tag_name(req.name, ver)
    if ver in existing or git.tag_exists(tag):
        raise VersionExistsError(
            f"{req.name} {label} is already released: released versions are never overwritten; "
            "pick another --version or use --bump"
        )
    for fmt in req.formats:
        folder = git.root / layout.release_dir(req.name, fmt, label)
        if folder.exists() or folder.with_name(layout.dvc_file(label)).exists():
            raise VersionExistsError(
                f"{folder.relative_to(git.root)} already exists: released versions are never overwritten"
            )
    if req.early == ver:
        return ver  # origin was asked before the model was loaded
    if git.remote_has_tag("origin", tag):
        raise VersionExistsError(
            f"tag {tag} already exists on origin: run `git fetch --tags` and pick the next version"
        )
    return ver


# -- 4. stage: write each format into a private folder ------------------------------------------
def _stage(
    git: Repo,
    req: _Request,
    prep: _Prepared,
    label: str,
    staging: Path,
    hashing: dict[str, FolderDigests],
    say: Progress,
    source: SourceInfo,
) -> tuple[dict[str, Metadata], PieceStore | None]:
    """Write each format's folder and start hashing its files (``hashing``), which goes on while the
    release is validated; the metadata written here gets its ``files`` in ``_seal``. Returns the
    metadata, and where its tensor objects were linked from (None: nothing is linked)."""
    from kgit.models import formats, packing
    from kgit.models.reference import save_npz

    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dataset = DatasetInfo(req.dataset_id, req.dataset, req.dataset_hash)
    gitinfo = GitInfo(git.head(), git.branch(), bool(git.dirty_paths(exclude_prefix=ARTIFACTS_DIR)))
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    metas = {}
    # a tensor the DVC cache holds already (when tensor objects are linked to it), or that another
    # format of this release cut, is linked, not written again
    cache = dvc_ops.piece_store(git.root) if req.pack else None
    stored = PieceStore(cache, staging / ".pieces") if cache is not None else None
    for fmt in req.formats:
        say(f"saving {req.name} {label} as {fmt}")
        folder = staging / fmt
        folder.mkdir()
        formats.save(prep.model, fmt, folder, inference_only=req.inference_only)
        save_npz(folder / REFERENCE_INPUTS_FILE, prep.inputs)
        save_npz(folder / REFERENCE_OUTPUTS_FILE, prep.outputs)
        # Packing (each large tensor its own object too: what DVC shares across versions) then
        # hashing, in a thread while the folder is validated: packing only adds files cut from the
        # saved ones, which it never changes, and its sha256s are not computed twice.
        hashing[fmt] = FolderDigests(
            folder,
            exclude=(METADATA_FILE, SIGNATURE_FILE),
            first=functools.partial(packing.pack, folder, stored=stored) if req.pack else None,
        )
        meta = Metadata(
            name=req.name,
            version=label,
            format=fmt,
            formats=list(req.formats),
            created_at=created,
            git=gitinfo,
            dataset=dataset,
            hyperparameters=req.hyperparams,
            training=prep.training,
            libraries=prep.libraries,
            signature=prep.signature,
            reference=ReferenceInfo(
                REFERENCE_INPUTS_FILE,
                sha256_file(folder / REFERENCE_INPUTS_FILE),
                REFERENCE_OUTPUTS_FILE,
                sha256_file(folder / REFERENCE_OUTPUTS_FILE),
                req.atol,
                prep.generated,
            ),
            files={},
            custom_objects=req.custom_objects,
            custom_modules=prep.custom_modules,
            builder=req.builder,
            unsafe=req.unsafe,
            notes=req.notes,
            signed_by=req.sign_with[1] if req.sign_with else None,
            resumable=prep.resumable,
            keras_flavour=prep.keras_flavour,
            metrics=dict(req.metrics),
            evaluate=req.evaluate,
            source=source,
            weights_sha256=prep.weights_sha256,
        )
        (folder / METADATA_FILE).write_text(meta.to_json(), encoding="utf-8")
        metas[fmt] = meta
    return metas, stored


# -- 5. validate: reload in a fresh process ------------------------------------------------------
def _validate(staging: Path, req: _Request) -> list[Any]:
    from kgit.workflow.roundtrip import roundtrip

    first = staging / req.formats[0]
    folders = [staging / fmt for fmt in req.formats]
    # --unsafe is the releaser's own opt-in, on the releaser's machine: the round trip may run the model's code
    results = roundtrip(
        folders,
        evaluate=(first, req.evaluate) if req.evaluate else None,
        unsafe=folders if req.unsafe else (),
        project=req.root,
    )
    failed = [r for r in results if not r.ok]
    if failed:
        r = failed[0]
        if r.check == "evaluate":
            raise ValidationError(
                f"--evaluate {req.evaluate} on the {r.format} artifact reloaded in a fresh process: "
                f"{r.reason()}; nothing was released"
            )
        fix = (
            (
                "; kgit cannot bring this model's training state back from the saved file: pass --inference-only "
                "to release it without (recorded as resumable: false)"
            )
            if r.check == "training"
            else ""
        )
        raise ValidationError(
            f"round-trip validation of the {r.format} artifact failed: {r.reason()}{fix}; nothing was released"
        )
    return results


def _measured(results: list[Any], req: _Request) -> dict[str, float]:
    """The metrics the --evaluate function returned (checked again here: the worker is another process)."""
    if not req.evaluate:
        return {}
    values = metrics_mod.flatten(results[0].metrics or {}, f"what --evaluate {req.evaluate} returned")
    both = sorted(set(values) & set(req.metrics))
    if both:
        raise KgitError(
            f"metric {both[0]} is both given and measured by --evaluate {req.evaluate}: "
            "give it one way (the measured value is the one taken from the artifact); nothing was released"
        )
    metrics_mod.combine(req.metrics, values)
    return values


def _seal(
    staging: Path,
    req: _Request,
    metas: dict[str, Metadata],
    measured: dict[str, float],
    hashing: dict[str, FolderDigests],
    say: Progress,
) -> dict[str, dict[str, FileDigest]]:
    """Record each file's sha256 and the measured metrics in each format's metadata, then sign each
    folder (the signature covers metadata.json, so this comes last). Returns the digests per format."""
    digests = {}
    for fmt, meta in metas.items():
        folder = staging / fmt
        digests[fmt] = found = hashing[fmt].result()
        _check_unchanged(folder, found)
        meta.files = {rel: d.sha256 for rel, d in found.items()}
        if measured:
            meta.metrics = {**meta.metrics, **measured}
            meta.measured = list(measured)
        (folder / METADATA_FILE).write_text(meta.to_json(), encoding="utf-8")
        if req.sign_with:
            from kgit.trust import signing

            say(f"signing {req.name} {meta.version} ({fmt}) with key {req.sign_with[1][:16]}")
            signing.sign(folder, req.sign_with[0])
    return digests


def _check_unchanged(folder: Path, digests: dict[str, FileDigest]) -> None:
    """The folder holds exactly the files that were hashed, each still as it was then (hashing
    overlapped validation: nothing may have been added or rewritten meanwhile)."""
    now = regular_files(folder, exclude=(METADATA_FILE, SIGNATURE_FILE))
    changed = [rel for rel in now if rel not in digests or not digests[rel].describes(os.stat(folder / rel))]
    changed += [rel for rel in digests if rel not in now]
    if changed:
        raise KgitError(
            f"{folder / changed[0]} changed after it was written: nothing may write into a release "
            "being made; run the release again"
        )


# -- 6. publish: place, track, describe, commit, tag (journaled) -------------------------------
def _publish(
    git: Repo,
    req: _Request,
    label: str,
    tag: str,
    staging: Path,
    metas: dict[str, Metadata],
    validation: list[Any],
    digests: dict[str, dict[str, FileDigest]],
    say: Progress,
    stored: PieceStore | None,
) -> ReleaseRecord:
    model_dir = Path(layout.model_dir(req.name))
    folders = {fmt: model_dir / fmt / label for fmt in req.formats}
    journal = _open_journal(git, tag, staging, metas, folders)
    try:
        _place(git.root, staging, folders)
        failpoints.failpoint("placed")
        _ignore_assembled(git, folders, journal)
        say(f"tracking {req.name} {label} with DVC")
        shared = _track(git, folders, digests, journal, stored.from_cache if stored else set())
        failpoints.failpoint("tracked")
        hashes = _describe(git, req, label, folders, metas, journal, shared)
        failpoints.failpoint("described")  # dvc.yaml written, nothing committed
        say(f"committing and tagging {tag}")
        commit = _commit_and_tag(git, req, label, tag, journal)
        journal.clear(git)
        from kgit.workflow.validating import remember_release

        remember_release(git, tag, hashes, validation)
    except BaseException:
        # Error, Ctrl-C or SIGTERM: finish if committed, otherwise remove every trace.
        txn.recover(git, log=say, own=True)
        raise
    return ReleaseRecord(
        req.name, label, tag, commit, hashes, metas[req.formats[0]].to_dict(), [r.to_dict() for r in validation]
    )


def _open_journal(
    git: Repo, tag: str, staging: Path, metas: dict[str, Metadata], folders: dict[str, Path]
) -> txn.Journal:
    """Record, before anything changes, what the release will create and what it may overwrite."""
    root = git.root
    journal = txn.Journal(tag=tag, head_before=git.head(), tag_message="", root=str(root))
    for fmt, rel in folders.items():
        journal.created += [rel.as_posix(), layout.dvc_file(rel.as_posix())]
        journal.folders[rel.as_posix()] = hash_folder(staging / fmt, exclude=(), known=metas[fmt].files)
        ignore = (rel.parent / ".gitignore").as_posix()
        journal.backups[ignore] = txn.read_backup(root / ignore)
        if packed_files(staging / fmt):
            dvcignore = layout.dvcignore_file(rel.as_posix())
            journal.backups[dvcignore] = txn.read_backup(root / dvcignore)
    journal.backups[DVC_YAML] = txn.read_backup(root / DVC_YAML)
    journal.save(git)
    return journal


def _place(root: Path, staging: Path, folders: dict[str, Path]) -> None:
    for fmt, rel in folders.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / fmt, root / rel)


def packed_files(folder: Path) -> list[str]:
    from kgit.core import packing

    return packing.assembled_files(folder)


def _ignore_assembled(git: Repo, folders: dict[str, Path], journal: txn.Journal) -> None:
    """The files a packed release assembles from its tensor objects (kgit.core.packing) stay in its
    folder for Keras to load, but DVC must not store them again: one ``.dvcignore`` line each, beside
    DVC's ``.gitignore``, committed with the release."""
    root = git.root
    for rel in folders.values():
        assembled = packed_files(root / rel)
        if not assembled:
            continue
        path = layout.dvcignore_file(rel.as_posix())
        before = (root / path).read_text(encoding="utf-8") if (root / path).exists() else ""
        lines = [f"/{rel.name}/{a}" for a in assembled]
        text = before + ("" if not before or before.endswith("\n") else "\n") + "".join(f"{line}\n" for line in lines)
        journal.expect(path, text.encode("utf-8"))
        journal.save(git)
        write_atomic(root / path, text)
        journal.note_written(root, [path])
    journal.save(git)


def _dvc_files(folders: dict[str, Path]) -> list[str]:
    return [layout.dvc_file(rel.as_posix()) for rel in folders.values()]


def _track(
    git: Repo,
    folders: dict[str, Path],
    digests: dict[str, dict[str, FileDigest]],
    journal: txn.Journal,
    from_cache: set[str],
) -> dict[str, int]:
    """``dvc add`` the placed folders; returns, per format, the bytes of its files the DVC cache
    already held (unchanged files an earlier version stored: shared, not new). ``from_cache``: md5s
    of tensor objects linked to an object the cache held, vouched for before DVC takes them."""
    root = git.root
    # DVC reuses the md5s computed with kgit's sha256s (same read) for files still exactly as hashed
    known = {root / rel / name: d for fmt, rel in folders.items() for name, d in digests[fmt].items() if d.md5}
    journal.dvc_writing = [*_dvc_files(folders), *(p for p in journal.backups if p != DVC_YAML)]
    journal.save(git)
    # a packed folder's tensor objects are linked to the DVC cache, not copied (dvc_ops.piece_store)
    from kgit.core.packing import TENSORS_DIR

    pieces = [
        root / rel / name for fmt, rel in folders.items() for name in digests[fmt] if name.startswith(f"{TENSORS_DIR}/")
    ]
    stored = dvc_ops.add(root, [root / rel for rel in folders.values()], known=known, pieces=pieces, vouch=from_cache)
    journal.note_written(root, journal.dvc_writing)
    journal.dvc_writing = []
    journal.save(git)
    return {fmt: sum(d.size for d in digests[fmt].values() if d.md5 in stored) for fmt in folders}


def _describe(
    git: Repo,
    req: _Request,
    label: str,
    folders: dict[str, Path],
    metas: dict[str, Metadata],
    journal: txn.Journal,
    shared: dict[str, int],
) -> dict[str, dict[str, Any]]:
    """kgit's metadata into each .dvc file, the artifact into dvc.yaml, the tag message into the
    journal; returns each format's path, DVC hash, size and the bytes it added (``new_bytes``: not
    already in the DVC cache, per ``shared``)."""
    root = git.root
    hashes = {}
    for fmt, rel in folders.items():
        dvc_rel = layout.dvc_file(rel.as_posix())
        dvc_file = root / dvc_rel
        text = dvc_ops.with_meta(dvc_file, metas[fmt].to_dict(), f"kgit release {req.name} {label} ({fmt})")
        # recorded before it is written: killed in between, recovery knows this content as the release's
        journal.expect(dvc_rel, text.encode("utf-8"))
        journal.save(git)
        write_atomic(dvc_file, text)
        failpoints.failpoint("meta-written")  # one .dvc file has kgit's metadata, the next may not
        h = dvc_ops.out_hash(dvc_ops.read_dvc_path(dvc_file, str(dvc_file)))
        hashes[fmt] = {"path": rel.as_posix(), **h, "resumable": metas[fmt].resumable}
        if isinstance(h.get("size"), int):
            hashes[fmt]["new_bytes"] = max(0, h["size"] - shared.get(fmt, 0))
    first = req.formats[0]
    data = project.with_artifact(
        project.read_dvc_yaml(root),
        req.name,
        folders[first].as_posix(),
        f"{req.name}: Keras model released with kgit",
        {"version": label, "formats": list(req.formats)},
    )
    dvc_yaml = project.dump_dvc_yaml(data)
    journal.expect(DVC_YAML, dvc_yaml.encode("utf-8"))
    journal.save(git)
    write_atomic(root / DVC_YAML, dvc_yaml)
    journal.note_written(root, [DVC_YAML])
    meta0 = metas[first]
    journal.tag_message = catalog.tag_message(
        req.name,
        label,
        {
            "formats": hashes,
            "created_at": meta0.created_at,
            "dataset_id": req.dataset_id,
            "source_commit": meta0.git.commit,
            "dirty": meta0.git.dirty,
            "kgit": meta0.libraries.get("kgit"),
            **({"source": catalog.source_summary(meta0.source)} if meta0.source is not None else {}),
            **({"metrics": meta0.metrics, "measured": meta0.measured} if meta0.metrics else {}),
        },
    )
    journal.save(git)
    return hashes


def _commit_and_tag(git: Repo, req: _Request, label: str, tag: str, journal: txn.Journal) -> str:
    root = git.root
    paths = [p for p in [*journal.created, *journal.backups] if (root / p).exists() and not (root / p).is_dir()]
    git.add(paths)
    message = f"Release {req.name} {label}\n\n" + (f"{req.notes}\n\n" if req.notes else "") + f"{txn.TRAILER}: {tag}\n"
    commit = git.commit_paths(message, paths)
    failpoints.failpoint("committed")
    journal.commit = commit
    journal.save(git)
    git.create_tag(tag, commit, journal.tag_message)
    failpoints.failpoint("tagged")
    return commit
