#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite: lint, the docs build, then pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check kgit tests benchmarks scripts
.venv/bin/ruff format --check kgit tests benchmarks scripts
.venv/bin/mypy kgit
.venv/bin/mypy tests
.venv/bin/lint-imports --no-cache  # the import contract in pyproject.toml
# the documentation site: offline, and --strict fails on a broken link or a page missing from the nav
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir site
# Python may cache compiled bytecode (an environment that forbids it, PYTHONDONTWRITEBYTECODE, would
# make every one of the suite's thousands of kgit, hook and worker processes compile kgit again, and
# every pytest worker rewrite every test module's asserts again)
unset PYTHONDONTWRITEBYTECODE
set +e
# one worker per CPU (pytest-xdist; KGIT_TEST_WORKERS=N to choose): the tests sharing an expensive
# fixture run on one worker, so it is built once, and every other test wherever a worker is free (the
# groups: tests/conftest.py), so the suite keeps every CPU busy to the end
.venv/bin/python -m pytest -n "${KGIT_TEST_WORKERS:-logical}" --dist loadgroup --durations=25 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$status"
