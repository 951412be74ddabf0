#!/usr/bin/env bash
# Time to quality: nanoGPT's CPU recipe on Tiny Shakespeare (recipes/nanogpt-cpu.toml: d128, 4
# layers, 4 heads, context 64, batch 12, 2000 steps, lr 1e-3 cosine to 1e-4, warmup 100, eval
# every 250 steps on 20 batches), Ember and the PyTorch reference interleaved for REPS rounds.
# Both train the reference's architecture (biases, an untied head with a bias), so the
# recipe's nanoGPT architecture is overridden for Ember.
# Reports the wall-clock seconds from the first step until the evaluated val loss first reaches
# TARGET, and the final val loss, per round and as medians.
#   benches/time_to_quality.sh REPS [TARGET]      (TARGET defaults to 1.9)
# Needs `pip install torch numpy`, ../shared/bench/torch_ref.py and Tiny Shakespeare (override
# with TORCH_REF=path and TORCH_DATA=path). Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=$1
target=${2:-1.9}
ref=${TORCH_REF:-../shared/bench/torch_ref.py}
data=${TORCH_DATA:-$(dirname "$ref")/../data/tinyshakespeare.txt}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for ((r = 0; r < reps; r++)); do
  target/release/train --config recipes/nanogpt-cpu.toml --data "$data" --out "$out" \
    --set run.name="ember-$r" --set train.sample_tokens=0 --set train.checkpoint_every=0 \
    --set model.bias=true --set model.tie_embeddings=false --set model.head_bias=true > /dev/null
  OMP_WAIT_POLICY=PASSIVE python3 "$ref" --data "$data" --d 128 --layers 4 --heads 4 --ctx 64 \
    --batch 12 --steps 2000 --lr 1e-3 --min-lr 1e-4 --warmup 100 --eval-every 250 \
    --eval-iters 20 --seed 1337 --threads 2 --targets "$target" --json "$out/torch.jsonl" > /dev/null
done
python3 - "$out" "$reps" "$target" <<'PY'
import json, os, statistics, sys
out, reps, target = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ember = []
for r in range(reps):
    evals = [json.loads(l) for l in open(os.path.join(out, f"ember-{r}", "metrics.jsonl"))]
    evals = [e for e in evals if e.get("val_loss") is not None]
    hit = next((e for e in evals if e["val_loss"] <= target), None)
    ember.append((hit["elapsed_s"] if hit else float("nan"), hit["step"] if hit else None, evals[-1]["val_loss"]))
torch = []
for rec in map(json.loads, open(os.path.join(out, "torch.jsonl"))):
    hit = rec["reached"].get(str(target))
    torch.append((hit["wall_s"] if hit else float("nan"), hit["step"] if hit else None, rec["final_val_loss"]))
print(f"| trainer | seconds to val <= {target} (median) | runs (s @ step) | final val loss (median) | runs |")
print("|---|---|---|---|---|")
for name, rows in [("Ember", ember), ("PyTorch", torch)]:
    secs = statistics.median(r[0] for r in rows)
    final = statistics.median(r[2] for r in rows)
    runs = ", ".join(f"{s:.1f} @ {st}" for s, st, _ in rows)
    finals = ", ".join(f"{f:.4f}" for _, _, f in rows)
    print(f"| {name} | {secs:.1f} | {runs} | {final:.4f} | {finals} |")
e, t = statistics.median(r[0] for r in ember), statistics.median(r[0] for r in torch)
print(f"\nEmber's time to val <= {target}: {e / t:.2f}x PyTorch's")
PY
