#!/usr/bin/env bash
# Set up what the tests need (no Qwen model: the smoke model is enough), then run the whole suite,
# Docker and model tests included. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --for test
VENV="${STOP_VENV:-$ROOT/.venv}"
export LITELLM_LOCAL_MODEL_COST_MAP=True
printf '\n==> tests: pytest -ra %s\n' "$*" >&2
# exec: pytest's exit status and its closing summary line are the last word.
exec "$VENV/bin/python" -m pytest -ra -p no:cacheprovider "$@"
