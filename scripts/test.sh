#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite: lint, then pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check kgit tests benchmarks
.venv/bin/mypy kgit
set +e
.venv/bin/python -m pytest --durations=15 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$status"
