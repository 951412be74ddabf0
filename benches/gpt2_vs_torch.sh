#!/usr/bin/env bash
# GPT-2 124M side by side with the PyTorch reference trainer, interleaved, at llm.c's CPU shape
# (batch 4 x context 64) and at batch 8 x context 256: per shape and round, Ember on
# torch_ref.py's architecture (untied head without bias, exact GELU), torch_ref.py, and Ember's
# gpt2 preset (GPT-2's own: tied head, tanh GELU). BENCHMARKS.md, "GPT-2 124M". Both sides time
# the same steps: torch_ref.py reports the median of the steps after its first five, so Ember
# warms up for five steps too (its heap reaches its steady size over the first few; timing from
# the second step counted those page faults against Ember only).
#
#   benches/gpt2_vs_torch.sh [ROUNDS] [TORCH_REF]
#
# Needs a release build (cargo build --release), Python with torch and numpy, and GPT-2 tokens
# of Tiny Shakespeare, which it prepares with `ember prepare` if missing. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
torch_ref=${2:-../shared/bench/torch_ref.py}
data=${DATA:-/tmp/shk-gpt2}
ember=./target/release/ember
[ -d "$data" ] || "$ember" prepare --tokenizer gpt2 --out "$data" data/tinyshakespeare.txt

# SHAPES="8 256" runs one shape only (batch and context pairs, comma-separated).
IFS=, read -ra shapes <<<"${SHAPES:-4 64,8 256}"
for shape in "${shapes[@]}"; do
  read -r b c <<<"$shape"
  for round in $(seq "$rounds"); do
    echo "=== batch $b x context $c, round $round"
    echo "--- ember, torch_ref's architecture"
    /usr/bin/time -f "peak RSS %M KiB" "$ember" bench --preset gpt2 \
      --set model.tie_embeddings=false --set 'model.activation="gelu"' \
      --set model.context="$c" --set train.batch_size="$b" --warmup 5 --steps 4 2>&1 \
      | grep -E "tokens/s|phases|ceiling|peak"
    echo "--- pytorch"
    OMP_WAIT_POLICY=PASSIVE /usr/bin/time -f "peak RSS %M KiB" python3 "$torch_ref" \
      --data "$data" --vocab 50304 --d 768 --layers 12 --heads 12 --ctx "$c" --batch "$b" \
      --steps 9 --eval-iters 0 --threads 2 --head-bias 0 2>&1 | grep -E "steady|peak"
    echo "--- ember, gpt2 preset"
    /usr/bin/time -f "peak RSS %M KiB" "$ember" bench --preset gpt2 \
      --set model.context="$c" --set train.batch_size="$b" --warmup 5 --steps 4 2>&1 \
      | grep -E "tokens/s|ceiling|peak"
  done
done
