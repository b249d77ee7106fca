"""Benchmark: the memory and time of the answer-token loss, full logits against the head at the answers only.

    python benchmarks/head_memory.py [--vocab 128256] [--hidden 512] [--layers 2] [--batch 8] [--prompt 96]
        [--answer 32] [--repeats 3] [--dtypes fp32[,bf16]]

One forward and backward of the mean answer-token NLL on a random Llama-shaped model whose vocabulary is Llama-3's
(128,256 tokens) and whose body is small, so that the output head and its logits are what the step holds, as in a
7B model with a 128k vocabulary at TOFU's lengths. Right-padded rows of ``--prompt`` prompt tokens (label −100)
then ``--answer`` answer tokens (the rows' answers are 1/4 to 4/4 of it long). Two ways, each in its own process
(so its peak memory is its own), in each of ``--dtypes`` (bf16 matrix products are emulated on CPUs without
native bf16, tens of times slower: on such a machine measure bf16 at a smaller ``--batch``):

* ``full``: ``mean_nll(*token_nll(forward_logits(model, batch), labels))``, the logits of every position in fp32
  (what every NLL term computed before the head ran at the answers only);
* ``answers``: ``mean_nll(*answer_nll(model, batch))``, the head at the labelled positions only and the fp32
  log-softmax a chunk at a time (recomputed in backward for bf16 logits).

Reported: the peak resident memory the step added over the model and its inputs (MB), seconds per step (the best
of ``--repeats``), and the loss (the two ways agree to float rounding).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from obliviate.data.tokenize import IGNORE_INDEX, TokenBatch  # noqa: E402
from obliviate.likelihood import answer_nll, forward_logits, mean_nll, token_nll  # noqa: E402

WAYS = ("full", "answers")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def random_batch(options: argparse.Namespace) -> TokenBatch:
    """Right-padded rows: ``prompt`` unlabelled tokens, then an answer of a quarter to all of ``answer`` tokens."""
    generator = torch.Generator().manual_seed(0)
    width = options.prompt + options.answer
    input_ids = torch.randint(0, options.vocab, (options.batch, width), generator=generator)
    attention = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row in range(options.batch):
        length = options.prompt + options.answer * (row % 4 + 1) // 4
        attention[row, :length] = 1
        labels[row, options.prompt:length] = input_ids[row, options.prompt:length]
    return TokenBatch(input_ids, attention, labels, torch.arange(options.batch))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(way: str, dtype: str, options: argparse.Namespace) -> dict:
    """One way in this process: the step's added peak memory, its best time, its loss."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=options.vocab, hidden_size=options.hidden, intermediate_size=2 * options.hidden,
                         num_hidden_layers=options.layers, num_attention_heads=8, num_key_value_heads=4,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).to(DTYPES[dtype])
    batch = random_batch(options)

    def loss() -> torch.Tensor:
        if way == "full":
            return mean_nll(*token_nll(forward_logits(model, batch), batch.labels))
        return mean_nll(*answer_nll(model, batch))

    for parameter in model.parameters():  # the gradients' memory is the same in both ways: hold it before measuring
        parameter.grad = torch.zeros_like(parameter)
    before = current_rss_mb()
    seconds, value = [], 0.0
    for _ in range(options.repeats):
        start = time.perf_counter()
        step = loss()
        step.backward()
        seconds.append(time.perf_counter() - start)
        value = step.item()
        del step
    return {"way": way, "dtype": dtype, "added_peak_mb": peak_rss_mb() - before, "seconds": min(seconds),
            "loss": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=96)
    parser.add_argument("--answer", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="fp32")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # way:dtype, run in a child process
    options = parser.parse_args()
    if options.one:
        print(json.dumps(measure(*options.one.split(":"), options)))
        return
    rows = []
    for dtype in options.dtypes.split(","):
        for way in WAYS:
            output = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", f"{way}:{dtype}"], check=True,
                                    capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
    answers = sum(options.answer * (row % 4 + 1) // 4 for row in range(options.batch))
    print(f"vocabulary {options.vocab}, hidden {options.hidden} × {options.layers} layers, batch {options.batch} × "
          f"{options.prompt + options.answer} tokens, {answers} answer tokens, {torch.get_num_threads()} threads")
    print("| dtype | way | added peak MB | s/step | loss |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['dtype']} | {row['way']} | {row['added_peak_mb']:.0f} | {row['seconds']:.3f} | "
              f"{row['loss']:.6f} |")


if __name__ == "__main__":
    main()
