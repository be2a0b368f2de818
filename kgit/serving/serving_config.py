"""The files of a TensorFlow Serving layout (kgit.serving.layout): the integer version numbers, models.config
in TF Serving's text format, and kgit's manifest of what it laid out.

models.config is written as text here (no TensorFlow or tensorflow-serving-api import); the tests parse
it with tensorflow-serving-api's ``ModelServerConfig``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kgit.core.errors import InvalidVersionError, KgitError, describe
from kgit.registry.versions import Version, check_name

CONFIG_FILE = "models.config"
MANIFEST_FILE = "kgit-serving.json"
MANIFEST_SCHEMA = 1
MAX_MANIFEST_BYTES = 64 << 20  # about 100 bytes per file laid out: 600,000 files
PART_LIMIT = 1000  # minor and patch must stay below this for the serving number to be unique


def serving_version(version: str) -> int:
    """The integer folder TF Serving loads for a release version: MAJOR*1000000 + MINOR*1000 + PATCH
    (``v3`` and ``v3.0.0`` -> 3000000, ``v1.2.3`` -> 1002003). A function of the version alone, so
    stable per release, unique per model, and ordered like the versions (TF Serving serves the
    highest number when a request names no version or label)."""
    v = Version.parse(version)
    if v.minor >= PART_LIMIT or v.patch >= PART_LIMIT:
        raise InvalidVersionError(
            f"{version} has no TensorFlow Serving version number: kgit maps vMAJOR.MINOR.PATCH to "
            f"MAJOR*1000000 + MINOR*1000 + PATCH, so minor and patch must be below {PART_LIMIT}; serve another version"
        )
    return v.major * 1_000_000 + v.minor * 1_000 + v.patch


@dataclass
class ServedModel:
    name: str
    base_path: str
    versions: list[int]
    labels: dict[str, int]  # stage -> serving version


# -- models.config ------------------------------------------------------------------------------
def _quote(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII as is, every other byte as an octal escape."""
    out = []
    for b in text.encode("utf-8"):
        ch = chr(b)
        out.append("\\" + ch if ch in '"\\' else ch if 0x20 <= b < 0x7F else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def config_text(models: list[ServedModel]) -> str:
    """The ``ModelServerConfig`` TF Serving reads with ``--model_config_file`` (text format)."""
    lines = [
        "# Written by kgit serve-layout from the release tags: rerun it instead of editing this file.",
        "model_config_list {",
    ]
    for m in sorted(models, key=lambda m: m.name):
        lines += [
            "  config {",
            f"    name: {_quote(m.name)}",
            f"    base_path: {_quote(m.base_path)}",
            '    model_platform: "tensorflow"',
            "    model_version_policy {",
            "      specific {",
        ]
        lines += [f"        versions: {n}" for n in sorted(m.versions)]
        lines += ["      }", "    }"]
        for label, n in sorted(m.labels.items()):
            lines += ["    version_labels {", f"      key: {_quote(label)}", f"      value: {n}", "    }"]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- the manifest -------------------------------------------------------------------------------
@dataclass
class Entry:
    """One laid-out version, as the manifest records it."""

    version: str
    tag: str
    md5: str
    how: str
    files: dict[str, list[Any]]  # relative path -> [sha256, size]


@dataclass
class Manifest:
    models: dict[str, dict[int, Entry]]
    labels: dict[str, dict[str, int]]  # model -> label -> serving version, as models.config has them


def read_manifest(out: Path) -> Manifest | None:
    path = out / MANIFEST_FILE
    if not path.exists():
        return None
    bad = f"{path} is not a manifest kgit wrote"
    try:
        from kgit.core import bounded_yaml

        data = bounded_yaml.load_json(
            bounded_yaml.read_bytes(path, str(path), max_bytes=MAX_MANIFEST_BYTES),
            str(path),
            max_bytes=MAX_MANIFEST_BYTES,
            max_depth=16,
        )
        if data.get("schema_version") != MANIFEST_SCHEMA:
            raise KgitError(
                f"{bad} (schema_version {str(data.get('schema_version'))[:20]}): "
                f"give another --out, or remove the folder if it is yours"
            )
        models: dict[str, dict[int, Entry]] = {}
        labels: dict[str, dict[str, int]] = {}
        for name, model in data["models"].items():
            check_name(name)
            models[name] = {}
            labels[name] = {str(k): int(v) for k, v in model["labels"].items()}
            for number, e in model["versions"].items():
                files = {str(k): [str(v[0]), int(v[1])] for k, v in e["files"].items()}
                entry = Entry(str(e["version"]), str(e["tag"]), str(e["md5"]), str(e["how"]), files)
                if not number.isdigit() or int(number) != serving_version(entry.version):
                    raise ValueError(f"version folder {number} does not match {entry.version}")
                models[name][int(number)] = entry
        return Manifest(models, labels)
    except KgitError as exc:
        if str(exc).startswith(bad):
            raise
        raise KgitError(f"{bad} ({exc}): give another --out, or remove the folder if it is yours") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        raise KgitError(
            f"{bad} ({describe(exc, 80)}): give another --out, or remove the folder if it is yours"
        ) from None


def manifest_text(models: dict[str, dict[int, Entry]], meta: dict[str, ServedModel]) -> str:
    data = {
        "schema_version": MANIFEST_SCHEMA,
        "written_by": "kgit serve-layout",
        "version_rule": "MAJOR*1000000 + MINOR*1000 + PATCH",
        "models": {
            name: {
                "base_path": meta[name].base_path if name in meta else None,
                "labels": dict(sorted(meta[name].labels.items())) if name in meta else {},
                "versions": {str(n): asdict(e) for n, e in sorted(entries.items())},
            }
            for name, entries in sorted(models.items())
        },
    }
    return json.dumps(data, indent=2) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    from kgit.core.fsutil import write_atomic

    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return False
    write_atomic(path, text)
    return True
