#!/usr/bin/env bash
# Memory over a long run: trains the small preset for STEPS steps (default 5000) with the usual
# evaluation, checkpoints and samples, then prints RSS and live heap bytes at step 500 and at the
# last step, and the peaks. Target: RSS growth under 1% from step 500 to the end.
#   benches/memory.sh [STEPS] [extra train flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5000}; shift || true
out=$(mktemp -d)
cargo build --release --bin train >/dev/null 2>&1
./target/release/train --preset small --steps "$steps" --out "$out" --set run.name=\"mem\" \
  --set train.log_every=500 --set train.sample_every=1000 "$@" > "$out/log"
python3 - "$out/mem/metrics.jsonl" "$steps" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
at = {l["step"]: l for l in lines}
a, b = at[500], at[int(sys.argv[2])]
mib = lambda x: x / 2**20
print(f"step 500:  RSS {mib(a['rss_bytes']):.1f} MiB, live {mib(a['live_bytes']):.2f} MiB")
print(f"step {b['step']}: RSS {mib(b['rss_bytes']):.1f} MiB, live {mib(b['live_bytes']):.2f} MiB")
print(f"RSS growth 500 -> {b['step']}: {100 * (b['rss_bytes'] - a['rss_bytes']) / a['rss_bytes']:+.2f}%, "
      f"live growth {b['live_bytes'] - a['live_bytes']:+d} bytes")
print(f"peak RSS logged {mib(max(l['rss_bytes'] for l in lines)):.1f} MiB, peak live {mib(b['peak_live_bytes']):.1f} MiB")
PY
grep -E "^memory:|^done:|kept" "$out/log" || true
rm -rf "$out"
