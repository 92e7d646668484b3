#!/bin/bash
# One tiny round (`stop run --profile tiny`) on the code of REV (default 74f6d50, the model server
# before the batched engine) and on the working tree, one after the other, with no cached model
# replies (the response cache is moved aside and put back), then a summary of both runs' model
# calls in benchmarks/results/round.json. Needs `make setup` first; takes about 15 minutes.
# Usage: bash benchmarks/bench_round.sh [REV]
#        bash benchmarks/bench_round.sh --summarize BEFORE_RUN_DIR AFTER_RUN_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
summarize() {
  "$PY" - "$1" "$2" "$ROOT/benchmarks/results/round.json" <<'PYEOF'
import json, sys
out = {}
for name, run in (("before", sys.argv[1]), ("after", sys.argv[2])):
    calls, wall = [], None
    for line in open(f"{run}/events.jsonl"):
        e = json.loads(line)
        if e["type"] == "model_call":
            calls.append({"scope": e["scope"], "n": e["n"], "prompt_tokens": e["prompt_tokens"],
                          "completion_tokens": e["completion_tokens"],
                          "latency_s": e["latency_s"], "cached": e["cached"]})
        elif e["type"] == "round_end":
            wall = e["wall_s"]
    gen = sum(c["completion_tokens"] for c in calls)
    model_s = sum(c["latency_s"] for c in calls)
    out[name] = {"run": run, "round_wall_s": wall, "calls": len(calls), "generated_tokens": gen,
                 "model_s": round(model_s, 1), "tokens_per_s": round(gen / model_s, 2),
                 "cached_calls": sum(c["cached"] for c in calls), "model_calls": calls}
out["round_speedup"] = round(out["before"]["round_wall_s"] / out["after"]["round_wall_s"], 2)
json.dump(out, open(sys.argv[3], "w"), indent=2)
print({k: (v if not isinstance(v, dict) else {x: v[x] for x in ("round_wall_s", "calls",
       "generated_tokens", "tokens_per_s")}) for k, v in out.items()})
PYEOF
}
if [ "${1:-}" = "--summarize" ]; then summarize "$2" "$3"; exit; fi
REV=${1:-74f6d50}
C=${STOP_CACHE_DIR:-$ROOT/.cache}
WT=$(mktemp -d); OUT=$(mktemp -d)
git -C "$ROOT" worktree add -f -q "$WT/tree" "$REV"
[ -d "$C/lm-cache" ] && mv "$C/lm-cache" "$C/lm-cache.bench-round"
restore() {
  rm -rf "$C/lm-cache"; [ -d "$C/lm-cache.bench-round" ] && mv "$C/lm-cache.bench-round" "$C/lm-cache"
  git -C "$ROOT" worktree remove --force "$WT/tree" || true
}
trap restore EXIT
run() {  # $1 = name, $2 = source tree
  (cd "$2" && STOP_CACHE_DIR=$C STOP_RUNS_DIR=$OUT/$1 PYTHONPATH=$2 \
     "$PY" -c "from stop.cli import main; main()" sandbox build >/dev/null)
  echo "[bench] $1: tiny round from $2 (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  (cd "$2" && STOP_CACHE_DIR=$C STOP_RUNS_DIR=$OUT/$1 PYTHONPATH=$2 \
     "$PY" -c "from stop.cli import main; main()" run --profile tiny >&2)
  rm -rf "$C/lm-cache"
}
run before "$WT/tree"
run after "$ROOT"
summarize "$(ls -d "$OUT"/before/*/)" "$(ls -d "$OUT"/after/*/)"
