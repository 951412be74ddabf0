#!/usr/bin/env bash
# The GPU path on a machine that has a GPU: trains the tiny and small presets for STEPS steps on
# BACKEND (cuda or wgpu) and on the CPU (ndarray) from the same first checkpoint, checks that the
# GPU's losses follow the CPU's, and prints tokens/s, device memory and a sample of each.
#
#   benches/gpu_check.sh BACKEND [STEPS]          builds with --features BACKEND, then runs
#   BIN=dir benches/gpu_check.sh BACKEND [STEPS]  uses prebuilt train/generate binaries in dir
#
# cuda needs network once: cubecl-cuda's build downloads an LLVM bundle (cubecl-llvm). On a
# machine with NVIDIA's driver and CUDA toolkit: `cargo build --release --features cuda --bin
# train --bin generate`, then this script. wgpu needs a Vulkan driver (NVIDIA's includes one).
# Exits non-zero if a backend cannot start or its losses leave the CPU's by more than TOLERANCE
# (relative, default 0.01: GPU matmuls may sum in other orders or use TF32).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?usage: benches/gpu_check.sh cuda|wgpu [STEPS]}
steps=${2:-200}
tolerance=${TOLERANCE:-0.01}
if [[ -z "${BIN:-}" ]]; then
  cargo build --release --features "$backend" --bin train --bin generate
  BIN=target/release
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for preset in tiny small; do
  echo "=== $preset on $backend, $steps steps"
  common=(--set train.eval_every="$steps" --set train.log_every=1 --set train.sample_tokens=200
          --set train.checkpoint_every=1)
  # One step on the CPU: the checkpoint both runs continue from (same weights and AdamW state).
  "$BIN/train" --preset "$preset" --steps 1 --out "$out" --set run.name="\"$preset-cpu\"" \
    "${common[@]}" > /dev/null
  cp -r "$out/$preset-cpu" "$out/$preset-gpu"
  "$BIN/train" --resume "$out/$preset-cpu" --steps "$steps" --device ndarray \
    --set train.checkpoint_every=0 > "$out/$preset-cpu.log"
  if ! "$BIN/train" --resume "$out/$preset-gpu" --steps "$steps" --device "$backend" \
    --set train.checkpoint_every=0 > "$out/$preset-gpu.log" 2>&1; then
    echo "$backend failed:"; tail -5 "$out/$preset-gpu.log"; status=1; continue
  fi
  grep -E "^ember|^done|^memory" "$out/$preset-gpu.log"
  python3 - "$out/$preset-cpu/metrics.jsonl" "$out/$preset-gpu/metrics.jsonl" "$tolerance" <<'PY' || status=1
import json, sys
def losses(path):
    rows = [json.loads(l) for l in open(path)]
    return {r["step"]: r for r in rows if "loss" in r}
cpu, gpu, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
worst = max(abs(cpu[s]["loss"] - gpu[s]["loss"]) / abs(cpu[s]["loss"]) for s in cpu if s in gpu)
last = max(cpu)
print(f"final val loss: cpu {cpu[last].get('val_loss', float('nan')):.4f}, "
      f"gpu {gpu[last].get('val_loss', float('nan')):.4f}; largest step loss difference {worst:.2e}")
print(f"tokens/s: cpu {cpu[last]['tokens_per_sec']:.0f}, gpu {gpu[last]['tokens_per_sec']:.0f}")
sys.exit(0 if worst <= tol else f"losses differ by {worst:.2e} > {tol}")
PY
  sed -n '/---- sample at step/,/^----$/p' "$out/$preset-gpu.log" | tail -n +2 | head -8
done
exit $status
