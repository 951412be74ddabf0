"""Inputs for timing llm.c's CPU trainer (`train_gpt2.c`) beside Ember offline.

llm.c's trainer starts from `gpt2_124M.bin`, which its `train_gpt2.py` writes from OpenAI's
weights fetched over the network. This writes the same file for a randomly initialised GPT-2
124M instead (header magic 20240326, version 3; wte, wpe, then each tensor for all 12 layers in
llm.c's order; LayerNorm weights 1 and biases 0, every other tensor N(0, 0.02)), and random GPT-2
tokens in llm.c's data format (header magic 20240520, version 1, uint16 tokens) where its
trainer looks for Tiny Shakespeare. A step's time does not depend on the values. BENCHMARKS.md,
"GPT-2 124M against llm.c", has the commands.

    python3 benches/llmc_inputs.py LLM_C_DIR
"""
import os
import sys

import numpy as np

MAX_T, VOCAB, LAYERS, HEADS, WIDTH, PADDED_VOCAB = 1024, 50257, 12, 12, 768, 50304


def parameter_sizes():
    """llm.c's `fill_in_parameter_sizes`, in its order."""
    c, l = WIDTH, LAYERS
    return [
        ("wte", PADDED_VOCAB * c), ("wpe", MAX_T * c), ("ln1w", l * c), ("ln1b", l * c),
        ("qkvw", l * 3 * c * c), ("qkvb", l * 3 * c), ("attprojw", l * c * c),
        ("attprojb", l * c), ("ln2w", l * c), ("ln2b", l * c), ("fcw", l * 4 * c * c),
        ("fcb", l * 4 * c), ("fcprojw", l * c * 4 * c), ("fcprojb", l * c), ("lnfw", c),
        ("lnfb", c),
    ]


def write_checkpoint(path, rng):
    header = np.zeros(256, dtype=np.int32)
    header[:8] = [20240326, 3, MAX_T, VOCAB, LAYERS, HEADS, WIDTH, PADDED_VOCAB]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for name, n in parameter_sizes():
            if name.startswith("ln") and name.endswith("w"):
                values = np.ones(n, dtype=np.float32)
            elif name.endswith("b"):
                values = np.zeros(n, dtype=np.float32)
            else:
                values = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
            f.write(values.tobytes())


def write_tokens(path, count, rng):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [20240520, 1, count]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(rng.integers(0, VOCAB, count, dtype=np.uint16).tobytes())


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: python3 benches/llmc_inputs.py LLM_C_DIR (llm.c's checkout, an existing "
                 "folder)")
    root = sys.argv[1]
    rng = np.random.default_rng(0)
    write_checkpoint(os.path.join(root, "gpt2_124M.bin"), rng)
    data = os.path.join(root, "dev", "data", "tinyshakespeare")
    os.makedirs(data, exist_ok=True)
    write_tokens(os.path.join(data, "tiny_shakespeare_train.bin"), 2_000_000, rng)
    write_tokens(os.path.join(data, "tiny_shakespeare_val.bin"), 200_000, rng)


if __name__ == "__main__":
    main()
