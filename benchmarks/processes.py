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

Then evaluation divided over processes: ``evaluate.py`` of the base model on ``--examples`` examples per split
(``--metrics``: scoring, greedy generation, and mcq_acc through lm-eval), with one thread per process, as each
process of a GPU run has its own device: 1 process, 2 processes (DDP) and 2 processes (FSDP); the seconds of the
``evaluate`` stage.
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


def evaluation_seconds(args: argparse.Namespace, root: Path) -> dict[str, float]:
    """The ``evaluate`` stage's seconds of evaluate.py on 1 process and on 2 (whole and sharded), 1 thread each."""
    seconds = {}
    for name, processes, extra in (("1 process", 1, []), ("2 processes (DDP)", 2, []),
                                   ("2 processes (FSDP)", 2, ["--overall.sharding", "fsdp"])):
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                    if processes > 1 else [sys.executable])
        run_name = f"evaluate{len(seconds)}"
        cache = root / f"cache_{run_name}"  # a cache of its own: nothing evaluated is read from another run
        (cache / "models").mkdir(parents=True)
        prepared = ROOT / "files" / "cache" / "models" / args.model
        if prepared.is_dir():  # the prepared embedded model, shared
            (cache / "models" / args.model).symlink_to(prepared)
        subprocess.run([*launcher, str(ROOT / "src" / "exec" / "evaluate.py"), "--config_file",
                        str(ROOT / "configs" / "synthetic" / f"{args.method}.json"), "--overall.model_name", args.model,
                        "--finetune.enabled", "false", "--eval.metrics", args.metrics,
                        "--eval.max_examples", str(args.examples), "--logger.json.root", str(root),
                        "--overall.cache_dir", str(cache), "--logger.name", run_name, *extra],
                       env=environment(1), check=True, capture_output=True)
        record = json.loads(next(root.glob(f"*/evaluations/{run_name}/env.json")).read_text())
        seconds[name] = record["wall_time_seconds"]["evaluate"]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--method", default="npo")
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--metrics", default="prob,rouge_l_recall,truth_ratio,mcq_acc", help="evaluated metrics")
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
        evaluation = evaluation_seconds(args, root)
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
    print(f"\nevaluate.py, {args.examples} examples per split, one thread per process")
    print("| processes | seconds of evaluation | × of 1 process |\n|---|---|---|")
    for name, value in evaluation.items():
        print(f"| {name} | {value:.1f} | {value / evaluation['1 process']:.2f} |")


if __name__ == "__main__":
    main()
