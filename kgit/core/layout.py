"""Where releases live in a repository and what their files are called: the one module that spells
these paths and names. Paths are POSIX strings relative to the repository's root.

::

    artifacts/                                   every release (ARTIFACTS_DIR)
      <model>/                                   model_dir(name)
        <format>/                                one folder per format (kgit.core.metadata.FORMATS)
          <version>/                             release_dir(name, fmt, version): DVC-tracked data
            metadata.json                        the release record (kgit.core.metadata)
            reference_inputs.npz                 the inputs validation replays
            reference_outputs.npz                the outputs recorded for them
            kgit.sig                             the signature over the rest (kgit.trust.signing)
          <version>.dvc                          dvc_file(folder): the DVC pointer, committed to git
    dvc.yaml                                     DVC's pipeline file: kgit's validation stage
                                                 (STAGE_NAME) and, in its ``artifacts:`` section,
                                                 one entry per model
    dvc.lock                                     what ``dvc repro`` recorded for the stages
    .dvc/                                        DVC's own folder (DVC_DIR): config, cache, tmp
"""

from __future__ import annotations

ARTIFACTS_DIR = "artifacts"
METADATA_FILE = "metadata.json"
REFERENCE_INPUTS_FILE = "reference_inputs.npz"
REFERENCE_OUTPUTS_FILE = "reference_outputs.npz"
SIGNATURE_FILE = "kgit.sig"  # written after the metadata, over every other file (kgit.trust.signing)
DVC_SUFFIX = ".dvc"  # a DVC pointer file: the tracked path with this suffix
DVC_DIR = ".dvc"  # DVC's own folder: its config, cache and temporary files
DVC_YAML = "dvc.yaml"
DVC_LOCK = "dvc.lock"
DVC_YAML_ARTIFACTS = "artifacts"  # dvc.yaml's section naming each model's current release
STAGE_NAME = "kgit-validate"  # kgit's validation stage in dvc.yaml


def model_dir(name: str) -> str:
    """Every release of model ``name``: ``artifacts/<name>``."""
    return f"{ARTIFACTS_DIR}/{name}"


def release_dir(name: str, fmt: str, version: str) -> str:
    """One release's folder of one format: ``artifacts/<name>/<format>/<version>``."""
    return f"{ARTIFACTS_DIR}/{name}/{fmt}/{version}"


def dvc_file(path: str) -> str:
    """The DVC pointer file of the tracked ``path`` (a release folder, a dataset): ``<path>.dvc``."""
    return path + DVC_SUFFIX


def dvcignore_file(release_folder: str) -> str:
    """The ``.dvcignore`` beside a version folder (``artifacts/NAME/FORMAT/.dvcignore``): the files a
    packed release assembles (kgit.core.packing), which DVC must not store again."""
    return release_folder.rsplit("/", 1)[0] + "/.dvcignore"


def tracked_path(dvc_path: str) -> str:
    """The path a DVC pointer file ``<path>.dvc`` tracks (``dvc_path`` less its suffix)."""
    return dvc_path[: -len(DVC_SUFFIX)] if dvc_path.endswith(DVC_SUFFIX) else dvc_path


def is_dvc_file(name: str) -> bool:
    return name.endswith(DVC_SUFFIX)
