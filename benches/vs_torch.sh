#!/usr/bin/env bash
# Ember against the PyTorch reference trainer, side by side on this machine: for each preset,
# REPS rounds of (ember bench, train, torch_ref.py) interleaved, then medians and ratios.
#   benches/vs_torch.sh REPS PRESET... [-- EMBER_BINARY...]
# `train` (target/release/train, the same steps without evaluation, samples or checkpoints) is
# reported from its own metrics: the median of the tokens/s it logs, its first line left out.
# Needs `pip install torch numpy` and the reference at ../shared/bench/torch_ref.py (override
# with TORCH_REF=path). Extra binaries (e.g. a --features flex build of `ember`) are measured
# in the same rounds. Run on a quiet machine: never while anything else builds.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=$1; shift
presets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do presets+=("$1"); shift; done
[ $# -gt 0 ] && shift
bins=("target/release/ember" "$@")
ref=${TORCH_REF:-../shared/bench/torch_ref.py}
data=${TORCH_DATA:-$(dirname "$ref")/../data/tinyshakespeare.txt}
out=$(mktemp -d)
shape() { case $1 in tiny) echo "64 1 4";; small) echo "128 2 4";; medium) echo "256 4 8";; large) echo "512 6 8";; esac; }
steps() { case $1 in medium|large) echo 30;; *) echo 60;; esac; }
for preset in "${presets[@]}"; do
  read -r d l h <<< "$(shape "$preset")"
  n=$(steps "$preset")
  for ((r = 0; r < reps; r++)); do
    for i in "${!bins[@]}"; do
      "${bins[$i]}" bench --preset "$preset" --warmup 5 --steps "$n" --json "$out/ember-$i.jsonl" > /dev/null
      echo "${bins[$i]}" > "$out/ember-$i.name"
    done
    target/release/train --preset "$preset" --steps $((n + 5)) --out "$out/train" \
      --set run.name="$preset-$r" --set train.eval_iters=0 --set train.sample_tokens=0 \
      --set train.checkpoint_every=0 --set train.log_every=5 > /dev/null
    OMP_WAIT_POLICY=PASSIVE python3 "$ref" --data "$data" --d "$d" --layers "$l" --heads "$h" \
      --ctx 64 --batch 32 --steps $((n + 5)) --eval-iters 0 --threads 2 --tag "$preset" \
      --json "$out/torch.jsonl" > /dev/null
  done
done
python3 - "$out" "${presets[@]}" <<'PY'
import glob, json, os, statistics, sys
out, presets = sys.argv[1], sys.argv[2:]
torch = [json.loads(l) for l in open(os.path.join(out, "torch.jsonl"))]
print("| preset | trainer | tokens/s (median) | runs | ratio to PyTorch | peak RSS MiB | MFU |")
print("|---|---|---|---|---|---|---|")
for p in presets:
    t = [r for r in torch if r["tag"] == p]
    t_tok = statistics.median(r["tokens_per_s_from_median"] for r in t)
    t_rss = statistics.median(r["peak_rss_mib"] for r in t)
    runs = ", ".join("%.0f" % r["tokens_per_s_from_median"] for r in t)
    print(f"| {p} | PyTorch {t[0]['torch']} | {t_tok:.0f} | {runs} | 1.00 | {t_rss:.0f} | |")
    for f in sorted(glob.glob(os.path.join(out, "ember-*.jsonl"))):
        e = [json.loads(l) for l in open(f)]
        e = [r for r in e if r["preset"] == p]
        tok = statistics.median(r["tokens_per_sec"] for r in e)
        rss = statistics.median(r["peak_rss_bytes"] for r in e) / 2**20
        mfu = statistics.median(r["mfu"] for r in e)
        name = f"Ember {e[0]['backend']}" + (" + " + e[0]["matmul_engine"].split(" (")[0] if e[0]["matmul_engine"] else "")
        name += f", kernels {e[0]['kernels_isa']}"
        name += f" ({open(f[:-len('.jsonl')] + '.name').read().strip()})"
        runs = ", ".join("%.0f" % r["tokens_per_sec"] for r in e)
        print(f"| {p} | {name} | {tok:.0f} | {runs} | {tok / t_tok:.2f} | {rss:.0f} | {100 * mfu:.1f}% |")
    runs = []
    for run in sorted(glob.glob(os.path.join(out, "train", p + "-*"))):
        logged = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
        runs.append(statistics.median(r["tokens_per_sec"] for r in logged[1:] if "loss" in r))
    tok = statistics.median(runs)
    runs = ", ".join("%.0f" % r for r in runs)
    print(f"| {p} | Ember train (target/release/train, its metrics) | {tok:.0f} | {runs} | {tok / t_tok:.2f} | | |")
PY
rm -rf "$out"
