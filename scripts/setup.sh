#!/usr/bin/env bash
# Create .venv (if needed) and install kgit into it. Safe to rerun.
#   bash scripts/setup.sh          what kgit itself needs (the demo uses this)
#   bash scripts/setup.sh --test   also the test tools, the model libraries the tests use, an
#                                  OpenSSH server for the SSH-remote tests, DVC's S3 plugin and
#                                  moto's S3 server for the S3-remote tests (the tests start it),
#                                  Chromium for the report tests, and MkDocs for the documentation
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}

# System packages: git always; an OpenSSH server and client and Chromium for the tests only.
missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
if [ "$mode" = "--test" ]; then
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the report tests open the site in it
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
target=.
check="import kgit, tensorflow, dvc, git, typer"
if [ "$mode" = "--test" ]; then
  target='.[test]'
  check="$check, keras_hub, pytest, xdist, hypothesis, importlinter, dvc_s3, moto.server, boto3, playwright, mkdocs, material, uv"
fi
# uv installs what pip would, from the same sources (scripts/uv_settings.py), in a fraction of the
# time (a fresh clone: ~10 s instead of ~75 s); pip does it if uv cannot.
quiet() { grep -v "^WARNING: Location" || true; }
installed=
if .venv/bin/python -m pip install -q uv 2>&1 | quiet && [ -x .venv/bin/uv ]; then
  if (eval "$(.venv/bin/python scripts/uv_settings.py)" && .venv/bin/uv pip install -q --python .venv/bin/python -P pip -P setuptools pip "setuptools>=77" -e "$target"); then
    installed=uv
  else
    echo "setup: uv could not install kgit: installing with pip" >&2
  fi
fi
if [ -z "$installed" ]; then
  .venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" 2>&1 | quiet
  .venv/bin/python -m pip install -q -e "$target" 2>&1 | quiet
fi
# An editable install skips pyproject's data-files: put the man page where `man` looks (so
# `git kgit --help` works), as a regular `pip install` does.
mkdir -p .venv/share/man/man1 && cp man/git-kgit.1 man/kgit.1 .venv/share/man/man1/
.venv/bin/python -c "$check" 2>/dev/null || { echo "setup: installing kgit failed" >&2; exit 1; }
