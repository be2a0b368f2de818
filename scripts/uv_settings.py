"""Print, as shell ``export`` lines, the uv settings that make ``uv pip install`` use the package
sources pip is configured with here (pip.conf files and PIP_* variables): index, extra indexes,
find-links, constraints, certificates. uv reads none of pip's configuration; without this the two
could install different versions. Variables already set for uv win.

    eval "$(.venv/bin/python scripts/uv_settings.py)"
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

# pip's option -> uv's variable (uv takes lists space-separated, as pip does)
UV_VARIABLE = {
    "index-url": "UV_INDEX_URL",
    "extra-index-url": "UV_EXTRA_INDEX_URL",
    "find-links": "UV_FIND_LINKS",
    "constraint": "UV_CONSTRAINT",
    "cert": "SSL_CERT_FILE",
}


def pip_settings() -> dict[str, str]:
    """What ``pip config list`` shows (files, then the environment: the last one of a name wins, as
    in pip), by option name."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found: dict[str, str] = {}
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        section, _, option = key.rpartition(".")
        if section in ("global", "install", ":env:"):
            found[option] = " ".join(shlex.split(value))
    return found


def main() -> int:
    settings = pip_settings()
    for option, variable in UV_VARIABLE.items():
        if option in settings and variable not in os.environ:
            print(f"export {variable}={shlex.quote(settings[option])}")
    if {"index-url", "extra-index-url", "find-links"} & settings.keys():
        # pip takes the best version from all its sources; uv, by default, the first source that has the package
        print("export UV_INDEX_STRATEGY=${UV_INDEX_STRATEGY:-unsafe-best-match}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
