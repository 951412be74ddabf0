#!/usr/bin/env bash
# Interleaved A/B/A/B comparison of `train` binaries on the same run, for a 2-core machine where
# runs must not overlap. Prints, per binary, the median tokens/s and peak RSS over REPS runs.
#   benches/compare.sh REPS BIN1 [BIN2 ...] -- TRAIN_ARGS...
# Example (the figures in BENCHMARKS.md):
#   benches/compare.sh 3 target/release/train /tmp/train-flex -- --preset tiny --steps 300 \
#     --set train.eval_iters=0 --set train.sample_tokens=0
set -euo pipefail
reps=$1; shift
bins=()
while [ "$1" != "--" ]; do bins+=("$1"); shift; done
shift
out=$(mktemp -d)
for ((r = 0; r < reps; r++)); do
  for i in "${!bins[@]}"; do
    "${bins[$i]}" --out "$out/runs" "$@" 2>&1 | grep '^done:' >> "$out/$i.log"
  done
done
for i in "${!bins[@]}"; do
  python3 - "${bins[$i]}" "$out/$i.log" <<'PY'
import re, statistics, sys
lines = open(sys.argv[2]).read().splitlines()
tok = [float(re.search(r"\| ([0-9.]+) tok/s", l).group(1)) for l in lines]
rss = [float(re.search(r"peak RSS ([0-9.]+) MiB", l).group(1)) for l in lines]
print(f"{sys.argv[1]}: median {statistics.median(tok):.0f} tok/s (runs: {', '.join(f'{t:.0f}' for t in tok)}), "
      f"median peak RSS {statistics.median(rss):.1f} MiB")
PY
done
rm -rf "$out"
