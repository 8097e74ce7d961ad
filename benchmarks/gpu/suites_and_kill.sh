#!/usr/bin/env bash
# On the GPU machine (device tool): the correctness suites through `harness run` on every visible GPU,
# then `kill -9` of a `harness run` mid-run, and a check that nothing it started survives.
# Usage: bash benchmarks/gpu/suites_and_kill.sh OUTDIR
set -u
OUT=${1:?outdir}
export PYTHONUNBUFFERED=1
nvidia-smi -L
start=$(date +%s)
python3 -m harness.cli run --models all --suite slow,fa2,quantization --db "sqlite:///$OUT/results.db" --json \
  > "$OUT/suites.json" 2> "$OUT/suites.err"
rc=$?; echo "suites rc=$rc wall=$(python3 -c "import time;print(round(time.time()-$start,1))")s"
python3 - "$OUT/suites.json" <<'PY'
import collections, json, sys
d = json.load(open(sys.argv[1]))
print("status", d["status"], "stored", d["stored"], "counts", d["counts"])
per = collections.Counter((r["suite"], r["outcome"]) for r in d["results"])
print(sorted(per.items()))
PY
# kill -9 mid-run: the slow suite again, killed after 20 s
python3 -m harness.cli run --models all --suite slow,quantization --db "sqlite:///$OUT/kill.db" > "$OUT/kill.out" 2>&1 &
P=$!
sleep 20
echo "before kill: $(pgrep -fc 'pytest') pytest processes; GPU apps:"; nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader
kill -9 "$P"; sleep 6
echo "after kill: $(pgrep -fc 'pytest') pytest processes; GPU apps:"; nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader
# the next writer marks the killed run abandoned once its heartbeat is older than the limit
HARNESS_HEARTBEAT_LIMIT_S=1 python3 -m harness.cli run --models gpt2 --suite quantization --db "sqlite:///$OUT/kill.db" 2>&1 | grep -i abandon
python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select id,status from runs').fetchall())" "$OUT/kill.db"
cp .harness/bundles/*.jsonl "$OUT/" 2>/dev/null; ls "$OUT"
