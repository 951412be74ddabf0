#!/usr/bin/env bash
# The floor of a step's clipping and AdamW phases on this machine: the same two passes in plain C
# (gcc -O3 -march=native, OpenMP, one array of N parameters, float32), with none of Ember's
# per-tensor calls. The clip reads every gradient once (4 bytes a parameter); AdamW reads the
# parameter, gradient and both moments and writes all but the gradient (28 bytes), in Ember's
# formula (`kernels/src/ops/adamw/kernel.rs`). Compare with the clip and optimizer phases of
# `ember bench`: both are bound by memory bandwidth, so what Ember could still gain there is the
# distance to these times. BENCHMARKS.md, "What the machine allows".
#
#   benches/optimizer_floor.sh [PARAMS] [THREADS]    (defaults: 162372096, torch_ref's GPT-2; 2)
#
# Needs gcc with OpenMP. Run on a quiet machine.
set -euo pipefail
params=${1:-162372096}
threads=${2:-2}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/floor.c" <<'C'
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  long n = atol(argv[1]);
  enum { ROUNDS = 7 };
  float *p = aligned_alloc(64, n * 4), *g = aligned_alloc(64, n * 4);
  float *m = aligned_alloc(64, n * 4), *v = aligned_alloc(64, n * 4);
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) {
    p[i] = 0.02f * (float)(i % 13);
    g[i] = 0.001f * (float)(i % 7);
    m[i] = 0.0f;
    v[i] = 0.0f;
  }
  const float b1 = 0.9f, b2 = 0.95f, f1 = 1 - b1, f2 = 1 - b2, eps = 1e-8f, lr = 6e-4f;
  const float decay = 1 - 6e-4f * 0.1f, scale = 0.5f;
  double clip[ROUNDS], adamw[ROUNDS], total = 0;
  for (int r = 0; r < ROUNDS; r++) {
    const float c1 = 1 - powf(b1, r + 1), c2 = 1 - powf(b2, r + 1);
    double t0 = omp_get_wtime();
    float sum = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
    for (long i = 0; i < n; i++) sum += g[i] * g[i];
    double t1 = omp_get_wtime();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
      float gi = g[i] * scale, mi = b1 * m[i] + f1 * gi, vi = b2 * v[i] + f2 * (gi * gi);
      float delta = (mi / c1) / (sqrtf(vi / c2) + eps);
      p[i] = p[i] * decay - delta * lr;
      m[i] = mi;
      v[i] = vi;
    }
    double t2 = omp_get_wtime();
    clip[r] = (t1 - t0) * 1e3;
    adamw[r] = (t2 - t1) * 1e3;
    total += sum + p[r];
  }
  qsort(clip, ROUNDS, sizeof(double), by_value);
  qsort(adamw, ROUNDS, sizeof(double), by_value);
  double c = clip[ROUNDS / 2], a = adamw[ROUNDS / 2];
  printf("%ld parameters, %d threads, medians of %d rounds\n", n, omp_get_max_threads(), ROUNDS);
  printf("clip's sum of squares %.1f ms (%.1f GB/s read)\n", c, n * 4.0 / c / 1e6);
  printf("AdamW %.1f ms (%.1f GB/s read and written)\n", a, n * 28.0 / a / 1e6);
  return total == 42.0; /* keeps the passes from being optimised away */
}
C
gcc -O3 -march=native -fopenmp -fno-math-errno "$dir/floor.c" -o "$dir/floor" -lm
OMP_NUM_THREADS=$threads OMP_PROC_BIND=true "$dir/floor" "$params"
