#!/usr/bin/env bash
# Set up (see setup.sh) and run kgit's main job on the built-in example. Optional arg: a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/kgit demo "$@"
