"""Reading YAML (and JSON, which is YAML) that someone else wrote: safely and within bounds.

Used for every YAML file kgit reads from the user or from git: ``--params``, ``--metrics``,
``.kgit/gates.yaml``. Safe loader only (no Python objects), a byte limit, and a limit on the values
the document holds once its aliases are expanded, counted without expanding them, so a
"billion laughs" file is refused in a fraction of a second and a few MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kgit.errors import KgitError, one_line

MAX_BYTES = 1_000_000
MAX_NODES = 100_000


def read_file(path: Path, what: str, *, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Any:
    """The document in the file at ``path`` (``what`` names it in errors, e.g. "--params params.yaml")."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise KgitError(f"cannot read {what}: {exc.strerror}") from None
    return load(raw, what, max_bytes=max_bytes, max_nodes=max_nodes)


def load(raw: bytes | str, what: str, *, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Any:
    """The YAML/JSON document in ``raw``; a KgitError naming ``what`` if it is too big or malformed."""
    import yaml

    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise KgitError(f"{what} is larger than {max_bytes / 1e6:g} MB")
    loader = yaml.SafeLoader(data)
    try:
        node = loader.get_single_node()
        if node is not None and expanded_size(node, max_nodes) > max_nodes:
            raise KgitError(f"{what} holds more than {max_nodes:,} values once its YAML aliases (*name) are "
                            f"expanded: write the values out, within {max_bytes / 1e6:g} MB")
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise KgitError(f"{what} is not valid YAML/JSON ({one_line(exc, 150)})") from None
    except RecursionError:
        raise KgitError(f"{what} is nested too deeply to read") from None
    finally:
        loader.dispose()


def expanded_size(root: Any, limit: int) -> int:
    """How many nodes a composed YAML document has with every alias expanded, without expanding it:
    each node's size is counted once (aliases share the node they name). A node that contains itself
    (``&a [*a]``) expands forever, and so counts as ``limit + 1``; so does anything past ``limit``."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        value = node.value if isinstance(node.value, list) else []
        children = [c for item in value for c in (item if isinstance(item, tuple) else (item,))]
        if done:
            visiting.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in visiting:
            return limit + 1
        visiting.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]
