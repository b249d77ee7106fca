"""Benchmark: one process against two, whole (DDP) and sharded (FSDP), at the same effective batch; resume equality.

    python benchmarks/processes.py [--model smollm2-135m-instruct] [--steps 6] [--method npo]

Runs ``configs/synthetic/<method>.json`` through the real CLI on the base model (no fine-tuning, no evaluation, so
only training is timed), batch 4 per micro-batch, effective batch 8:

* ``one``: 1 process with gradient accumulation 2 and every core;
* ``ddp``: 2 processes (torchrun, gloo), each holding the whole model, accumulation 1, the cores shared between
  them (OMP_NUM_THREADS = cores / 2);
* ``fsdp``: the same with ``--overall.sharding fsdp``: each process holds half of every parameter, gradient and
  optimiser state;
* ``stopped``: ``fsdp`` with a checkpoint every 2 steps, stopped by SIGTERM after its checkpoint at step 2, then
  rerun with ``--logger.resume true``.

Reported per run: seconds per optimiser step (mean of the ``step_seconds`` of steps 2..N: the first pays warm-up),
each process's parameter + gradient + optimiser memory (``training_state_mb`` of env.json: the tensors it holds)
and peak resident memory, and the largest relative difference of the loss and gradient-norm curves from ``one``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(processes: int, accumulation: int, args: argparse.Namespace, root: Path, name: str, *extra: str
            ) -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    return [*launcher, str(ROOT / "src" / "exec" / "unlearn_model.py"), "--config_file",
            str(ROOT / "configs" / "synthetic" / f"{args.method}.json"), "--overall.model_name", args.model,
            "--finetune.enabled", "false", "--eval.before", "false", "--eval.after", "false",
            "--eval.metrics", "prob",
            "--logger.json.root", str(root), "--logger.name", name, "--unlearn.max_steps", str(args.steps),
            "--dataset.batch_size", "4", "--unlearn.gradient_accumulation_steps", str(accumulation), *extra]


def environment(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": os.environ.get("HF_HOME", str(ROOT / "files" / "hf_home"))}


def train_log(root: Path, name: str) -> list[dict]:
    path = next(root.glob(f"*/*/{name}/train_log.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def per_process(root: Path, name: str) -> list[dict]:
    return json.loads(next(root.glob(f"*/*/{name}/env.json")).read_text())["processes"]


def largest_difference(a: list[dict], b: list[dict], key: str) -> float:
    return max(abs(x[key] - y[key]) / max(abs(x[key]), 1e-12) for x, y in zip(a, b, strict=True))


def stop_after_checkpoint(arguments: list[str], threads: int, root: Path) -> None:
    """Start the run, SIGTERM it once its first checkpoint is written, wait for it to stop."""
    process = subprocess.Popen(arguments, env=environment(threads), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while process.poll() is None and not list(root.glob("*/*/stopped.incomplete/checkpoint/progress.json")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--method", default="npo")
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        runs = (("one", 1, 2, []), ("ddp", 2, 1, []), ("fsdp", 2, 1, ["--overall.sharding", "fsdp"]))
        for name, processes, accumulation, extra in runs:
            subprocess.run(command(processes, accumulation, args, root, name, *extra),
                           env=environment(cores // processes), check=True, capture_output=True)
        resumable = command(2, 1, args, root, "stopped", "--overall.sharding", "fsdp", "--unlearn.save_every", "2")
        stop_after_checkpoint(resumable, cores // 2, root)
        subprocess.run([*resumable, "--logger.resume", "true"], env=environment(cores // 2), check=True,
                       capture_output=True)
        logs = {name: train_log(root, name) for name in ("one", "ddp", "fsdp", "stopped")}
        memory = {name: per_process(root, name) for name in ("one", "ddp", "fsdp")}
    print(f"{args.method} on {args.model}, {args.steps} steps, effective batch 8, {cores} cores")
    print("| run | processes × accumulation | s/step | parameters + gradients + optimiser per process (MB) | "
          "peak resident memory per process (MB) | max rel. diff. loss | max rel. diff. grad norm |")
    print("|---|---|---|---|---|---|---|")
    for name, shape in (("one", "1 × 2"), ("ddp", "2 × 1, whole model each"), ("fsdp", "2 × 1, sharded"),
                        ("stopped", "2 × 1 sharded, stopped and resumed")):
        seconds = [record["step_seconds"] for record in logs[name][1:] if "step_seconds" in record]
        per_step = f"{sum(seconds) / len(seconds):.2f}" if name != "stopped" else "-"
        state = ", ".join(f"{p['training_state_mb']:.0f}" for p in memory[name]) if name in memory else "-"
        peak = ", ".join(f"{p['peak_memory_mb']:.0f}" for p in memory[name]) if name in memory else "-"
        print(f"| {name} | {shape} | {per_step} | {state} | {peak} | "
              f"{largest_difference(logs['one'], logs[name], 'loss'):.2g} | "
              f"{largest_difference(logs['one'], logs[name], 'grad_norm'):.2g} |")


if __name__ == "__main__":
    main()
