"""Several processes on CPU (torchrun, gloo): 2 processes with accumulation 1 train on exactly the micro-batches
of 1 process with accumulation 2, so the loss curve and the final metrics agree.

Tolerance: relative 1e-5. With no dropout, the two runs differ only in how the two micro-batches' gradients are
summed (autograd accumulation in one process, gloo's all-reduce average across two) and how the logged values
are averaged: float32 rounding, ~1e-7 relative per step, compounded over a few Adam steps. In practice they agree
bitwise on this machine; 1e-5 leaves room for another BLAS or summation order without hiding a real difference
(a wrong shard or a missing gradient average changes the loss at the first step by ~1e-2).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


def command(processes: int, accumulation: int, tmp_path: Path, cache_dir: Path, name: str, *extra: str) -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    return [*launcher, str(ROOT / "src" / "exec" / "unlearn_model.py"),
            "--config_file", str(ROOT / "configs" / "synthetic" / "pdu.json"), "--overall.model_name",
            "tiny-random-llama", "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--logger.name", name, "--finetune.max_steps", "2",
            "--unlearn.max_steps", "4", "--unlearn.lr", "1e-3", "--unlearn.gradient_accumulation_steps",
            str(accumulation), "--unlearn.save_every", "2", "--unlearn.eval_every", "2", "--unlearn.best_metric",
            "forget.prob", "--unlearn.best_goal", "min", "--eval.max_examples", "4", "--eval.metrics", "prob", *extra]


def launch(arguments: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(arguments, capture_output=True, text=True, env=environment, timeout=600)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=TOLERANCE, abs=1e-12)


def test_two_processes_match_one_process_with_twice_the_accumulation(tmp_path, cache_dir):
    one = launch(command(1, 2, tmp_path, cache_dir, "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = launch(command(2, 1, tmp_path, cache_dir, "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    folders = {name: tmp_path / "results" / "synthetic" / "PDU" / name for name in ("one", "two")}
    logs = {name: records(folder / "train_log.jsonl") for name, folder in folders.items()}
    assert [r["step"] for r in logs["two"]] == [1, 2, 3, 4]  # written once, by the main process
    for key in ("loss", "logit_margin", "retain_nll", "dual", "grad_norm"):
        assert all(close(a[key], b[key]) for a, b in zip(logs["one"], logs["two"])), key
    metrics = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in folders.items()}
    for stage in ("after", "best"):
        for split, values in metrics["one"][stage].items():
            assert close(values["prob"], metrics["two"][stage][split]["prob"]), (stage, split)
    assert len(records(folders["two"] / "eval_log.jsonl")) == 3  # steps 0, 2, 4: evaluated once
    assert json.loads((folders["two"] / "env.json").read_text())["world_size"] == 2
    assert not (folders["two"] / "checkpoint").exists()


def test_what_needs_one_process_is_refused_in_one_line_before_the_run_starts(tmp_path, cache_dir):
    probe = launch(command(2, 1, tmp_path, cache_dir, "probe", "--unlearn.g_effect_every", "2",
                           "--finetune.enabled", "false"))
    assert probe.returncode != 0
    assert "error: unlearn.g_effect_every needs one process" in probe.stderr
    not_cached = launch(command(2, 1, tmp_path, cache_dir, "fresh"))  # the target is not fine-tuned yet
    assert not_cached.returncode != 0
    assert "error: the target model is not fine-tuned yet, and fine-tuning runs on one process" in not_cached.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))
