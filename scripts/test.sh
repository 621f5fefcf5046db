#!/usr/bin/env bash
# Run dfrepo's test suite on this machine: prepares everything it needs first
# (scripts/bootstrap.sh), then
#   1. the whole suite with the compiled core required (real SeaweedFS, moto, Azurite,
#      fake-gcs-server, nginx, the stand-in Dragonfly peer and a real tritonserver),
#   2. the engine, pull and CLI tests again on the pure-Python twin (DFREPO_NO_EXTENSIONS=1),
#   3. the benchmark smoke cases (small sizes; `pytest benchmarks/` runs the full set),
# after ruff (the whole tree) and mypy --strict (src/): configured in pyproject.toml.
# Every run requires every real server (DFREPO_REQUIRE_SERVERS=1): a missing emulator,
# tritonserver or Dragonfly binary fails its tests instead of skipping them, and a run that
# collects no tests (pytest exit status 5) fails too.
# Extra arguments go to the first pytest run (e.g. -k pull -x).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/bootstrap.sh
PY="$REPO/.venv/bin/python"
export PATH="$REPO/.venv/bin:$PATH"
export DFREPO_REQUIRE_SERVERS=1

echo "== lint and types =="
"$PY" -m ruff check src tests benchmarks peer scripts
"$PY" -m mypy

echo "== compiled core =="
DFREPO_REQUIRE_EXTENSION=1 "$PY" -m pytest tests -q -p no:cacheprovider "$@"

echo "== pure-Python twin =="
# A file missing here (renamed?) is a pytest usage error: red, not silently dropped.
DFREPO_NO_EXTENSIONS=1 "$PY" -m pytest tests/test_engine.py tests/test_repo_pull.py tests/test_cli.py \
    tests/test_presign_refresh.py tests/test_bearer_refresh.py tests/test_stored_encoding.py \
    tests/test_cache.py -q -p no:cacheprovider

echo "== benchmark smoke =="
DFREPO_BENCH_SCALE=smoke "$PY" -m pytest benchmarks -m smoke -q -p no:cacheprovider
