"""The state every release must be in wherever git can reach it, checked one way for pre-commit,
pre-push, the server's pre-receive and ``kgit check``.

For every valid release R (its release commit C; per format, the ``.dvc`` file at path P whose blob
at C is B) and every tree a branch can hold (a branch tip, or the index about to be committed):

1. if the tree has P, it is exactly B: a released path never holds anything else;
2. if C is the tip or one of its ancestors, the tree has P: a branch that contains a release keeps it;
3. the tree has no file inside R's version folder (the release's data lives in DVC, not git).

Only the resulting trees count, never the commits that led to them: merges of any shape (``-s
ours``, octopus, a conflict resolved for the wrong side), renames and copies (no rename detection
anywhere), history rewrites. The cost is one ``git ls-tree`` of ``artifacts/`` per tip, plus one
``git cat-file --batch-check`` for the released blobs of every release.

A tip whose ``artifacts/`` tree equals the one it replaces, reached through commits none of which
changes ``artifacts/`` against any of its parents, is in the same state as the tip it replaces
(the rules held there): ``unchanged`` answers that from the new commits alone, without reading a tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from kgit.core import layout
from kgit.core.layout import ARTIFACTS_DIR
from kgit.registry.versions import is_lookalike, parse_compat, parse_event, parse_tag
from kgit.store.git_ops import Repo

if TYPE_CHECKING:
    from kgit.registry.catalog import Registry, Release

ZERO = "0" * 40  # git's id for "no object": a ref created or deleted
OWN_NAMESPACES = ("refs/heads/", "refs/tags/")
ALLOW_REF_KEY = "kgit.allowRef"  # a server's git config, multi-valued: globs of other refs it takes


@dataclass(frozen=True)
class ReleasedFile:
    """One format of one release, as git holds it."""

    path: str  # artifacts/NAME/FORMAT/VERSION.dvc
    blob: str  # the file's blob id at the release commit
    commit: str  # the release commit
    label: str  # NAME@VERSION (FORMAT), for messages

    @property
    def folder(self) -> str:
        return layout.tracked_path(self.path) + "/"


def released_files(repo: Repo, releases: Iterable[Release]) -> list[ReleasedFile]:
    """The released ``.dvc`` files of ``releases`` (registry.Release; the invalid ones are skipped:
    a forged tag freezes nothing), each with its blob at the release commit. git finds a path in a
    tree by reading its entries one by one (thousands, in a model's folder): each blob is looked up
    once per clone, in one git call, and kept in kgit's tag cache."""
    from kgit.registry.tagcache import TagCache

    specs = []
    for rel in releases:
        if not rel.valid:
            continue
        for fmt, info in rel.formats.items():
            path = layout.dvc_file(info["path"])
            specs.append((rel.commit, path, f"{rel.name}@{rel.version} ({fmt})"))
    if not specs:
        return []
    cache = TagCache(repo)
    blobs = {f"{c}:{p}": cache.blob(f"{c}:{p}") for c, p, _ in specs}
    missing = [spec for spec, blob in blobs.items() if blob is None]
    for spec, blob in repo.object_ids(missing).items():
        blobs[spec] = blob
        if blob is not None:
            cache.put_blob(spec, blob)
    cache.save()
    return [
        ReleasedFile(path, blob, commit, label)
        for commit, path, label in specs
        if (blob := blobs.get(f"{commit}:{path}")) is not None
    ]


def problems(repo: Repo, tree: str, heads: list[str], files: list[ReleasedFile], where: str) -> list[str]:
    """What in ``tree`` (a commit or tree id) breaks the rules for ``files``; ``heads`` are the
    commits the tree's commit has (or will have) in its history, for rule 2. ``where`` names the
    tree in the messages (``branch main``, ``the commit``)."""
    if not files:
        return []
    have = repo.ls_tree(tree, ARTIFACTS_DIR + "/")
    found = []
    absent = [f for f in files if f.path not in have]
    contained = repo.reachable_from(sorted({f.commit for f in absent}), heads) if absent else set()
    for f in files:
        blob = have.get(f.path)
        if blob is None:
            if f.commit in contained:
                found.append(f"{f.label}: {where} deletes {f.path} (deleted or renamed, while it contains the release)")
        elif blob != f.blob:
            found.append(f"{f.label}: {where} modifies {f.path} (blob {blob[:8]}, released {f.blob[:8]})")
    folders = {f.folder: f for f in files}
    for path in have:
        parts = path.split("/")
        folder = "/".join(parts[:4]) + "/" if len(parts) > 4 else None
        if folder in folders:
            found.append(
                f"{folders[folder].label}: {where} adds {path} to git inside the released folder "
                "(release data lives in DVC)"
            )
    return found


def unchanged(repo: Repo, old: str, new: str) -> bool:
    """Whether ``new`` holds the same ``artifacts/`` as ``old`` and every commit reachable from
    ``new`` but not ``old`` has the same ``artifacts/`` as each of its parents: then ``new`` is in
    the state ``old`` was in for every release, including those whose commits ``new`` brings."""
    ids = repo.object_ids([f"{old}:{ARTIFACTS_DIR}", f"{new}:{ARTIFACTS_DIR}"])
    if ids.get(f"{old}:{ARTIFACTS_DIR}") != ids.get(f"{new}:{ARTIFACTS_DIR}"):
        return False
    code, out, _ = repo.try_git("rev-list", "--parents", new, f"^{old}")
    if code != 0:
        return False
    pairs = []
    for line in out.splitlines():
        commit, *parents = line.split()
        if not parents:
            return False  # a root commit brought in: nothing to compare it with
        pairs += [(commit, parent) for parent in parents]
    if not pairs:
        return True
    trees = repo.object_ids([f"{c}:{ARTIFACTS_DIR}" for pair in pairs for c in pair])
    return all(trees.get(f"{c}:{ARTIFACTS_DIR}") == trees.get(f"{p}:{ARTIFACTS_DIR}") for c, p in pairs)


@dataclass(frozen=True)
class Tip:
    """A branch as a push leaves it: ``old`` is the tip it replaces (``None``: a new branch, or one
    whose old tip is not known here), ``new`` the tip it gets."""

    branch: str
    old: str | None
    new: str


def tip_problems(
    repo: Repo,
    tips: list[Tip],
    releases: Callable[[], Iterable[Release]],
    new_releases: Iterable[Release] = (),
    others: Mapping[str, str] | None = None,
) -> list[str]:
    """The rules for the branch tips a push sets. Each tip is checked against every release unless
    ``unchanged`` shows it is in its old tip's state (``releases`` is called only then: a plain push
    reads no tag). Releases the push brings (``new_releases``) are checked on every tip, including
    ``others`` (branch -> tip): the branches the push leaves as they are."""
    found: list[str] = []
    full = [t for t in tips if t.old is None or not unchanged(repo, t.old, t.new)]
    if full:
        files = released_files(repo, releases())
        for t in full:
            found += problems(repo, t.new, [t.new], files, f"branch {t.branch}")
    fresh = released_files(repo, new_releases)
    if fresh:
        checked = {t.new for t in full}
        rest = {t.new: t.branch for t in tips if t.new not in checked}
        for branch, tip in (others or {}).items():
            if tip not in checked:
                rest.setdefault(tip, branch)
        for tip, branch in rest.items():
            found += problems(repo, tip, [tip], fresh, f"branch {branch}")
    return list(dict.fromkeys(found))


# -- refs and tags ------------------------------------------------------------------------------
def is_kgit_tag(tag: str) -> bool:
    """A release tag (NAME@vX.Y.Z), a GTO event tag (stages, deprecations) or a compat record
    (NAME@vX.Y.Z#compat#KEY), in kgit's exact form."""
    return parse_tag(tag) is not None or parse_event(tag) is not None or parse_compat(tag) is not None


def is_protected_tag(ref: str) -> bool:
    """kgit's tags never change once shared."""
    return ref.startswith("refs/tags/") and is_kgit_tag(ref[len("refs/tags/") :])


def protected_tag_change(ref: str, old: str, new: str) -> str | None:
    """One line if updating ``ref`` from ``old`` to ``new`` moves or deletes a release/stage tag."""
    if old == ZERO or old == new or not is_protected_tag(ref):
        return None
    tag = ref[len("refs/tags/") :]
    kind = (
        "release"
        if parse_tag(tag) is not None
        else "compat record"
        if parse_compat(tag) is not None
        else "stage/deprecation"
    )
    if new == ZERO:
        return f"deleting the {kind} tag {tag} (it is shared: teammates and deployments resolve it)"
    return (
        f"moving the {kind} tag {tag} from {old[:8]} to {new[:8]} (a shared release is never replaced: "
        "release the new model as a new version)"
    )


def new_tag_problem(repo: Repo, tag: str, oid: str) -> str | None:
    """Why a tag arriving as ``tag`` (object ``oid``) must not be shared: a name that looks like a
    kgit tag without being one in kgit's exact form, or a tag object whose header git would not
    write. Judged the same by pre-push and the server."""
    if is_lookalike(tag):
        return (
            f"new tag {tag[:80]!r} looks like a kgit release or stage tag but is not in kgit's exact form "
            "(lowercase ASCII name, ASCII digits without leading zeros): kgit "
            "ignores it, other tools may not; delete it (git tag -d)"
        )
    if not is_kgit_tag(tag):
        return None
    if repo.try_git("cat-file", "-t", oid)[1].strip() != "tag":
        return None  # a lightweight tag: judged as a release or event by the caller
    problem = repo.tag_header_problem(oid, tag)
    return f"new tag {tag} is malformed: {problem}" if problem else None


def foreign_ref_problem(ref: str) -> str:
    what = {
        "refs/replace/": "a replace ref (it makes git show other content under an object's id)",
        "refs/notes/": "a notes ref",
    }.get(ref[: ref.find("/", 5) + 1], "outside refs/heads/ and refs/tags/")
    return (
        f"{ref} is {what}: this repository takes branches and tags only (a server admin can allow a "
        f"namespace with `git config --add {ALLOW_REF_KEY} 'refs/NAMESPACE/*'`)"
    )


class KnownReleases:
    """The releases, read from the tags on first use (a push of plain commits that touch no
    released file, the common case, reads no tag). ``extra``: releases not tagged here yet (a
    server's list of those the push brings, which grows as the push is checked)."""

    def __init__(self, repo: Repo, *, remember: bool = True, extra: list[Release] | None = None) -> None:
        self.repo = repo
        self.remember = remember
        self.extra = extra if extra is not None else []

    @cached_property
    def reg(self) -> Registry:
        from kgit.registry import catalog

        return catalog.read(self.repo, remember=self.remember)

    @cached_property
    def released(self) -> dict[str, Release]:
        return {r.tag: r for r in self.reg.releases}

    @cached_property
    def staged(self) -> dict[str, str]:
        # a pushed stage tag brings the version it points to (validated before it reaches production)
        return {e.tag: f"{e.name}@{e.version}" for e in self.reg.events if e.event == "promoted" and e.version}

    @cached_property
    def tag_of(self) -> dict[str, str]:
        return {f"{r.name}@{r.version}": r.tag for r in self.reg.releases}
