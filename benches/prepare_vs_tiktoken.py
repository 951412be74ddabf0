#!/usr/bin/env python3
"""Python tiktoken's GPT-2 encoding of a text file, the yardstick of `ember prepare`'s throughput.

    python3 benches/prepare_vs_tiktoken.py TEXT [THREADS] [RANKS]

Encodes TEXT as nanoGPT's openwebtext `prepare.py` does (`encode_ordinary_batch` over documents,
here blocks of about 1 MiB of lines, on THREADS threads, default all cores), streaming so the
text is never held whole, and prints MiB/s, tokens/s and the peak RSS. RANKS is OpenAI's GPT-2
ranks file (default: the tiktoken-rs crate's `r50k_base.tiktoken` in cargo's registry), loaded
offline. Compare with `/usr/bin/time -v ember prepare --tokenizer gpt2 --out DIR TEXT` on the
same cores (BENCHMARKS.md).
"""
import glob
import os
import resource
import sys
import time

import tiktoken
import tiktoken.load

PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def blocks(path, size=1 << 20, per_batch=16):
    batch, block, n = [], [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            block.append(line)
            n += len(line)
            if n >= size:
                batch.append("".join(block))
                block, n = [], 0
                if len(batch) == per_batch:
                    yield batch
                    batch = []
    if block:
        batch.append("".join(block))
    if batch:
        yield batch


def main():
    path = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count()
    ranks = sys.argv[3] if len(sys.argv) > 3 else sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken")))[0]
    enc = tiktoken.Encoding("gpt2", pat_str=PATTERN,
                            mergeable_ranks=tiktoken.load.load_tiktoken_bpe(ranks),
                            special_tokens={"<|endoftext|>": 50256})
    start = time.perf_counter()
    tokens = 0
    for batch in blocks(path):
        tokens += sum(len(ids) for ids in enc.encode_ordinary_batch(batch, num_threads=threads))
    secs = time.perf_counter() - start
    mib = os.path.getsize(path) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tiktoken: {mib:.0f} MiB, {tokens} tokens in {secs:.1f}s: {mib / secs:.1f} MiB/s, "
          f"{tokens / secs:.0f} tokens/s, {threads} threads, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
