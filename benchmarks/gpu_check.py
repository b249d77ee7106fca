"""The CUDA path on one GPU, without any hub: bf16 compute, SDPA attention, FSDP2 (on one process), and the
training step of NPO, GradDiff (sharded) and RMU (whole weights in bf16: RMU is refused sharded) on a ~1B-parameter
Llama with random weights; then the evaluation's speed.

    bash benchmarks/gpu_check.sh          # skips itself without CUDA
    python benchmarks/gpu_check.py --device cpu --layers 2 --hidden 64 --steps 2   # the same code, tiny, on CPU

The weights come from a config (``--layers``, ``--hidden``; the default 16 × 2048 with a 5632-wide MLP and the
SmolLM2 vocabulary is 1.1 B parameters), the tokenizer from ``--tokenizer`` (the embedded SmolLM2 folder's
tokenizer files), the examples from the synthetic benchmark (generated here). Each method trains ``--steps``
optimiser steps of batch ``--batch`` forget + retain examples, through the engine's own loop and loss terms.
Printed: seconds per step, tokens per second (forget + retain tokens of a step, over its time) and peak GPU
memory of each method; examples per second of teacher-forced scoring and of greedy generation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from obliviate.data.sources import load_examples  # noqa: E402
from obliviate.data.tokenize import PromptFormat, encode_dataset, example_query  # noqa: E402
from obliviate.evaluation.scoring import answer_tokens, greedy_answers  # noqa: E402
from obliviate.methods.npo import NPOForget  # noqa: E402
from obliviate.methods.objective import PrepareContext  # noqa: E402
from obliviate.methods.rmu import RMULoss  # noqa: E402
from obliviate.methods.terms import NLL  # noqa: E402
from obliviate.models.loading import load_tokenizer  # noqa: E402
from obliviate.models.sharding import shard  # noqa: E402
from obliviate.training.loop import train  # noqa: E402
from obliviate.training.schedule import TrainingConfig  # noqa: E402

METHODS = {  # name -> (objective for a model of this many layers, sharded)
    "NPO": (lambda layers: NPOForget(0.1) * 1.0 + NLL("retain") * 1.0, True),
    "GradDiff": (lambda layers: NLL("forget") * -1.0 + NLL("retain") * 1.0, True),
    "RMU": (lambda layers: RMULoss(layer=layers // 2, trained_layers=list(range(max(0, layers // 2 - 2),
                                                                            layers // 2 + 1)),
                                   param_pattern=r"mlp\.down_proj\.weight", steering_coeff=0.0,
                                   steering_norm_multiple=4.0, alpha=100.0, seed=0) * 1.0, False),
}


def model_of(args: argparse.Namespace, tokenizer, device: torch.device) -> torch.nn.Module:
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
                         num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                         num_key_value_heads=max(1, args.hidden // 256), max_position_embeddings=2048,
                         tie_word_embeddings=True, attn_implementation="sdpa",
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--evaluated", type=int, default=64)
    parser.add_argument("--tokenizer", default=str(ROOT / "files" / "cache" / "models" / "smollm2-135m-instruct"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; skipped")
        return 0
    tokenizer, fmt = load_tokenizer(args.tokenizer), PromptFormat()
    with tempfile.TemporaryDirectory() as data_dir:
        forget, retain = (load_examples(f"synthetic:{name}", Path(data_dir)) for name in ("forget10", "retain90"))
    data = {split: encode_dataset(tokenizer, examples, fmt, 128) for split, examples in (("forget", forget),
                                                                                         ("retain", retain))}
    accelerator = Accelerator(cpu=device.type == "cpu")
    precision = "bf16" if device.type == "cuda" else "fp32"
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print("| method | weights | parameters | s/step | tokens/s | peak GPU memory (GB) |")
    print("|---|---|---|---|---|---|")
    model = None
    for name, (objective_of, sharded) in METHODS.items():
        model = model_of(args, tokenizer, device)
        # sharded: fp32 master weights, bf16 compute on CUDA; whole: bf16 weights on CUDA
        model = shard(model) if sharded else model.to(torch.bfloat16 if device.type == "cuda" else torch.float32)
        objective = objective_of(args.layers)
        objective.prepare(PrepareContext(model, data, args.batch, device))
        config = TrainingConfig(lr=1e-5, num_epochs=1, max_steps=args.steps, gradient_accumulation_steps=1,
                                weight_decay=0.0, warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0,
                                logging_steps=1, batch_size=args.batch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        logs: list[dict] = []
        train(model, objective, data, "forget", config, accelerator, 0, on_log=logs.append, description=name)
        seconds = sum(r["step_seconds"] for r in logs[1:]) / max(1, len(logs) - 1)  # the first step warms up
        tokens = args.batch * 2 * sum(len(e.input_ids) for e in data["forget"].encoded) / len(data["forget"])
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        size = sum(p.numel() for p in model.parameters()) / 1e9
        weights = f"{'FSDP, fp32 master, ' if sharded else 'whole, '}{precision} compute"
        print(f"| {name} | {weights} | {size:.2f} B | {seconds:.3f} | {tokens / seconds:.0f} | {peak:.1f} |")
    model.eval()
    queries = [example_query(tokenizer, e, fmt) for e in forget[:args.evaluated]]
    prompts = [fmt.prompt(tokenizer, e.question) for e in forget[:args.evaluated]]
    for label, work in (("scoring", lambda: answer_tokens(model, tokenizer, queries, 128, 16)),
                        ("generation (32 tokens)", lambda: greedy_answers(model, tokenizer, prompts, 32, 16))):
        start = time.perf_counter()
        work()
        print(f"evaluation, {label}: {len(queries) / (time.perf_counter() - start):.1f} examples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
