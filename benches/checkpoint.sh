#!/usr/bin/env bash
# How long a GPT-2 124M checkpoint takes to write, and the run's peak RSS: `train --preset gpt2`
# for 2 steps at batch 4 x context 64 with one checkpoint at the end (1.4 GiB: the weights and
# AdamW's two moments), no sampling. Prints each run's checkpoint line (its size and time), the
# run's wall time and peak RSS. Give several builds of `train` to compare them side by side,
# interleaved round by round (a build older than the checkpoint line's time shows the wall
# time only). BENCHMARKS.md, "Checkpoints at GPT-2's size".
#
#   benches/checkpoint.sh [ROUNDS] [TRAIN_BINARY...]   (defaults: 3, target/release/train)
#
# Writes under a temporary folder on the disk `TMPDIR` names. Run on a quiet machine: the disk's
# and the page cache's speed varies (`dd ... conv=fsync` here: 0.3-1.5 GB/s).
set -euo pipefail
rounds=${1:-3}
shift || true
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(target/release/train)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for round in $(seq "$rounds"); do
  for binary in "${binaries[@]}"; do
    rm -rf "$dir/runs"
    echo "round $round: $binary"
    /usr/bin/time -f "  wall %e s, peak RSS %M KiB" "$binary" --preset gpt2 --steps 2 \
      --out "$dir/runs" --set 'run.name="g"' --set train.eval_every=0 \
      --set train.sample_every=0 --set train.sample_tokens=0 --set model.context=64 \
      --set train.batch_size=4 2>&1 | grep -E "^checkpoint step|^  wall" | sed 's/^checkpoint/  checkpoint/'
  done
done
