#!/usr/bin/env bash
# The memory estimate `train` prints at start-up against the peak RSS the run then reaches, for
# every preset (or the presets given). Each run trains STEPS steps (20) with an evaluation and a
# checkpoint every 10, the moments of a run that hold the most memory, and a sample at the end.
#   benches/memory_fit.sh [STEPS] [PRESET...]
# Build first: cargo build --release --bin train. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20}
shift || true
presets=("${@:-tiny}")
[[ $# -eq 0 ]] && presets=(tiny small medium large)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "| preset | estimate (MiB) | peak RSS (MiB) | estimate / peak |"
echo "|---|---|---|---|"
for preset in "${presets[@]}"; do
  log=$(target/release/train --preset "$preset" --steps "$steps" --out "$out" \
    --set train.eval_every=10 --set train.checkpoint_every=10 --set train.sample_tokens=200 2>&1)
  python3 - "$preset" "$log" <<'PY'
import re, sys
preset, log = sys.argv[1], sys.argv[2]
def mib(text):
    value, unit = text.split()
    return float(value) * (1024 if unit == "GiB" else 1)
estimate = mib(re.search(r"memory estimate ([\d.]+ [MG]iB)", log).group(1))
peak = mib(re.search(r"memory: peak RSS ([\d.]+ [MG]iB)", log).group(1))
print(f"| {preset} | {estimate:.1f} | {peak:.1f} | {estimate / peak:.2f} |")
PY
done
