#!/usr/bin/env bash
# Run dfrepo's test suite on this machine: prepares everything it needs first
# (scripts/bootstrap.sh), then
#   1. the whole suite with the compiled core required (real SeaweedFS, moto, Azurite,
#      fake-gcs-server, nginx, the stand-in Dragonfly peer and a real tritonserver),
#   2. the engine, pull and CLI tests again on the pure-Python twin (DFREPO_NO_EXTENSIONS=1),
#   3. the benchmark smoke cases (small sizes; `pytest benchmarks/` runs the full set).
# Extra arguments go to the first pytest run (e.g. -k pull -x).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/bootstrap.sh
PY="$REPO/.venv/bin/python"
export PATH="$REPO/.venv/bin:$PATH"

echo "== compiled core =="
DFREPO_REQUIRE_EXTENSION=1 "$PY" -m pytest tests -q -p no:cacheprovider "$@"

echo "== pure-Python twin =="
twin_tests=()
for t in tests/test_engine.py tests/test_repo_pull.py tests/test_cli.py tests/test_cache.py; do
    [[ -f "$t" ]] && twin_tests+=("$t")
done
DFREPO_NO_EXTENSIONS=1 "$PY" -m pytest "${twin_tests[@]}" -q -p no:cacheprovider

if [[ -d benchmarks ]] && ls benchmarks/test_*.py >/dev/null 2>&1; then
    echo "== benchmark smoke =="
    DFREPO_BENCH_SCALE=smoke "$PY" -m pytest benchmarks -m smoke -q -p no:cacheprovider || [[ $? == 5 ]]
fi
