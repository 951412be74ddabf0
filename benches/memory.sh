#!/usr/bin/env bash
# Memory over a long run: trains a preset (PRESET, default small) for STEPS steps (default 5000)
# with the usual evaluation, checkpoints and samples, then prints RSS and live heap bytes a tenth
# of the way in (step 500 of 5000) and at the last step, and the peaks. Target: RSS growth under
# 1% from that step to the end.
#   [PRESET=P] benches/memory.sh [STEPS] [extra train flags...]
# GPT-2 124M at llm.c's shape, 200 steps with a checkpoint and an evaluation every 100:
#   PRESET=gpt2 benches/memory.sh 200 --set model.context=64 --set train.batch_size=4 \
#     --set train.checkpoint_every=100 --set train.eval_every=100
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5000}; shift || true
out=$(mktemp -d)
cargo build --release --bin train >/dev/null 2>&1
from=$((steps / 10))
./target/release/train --preset "${PRESET:-small}" --steps "$steps" --out "$out" \
  --set run.name=\"mem\" --set train.log_every="$from" --set train.sample_every=$((2 * from)) \
  "$@" > "$out/log"
python3 - "$out/mem/metrics.jsonl" "$steps" "$from" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
at = {l["step"]: l for l in lines if "rss_bytes" in l}
a, b = at[int(sys.argv[3])], at[int(sys.argv[2])]
mib = lambda x: x / 2**20
print(f"step {a['step']}:  RSS {mib(a['rss_bytes']):.1f} MiB, live {mib(a['live_bytes']):.2f} MiB")
print(f"step {b['step']}: RSS {mib(b['rss_bytes']):.1f} MiB, live {mib(b['live_bytes']):.2f} MiB")
print(f"RSS growth {a['step']} -> {b['step']}: {100 * (b['rss_bytes'] - a['rss_bytes']) / a['rss_bytes']:+.2f}%, "
      f"live growth {b['live_bytes'] - a['live_bytes']:+d} bytes")
print(f"peak RSS logged {mib(max(l['rss_bytes'] for l in at.values())):.1f} MiB, peak live {mib(b['peak_live_bytes']):.1f} MiB")
PY
grep -E "memory estimate|^time|kept" "$out/log" || true
rm -rf "$out"
