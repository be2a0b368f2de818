"""Reading YAML and JSON that someone else wrote: safely and within bounds; and writing plain YAML.

Every YAML file kgit reads from the user or from git goes through here: ``--params``, ``--metrics``,
``.kgit/gates.yaml``, ``.kgit/signing.yaml``, ``.gto``, ``dvc.yaml``, ``dvc.lock`` and every ``.dvc``
file (in the work tree or at a commit). Safe loader only (no Python objects), a byte limit, and limits
on what the document holds once its aliases are expanded: the number of values and how deeply lists
and mappings nest, both counted on the parsed nodes without expanding anything, so a "billion
laughs" file is refused in a fraction of a second and a few MB, before anything walks it.

Every JSON document read from the repository, a remote or a tag goes through ``load_json`` (a byte
limit and a depth limit): ``metadata.json``, a release tag's summary and a stage tag's event line,
the ``.kgit/`` statements, DVC's ``.dir`` listings and lock files, the weights map of a SavedModel
release, and the per-clone state files (through kgit.store.clone_state).

``check`` applies the same limits to a text another parser reads next: ruamel, in
kgit.workflow.project, the one place kgit rewrites a YAML file keeping its comments (``dvc.yaml``).
``dump`` writes plain YAML (the ``.dvc`` files). No other module imports a YAML library.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kgit.core.errors import KgitError, one_line
from kgit.core.sizes import human_size

MAX_BYTES = 1_000_000
MAX_NODES = 100_000
MAX_DEPTH = 64  # lists and mappings inside each other; as deep as kgit's metadata may nest (metadata.MAX_DEPTH)


class LimitError(KgitError):
    """The document is larger, holds more values or nests deeper than allowed."""


class TooDeep(LimitError):
    """The document nests lists and mappings deeper than allowed."""


class SyntaxProblem(KgitError):
    """The text is not YAML (e.g. cut short while being written)."""


def read_file(
    path: Path,
    what: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
    fix: str | None = None,
) -> Any:
    """The document in the file at ``path`` (``what`` names it in errors, e.g. "--params params.yaml";
    ``fix``, what to do, ends them)."""
    return load(
        read_bytes(path, what, max_bytes=max_bytes, fix=fix),
        what,
        max_bytes=max_bytes,
        max_nodes=max_nodes,
        max_depth=max_depth,
        fix=fix,
    )


def read_bytes(path: Path, what: str, *, max_bytes: int = MAX_BYTES, fix: str | None = None) -> bytes:
    """At most ``max_bytes`` + 1 bytes of the file (so that one byte more is refused, never read whole)."""
    try:
        with open(path, "rb") as fh:
            # no bigger buffer than the file needs: a read of max_bytes would allocate that much each time
            return fh.read(min(os.fstat(fh.fileno()).st_size, max_bytes) + 1)
    except OSError as exc:
        raise KgitError(_said(f"cannot read {what}: {exc.strerror}", fix)) from None


def load(
    raw: bytes | str,
    what: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
    fix: str | None = None,
) -> Any:
    """The YAML/JSON document in ``raw``; LimitError or SyntaxProblem naming ``what`` if it is too big
    or malformed."""
    with _composed(raw, what, max_bytes, max_nodes, max_depth, fix) as (loader, node):
        if node is None:
            return None
        try:
            return loader.construct_document(node)
        except _yaml_error() as exc:
            raise SyntaxProblem(_said(f"{what} is not valid YAML/JSON ({one_line(exc, 150)})", fix)) from None
        except RecursionError:
            raise TooDeep(_said(f"{what} is nested too deeply to read", fix)) from None


def check(
    raw: bytes | str,
    what: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
    fix: str | None = None,
) -> None:
    """Refuse ``raw`` as ``load`` would, without building the document (another parser reads it next)."""
    with _composed(raw, what, max_bytes, max_nodes, max_depth, fix):
        pass


def load_json(
    raw: bytes | str,
    what: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int | None = MAX_DEPTH,
    fix: str | None = None,
) -> Any:
    """A JSON document (no aliases in JSON: a byte limit and a depth limit bound it). With
    ``max_depth`` None, nesting is not measured (for a large document whose reader checks its shape
    and never recurses into it); nesting past what the parser itself can take is still refused."""
    import json

    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise LimitError(_said(f"{what} is larger than {human_size(max_bytes)}", fix))
    try:
        value = json.loads(data)
    except RecursionError:
        raise TooDeep(_said(f"{what} is nested too deeply to read", fix)) from None
    except ValueError as exc:
        raise SyntaxProblem(_said(f"{what} is not valid JSON ({one_line(exc, 150)})", fix)) from None
    if max_depth is not None and nesting_depth(value, max_depth) > max_depth:
        raise TooDeep(_said(f"{what} is nested too deeply to read (more than {max_depth} levels)", fix))
    return value


def dump(data: Any, *, width: int = 120) -> str:
    """``data`` as block-style YAML, keys in the order given (safe dumper: plain values only)."""
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=width))


@contextlib.contextmanager
def _composed(
    raw: bytes | str, what: str, max_bytes: int, max_nodes: int, max_depth: int, fix: str | None
) -> Iterator[tuple[Any, Any]]:
    """Parse ``raw`` into YAML nodes (with libyaml when present, which itself refuses nesting past
    1,000) and check the limits; yields (loader, root node or None)."""
    import yaml

    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise LimitError(_said(f"{what} is larger than {human_size(max_bytes)}", fix))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(data)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            if "nesting depth" in str(exc):
                raise TooDeep(_said(f"{what} is nested too deeply to read", fix)) from None
            raise SyntaxProblem(_said(f"{what} is not valid YAML/JSON ({one_line(exc, 150)})", fix)) from None
        except RecursionError:
            raise TooDeep(_said(f"{what} is nested too deeply to read", fix)) from None
        if node is not None:
            size, depth = measure(node, max_nodes, max_depth)
            if size > max_nodes:
                raise LimitError(
                    _said(
                        f"{what} holds more than {max_nodes:,} values once its YAML aliases (*name) "
                        f"are expanded: write the values out, within {human_size(max_bytes)}",
                        fix,
                    )
                )
            if depth > max_depth:
                raise TooDeep(_said(f"{what} is nested too deeply to read (more than {max_depth} levels)", fix))
        yield loader, node
    finally:
        loader.dispose()


def measure(root: Any, max_nodes: int, max_depth: int) -> tuple[int, int]:
    """(values, depth) of a composed YAML document with every alias expanded, without expanding it:
    each node is measured once (aliases share the node they name). Values count every node; depth
    counts lists and mappings inside each other. A node that contains itself (``&a [*a]``) expands
    forever, and so measures past both limits; so does anything past a limit (counting stops there)."""
    over = (max_nodes + 1, max_depth + 1)
    measured: dict[int, tuple[int, int]] = {}
    visiting: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        value = node.value if isinstance(node.value, list) else None
        children = [c for item in value or () for c in (item if isinstance(item, tuple) else (item,))]
        if done:
            visiting.discard(key)
            size = min(max_nodes + 1, 1 + sum(measured[id(c)][0] for c in children))
            depth = min(
                max_depth + 1, (1 + max((measured[id(c)][1] for c in children), default=0)) if value is not None else 0
            )
            measured[key] = (size, depth)
            continue
        if key in measured:
            continue
        if key in visiting:
            return over
        visiting.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in measured)
    return measured[id(root)]


def expanded_size(root: Any, limit: int) -> int:
    """How many values a composed document holds with its aliases expanded (see ``measure``)."""
    return measure(root, limit, 1 << 30)[0]


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in ``value`` (at most ``limit`` + 1), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        stack.extend((c, depth + 1) for c in children)
    return deepest


def _yaml_error() -> type[Exception]:
    import yaml

    return yaml.YAMLError


def _said(text: str, fix: str | None) -> str:
    return f"{text}: {fix}" if fix else text
