"""Benchmark: the cost of one optimiser step of every registered unlearning method.

    python benchmarks/step_cost.py [--model smollm2-135m-instruct|tiny-random-llama] [--steps 6] [--methods NPO,RMU]
        [--set unlearn.ILU.w_form=logits ...]   (more overrides of the methods' configs, e.g. to compare variants)

Each method runs in its own process (so its peak memory is its own) through the real engine: its plain
``configs/synthetic`` file (e.g. npo.json, not npo_lora.json) at batch size 4 × max_length 64, no fine-tuning
(the base model is the target: the cost does not depend on the weights), no evaluation, ``--steps`` steps.
Reported per method:

* seconds per optimiser step, the first step excluded (it pays allocation and warm-up);
* prepare seconds: the one-time work before the first step (encoding, caching S_ref, adversarial targets…);
* peak RSS of the process (model, optimiser state, activations; the same model load for every method);
* forward and backward passes per step, COUNTED by hooks: a forward pass is a call of the model's top
  module (with grad or without: reference passes count as ``nograd``); a backward pass is the gradient
  reaching the output of a decoder layer of a forward pass (counted once per forward);
* cost ratio: seconds per step ÷ the cost of those passes at GradDiff's price, GradDiff (one forget and one
  retain forward+backward) being 1. A forward+backward is priced at one unit, a forward without grad at
  one third (a backward costs about two forwards). A ratio near 1 means the method costs what its passes
  cost; above 1, it spends time outside the model's passes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook  # noqa: E402
from transformers import PreTrainedModel  # noqa: E402

from obliviate import unlearner as unlearner_module  # noqa: E402
from obliviate.cli import run  # noqa: E402
from obliviate.methods import METHODS  # noqa: E402

NO_GRAD_FORWARD_PRICE = 1 / 3


class PassCounter:
    """Counts forward passes of every causal LM in the process (the trained one, a frozen reference copy, the
    two halves of a logit-difference model), with and without grad, and the backward passes that reach them,
    by global module hooks (removed by :meth:`close`)."""

    def __init__(self) -> None:
        self.forward = self.nograd = self.backward = 0
        self._pass = 0
        self._hooked: set[int] = set()
        self.handles = [register_module_forward_pre_hook(self._on_forward),
                        register_module_forward_hook(self._on_layer)]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _on_forward(self, module: torch.nn.Module, args) -> None:
        if isinstance(module, PreTrainedModel) and type(module).__name__.endswith("ForCausalLM"):
            self._pass += 1
            if torch.is_grad_enabled():
                self.forward += 1
            else:
                self.nograd += 1

    def _on_layer(self, module: torch.nn.Module, args, output) -> None:
        if not type(module).__name__.endswith("DecoderLayer"):
            return
        hidden = output[0] if isinstance(output, tuple) else output
        current = self._pass
        if hidden.requires_grad and current not in self._hooked:  # the first layer of a pass with a graph
            self._hooked.add(current)
            hidden.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.forward, self.nograd, self.backward


def config_for(method: str) -> Path:
    """The method's plain synthetic config: the shortest-named file of configs/synthetic/ that runs it."""
    runs = [path for path in sorted((ROOT / "configs" / "synthetic").glob("*.json"))
            if json.loads(path.read_text()).get("unlearn", {}).get("unlearn_method") == method]
    if not runs:
        raise SystemExit(f"no configs/synthetic/*.json runs {method}")
    return min(runs, key=lambda path: len(path.stem))


def measure_one(name: str, model: str, steps: int, workdir: Path, overrides: list[str]) -> dict:
    """Run one method through the engine with counting hooks; the numbers as a dict."""
    recorded: dict = {}
    real_train = unlearner_module.train

    def counting_train(model_, objective, datasets, primary, config, accelerator, seed, **kwargs):
        counter = PassCounter()
        per_step: list[tuple[int, int, int, float]] = []

        def on_log(record):
            per_step.append((*counter.snapshot(), time.perf_counter()))
            kwargs["on_log"](record)

        start = time.perf_counter()
        try:
            result = real_train(model_, objective, datasets, primary, config, accelerator, seed,
                                **{**kwargs, "on_log": on_log})
        finally:
            counter.close()
        first, last = per_step[0], per_step[-1]
        spans = len(per_step) - 1
        recorded.update(seconds_per_step=(last[3] - first[3]) / spans,
                        forward=(last[0] - first[0]) / spans, nograd=(last[1] - first[1]) / spans,
                        backward=(last[2] - first[2]) / spans, first_step=first[3] - start,
                        train_seconds=result.seconds)
        return result

    unlearner_module.train = counting_train
    argv = ["--config_file", str(config_for(name))]
    if name == "ULD" and model == "tiny-random-llama":
        argv += ["--unlearn.ULD.num_layers", "1"]  # the tiny model has 2 layers
    argv += ["--overall.model_name", model, "--finetune.enabled", "false", "--eval.before", "false",
             "--eval.after", "false", "--eval.metrics", "prob", "--unlearn.max_steps", str(steps),
             "--unlearn.logging_steps", "1", "--dataset.batch_size", "4", "--dataset.max_length", "64",
             "--unlearn.lr_scheduler", "constant",
             "--logger.json.root", str(workdir), "--logger.name", name]
    argv += [part for override in overrides for part in (f"--{override.partition('=')[0]}", override.partition("=")[2])]
    from obliviate.experiment import run_unlearning

    wall = time.perf_counter()
    status = run(run_unlearning, "step_cost", argv)
    if status != 0:
        raise SystemExit(f"{name}: the run failed (exit {status})")
    timings = json.loads(next(workdir.rglob("env.json")).read_text())["wall_time_seconds"]
    recorded.update(method=name, wall=time.perf_counter() - wall,
                    prepare_seconds=timings["unlearn"] - recorded["train_seconds"],
                    peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return recorded


def units(row: dict) -> float:
    """The row's passes priced in forward+backward units."""
    return row["backward"] + (row["forward"] - row["backward"]) * NO_GRAD_FORWARD_PRICE + \
        row["nograd"] * NO_GRAD_FORWARD_PRICE


def table(rows: list[dict]) -> str:
    baseline = next(r for r in rows if r["method"] == "GradDiff")
    unit = baseline["seconds_per_step"] / units(baseline)
    lines = ["| method | s/step | forward (grad) | forward (no grad) | backward | cost ratio | prepare s | "
             "peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['seconds_per_step']:.3f} | {row['forward']:g} | {row['nograd']:g} | "
                     f"{row['backward']:g} | {row['seconds_per_step'] / (unit * units(row)):.2f} | "
                     f"{row['prepare_seconds']:.1f} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--methods", default=",".join(METHODS.names()))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(measure_one(arguments.one, arguments.model, arguments.steps, Path(folder), arguments.set)))
        raise SystemExit(0)
    names = arguments.methods.split(",")
    if "GradDiff" not in names:
        names.insert(0, "GradDiff")
    rows = []
    for name in names:
        output = subprocess.run([sys.executable, __file__, "--one", name, "--model", arguments.model,
                                 "--steps", str(arguments.steps),
                                 *(part for override in arguments.set for part in ("--set", override))],
                                capture_output=True, text=True)
        if output.returncode != 0:
            print(f"{name}: failed\n{output.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"{arguments.model}, batch 4 × 64 tokens, {arguments.steps} steps, {torch.get_num_threads()} threads"
          + (f", with {' '.join(arguments.set)}" if arguments.set else ""))
    print(table(rows))
