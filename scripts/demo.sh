#!/usr/bin/env bash
# The main job on a fresh machine: install what is needed, then a real Triton loads a model
# from a local S3 store through dfrepo and the real Dragonfly (scheduler + seed + peers; built
# once per machine by bootstrap, ~25 min the first time). Arguments go to demo.py (--standin:
# the stand-in peers instead of the real Dragonfly).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/bootstrap.sh"
export PATH="$REPO/.venv/bin:$PATH"
exec "$REPO/.venv/bin/python" "$REPO/scripts/demo.py" "$@"
