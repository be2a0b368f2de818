"""The error family. Every expected failure is a KgitError whose message says what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KgitError(Exception):
    """Base of every error kgit reports to a user (exit code 1, one line, no traceback)."""


class KgitWarning(UserWarning):
    """Something a release went ahead with that its maker should know (Python's ``warnings``)."""


class NotAGitRepoError(KgitError):
    pass


class NotInitialisedError(KgitError):
    pass


class InvalidNameError(KgitError):
    pass


class InvalidVersionError(KgitError):
    pass


class VersionExistsError(KgitError):
    pass


class DirtyRepoError(KgitError):
    pass


class ModelSourceError(KgitError):
    """The model could not be obtained, saved or reloaded."""


class CustomObjectError(ModelSourceError):
    pass


class UnsafeModelError(ModelSourceError):
    pass


class ModelSignatureError(KgitError):
    """The model's inputs or outputs cannot be described, or reference data does not fit them."""


class SigningError(KgitError):
    """A release could not be signed, or its signature does not verify against the trusted keys."""


class ValidationError(KgitError):
    """A round-trip validation found a difference."""


class ReleaseNotFoundError(KgitError):
    pass


class InvalidReleaseError(ReleaseNotFoundError):
    """A release tag whose message, ``.dvc`` files or metadata contradict its name, or that changed
    since this clone first saw it."""


class ReleaseMismatchError(KgitError):
    """A release folder in the work tree differs from its release; ``check`` names what differs
    (files, metadata, signature...) and ``fmt`` the folder's format."""

    def __init__(self, message: str, check: str, fmt: str) -> None:
        super().__init__(message)
        self.check, self.fmt = check, fmt


class BusyError(KgitError):
    pass


class CommandError(KgitError):
    """An external command (git, dvc) failed; the message carries the command and its output."""

    def __init__(self, cmd: list[str], returncode: int, output: str) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.output = output
        tail = " ".join(output.strip().splitlines()[-3:]) if output.strip() else "no output"
        super().__init__(f"`{' '.join(cmd)}` failed (exit {returncode}): {tail}")


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line, at most about ``limit`` characters, cut at a word boundary with an
    ellipsis (a message is never cut mid-word)."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit + 1].rsplit(" ", 1)[0] if " " in flat[: limit + 1] else flat[:limit]
    return cut.rstrip(" ,;:") + " …"


def describe(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of a message: ``ValueError: what it said`` (see ``one_line``)."""
    return f"{type(exc).__name__}: {one_line(exc, limit)}"


def closest(word: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` closest to ``word`` (``difflib``), or None when none is close enough
    to be a likely typo: what every "did you mean" of kgit suggests."""
    matches = difflib.get_close_matches(word, sorted(set(known)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, known: Iterable[str], otherwise: str) -> str:
    """The end of a refusal of ``word``, which is none of ``known``: ``did you mean 'X'?`` when one
    is close (see ``closest``), else ``otherwise`` (what the valid ones are, or what to run)."""
    match = closest(word, known)
    return f"did you mean {match!r}?" if match is not None else otherwise
