#!/usr/bin/env bash
# Data parallelism on one machine: `ember bench` as 1 process x N threads against N MPI ranks x 1
# thread, interleaved, for each preset. Prints per preset and layout the median tokens/s over
# ROUNDS and the all-reduce's share of the step. Needs a `--features mpi` build and OpenMPI.
#   benches/mpi_scaling.sh ROUNDS RANKS PRESET... [-- BENCH_ARGS...]
# Example (the figures in BENCHMARKS.md):
#   cargo build --release --features mpi --bin ember
#   benches/mpi_scaling.sh 3 2 small medium
set -euo pipefail
rounds=$1 ranks=$2
shift 2
presets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do presets+=("$1"); shift; done
[ $# -gt 0 ] && shift
ember=${EMBER:-target/release/ember}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
out=$(mktemp -d)
for ((r = 0; r < rounds; r++)); do
  for preset in "${presets[@]}"; do
    steps=50
    [ "$preset" = medium ] && steps=20
    "$ember" bench --preset "$preset" --threads "$ranks" --steps $steps --json "$out/$preset-process.jsonl" "$@" >/dev/null
    mpirun --oversubscribe -np "$ranks" "$ember" bench --preset "$preset" --threads 1 --steps $steps \
      --json "$out/$preset-ranks.jsonl" "$@" >/dev/null
  done
done
for preset in "${presets[@]}"; do
  python3 - "$preset" "$ranks" "$out/$preset-process.jsonl" "$out/$preset-ranks.jsonl" <<'PY'
import json, statistics, sys
preset, ranks = sys.argv[1], sys.argv[2]
rows = {}
for name, path in [(f"1 process x {ranks} threads", sys.argv[3]), (f"{ranks} ranks x 1 thread", sys.argv[4])]:
    reports = [json.loads(l) for l in open(path)]
    tok = [r["tokens_per_sec"] for r in reports]
    comm = [100 * r["comm_share"] for r in reports]
    rows[name] = statistics.median(tok)
    print(f"{preset:7} {name:22} median {statistics.median(tok):8.0f} tok/s (runs {', '.join(f'{t:.0f}' for t in tok)}) "
          f"| all-reduce {statistics.median(comm):.1f}% of the step | peak RSS {statistics.median(r['peak_rss_bytes'] for r in reports) / 2**20:.0f} MiB")
a, b = rows.values()
print(f"{preset:7} ranks / process: {b / a:.2f}")
PY
done
rm -rf "$out"
