#!/usr/bin/env bash
# The full test suite, exactly as CI runs it: install, bring up PostgreSQL and Redis, lint, type-check, test.
# Extra arguments go to pytest (e.g. scripts/test.sh src/conveyor/conformance -k lanes).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v -i warning || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -i warning || true
.venv/bin/python -c 'import conveyor, psycopg, redis, fastapi, pytest' \
  || { echo "test: installing Conveyor and its test dependencies failed" >&2; exit 1; }

bash scripts/services.sh
if [ ! -x /usr/bin/chromium ]; then  # the admin UI is tested in a real browser
  echo "test: installing Chromium for the UI tests"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null \
    || { echo "test: could not install Chromium (apt-get install chromium)" >&2; exit 1; }
fi

echo "== admin UI (ui/): the committed build in src/conveyor/ui/static matches the sources; axe-core for the tests"
command -v npm >/dev/null || { echo "test: Node.js and npm are needed for the UI build check and axe-core" >&2; exit 1; }
(cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run --silent check)

echo "== ruff"; .venv/bin/ruff check src tests examples scripts; .venv/bin/ruff format --check src tests examples scripts
echo "== mypy --strict"; .venv/bin/mypy
echo "== import-linter (the layer contract: pyproject.toml [tool.importlinter])"; .venv/bin/lint-imports --no-cache
echo "== pytest (stores: ${CONVEYOR_TEST_STORES:-memory,sqlite,postgresql,redis})"
exec .venv/bin/pytest -n "${PYTEST_WORKERS:-4}" -q -p no:cacheprovider "$@"
