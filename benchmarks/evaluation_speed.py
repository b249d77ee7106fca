"""Benchmark: examples per second of the two model queries every metric is built on, on SmolLM2-135M.

    python benchmarks/evaluation_speed.py [--examples 80] [--batch-sizes 1,8,16] [--max-new-tokens 16]

* scoring: teacher-forced answer-token statistics (prob, memorisation, membership scores);
* truth-ratio scoring: each question against its paraphrased and perturbed answers, with the
  prompt's computation shared (what the metrics use) and with every answer run on its own;
* generation: greedy answers (ROUGE, exact match, semantic match).

Each is run over the same synthetic forget/retain questions at each batch size; fp32 on CPU.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from obliviate.data.sources import load_examples  # noqa: E402
from obliviate.data.tokenize import PromptFormat, Query  # noqa: E402
from obliviate.evaluation.scoring import answer_tokens, greedy_answers, separate_statistics  # noqa: E402
from obliviate.models.loading import load_model, resolve_model  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=80)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "files" / "cache")
    arguments = parser.parse_args()
    model, tokenizer = load_model(resolve_model("smollm2-135m-instruct"), arguments.cache_dir, torch.device("cpu"),
                                  torch.float32)
    examples = load_examples("synthetic:full", ROOT / "files" / "data")[: arguments.examples]
    fmt = PromptFormat()
    prompts = [fmt.prompt(tokenizer, e.question) for e in examples]
    pairs = [Query(prompt, e.answer) for prompt, e in zip(prompts, examples)]
    print(f"{len(examples)} examples, {torch.get_num_threads()} threads")
    options = [Query(prompt, answer) for prompt, e in zip(prompts, examples)
               for answer in (e.paraphrased_answer, *e.perturbed_answers)]

    def rate(count: int, query, *inputs) -> float:
        start = time.perf_counter()
        query(model, tokenizer, *inputs)
        return count / (time.perf_counter() - start)

    print("| batch | scoring examples/s | truth ratio examples/s, shared prompt | same, separate | "
          "generation examples/s |\n|---|---|---|---|---|")
    for batch_size in (int(b) for b in arguments.batch_sizes.split(",")):
        scoring = rate(len(pairs), answer_tokens, pairs, 128, batch_size)
        shared = rate(len(examples), answer_tokens, options, 128, batch_size)
        separate = rate(len(examples), separate_statistics, options, 128, batch_size)
        generation = rate(len(prompts), greedy_answers, prompts, arguments.max_new_tokens, batch_size)
        print(f"| {batch_size} | {scoring:.1f} | {shared:.1f} | {separate:.1f} | {generation:.1f} |")
