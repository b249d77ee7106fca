"""Sharded weights (FSDP2) and evaluation on every process, on CPU: torchrun, 2 processes, gloo, tiny-random-llama,
OMP_NUM_THREADS=1, and a process-group timeout (``OBLIVIATE_PROCESS_TIMEOUT``) so that a desync fails instead of
hanging.

Tolerances. Evaluation divided over processes runs the very batches one process would (same order, same padding):
with whole weights on every process (DDP) per-example values agree bitwise here (1e-9 relative allows another
BLAS); with sharded weights each forward runs on weights gathered into other buffers, whose memory layout lets
BLAS pick other kernels: measured 6e-8 relative, so 1e-6. Training: FSDP reduce-scatters the two
processes' gradients where one process with accumulation 2 sums them in autograd; the summation order changes the
float32 rounding, measured at 5e-6 relative on the gradient norm (a norm over ~3 M elements) and 1e-7 on the loss
after four steps. 5e-5 leaves a margin of 10 over the measured gap and stays far below what a wrong shard or a
missing gradient average does (a change at the first step of ~1e-2).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from obliviate.cli import run
from obliviate.experiment import run_unlearning

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sharding")]

ROOT = Path(__file__).resolve().parents[1]
TRAINING_TOLERANCE, RESUMED_TOLERANCE = 5e-5, 5e-4
EVALUATION_TOLERANCE = {"none": 1e-9, "fsdp": 1e-6}


def command(processes: int, tmp_path: Path, cache_dir: Path, name: str, *extra: str, entry: str = "unlearn_model.py",
            config: str = "npo.json") -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    return [*launcher, str(ROOT / "src" / "exec" / entry),
            "--config_file", str(ROOT / "configs" / "synthetic" / config),
            "--overall.model_name", "tiny-random-llama", "--overall.cache_dir", str(cache_dir),
            "--dataset.data_dir", str(tmp_path / "data"), "--logger.json.root", str(tmp_path / "results"),
            "--logger.name", name, "--finetune.max_steps", "2", "--unlearn.lr", "1e-3", "--eval.max_examples", "4",
            "--eval.max_new_tokens", "4", "--eval.metrics", "prob,rouge_l_recall,truth_ratio", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "OBLIVIATE_PROCESS_TIMEOUT": "300"}


def launch(arguments: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(arguments, capture_output=True, text=True, env=environment(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def folder(tmp_path: Path, name: str, kind: str = "NPO") -> Path:
    return tmp_path / "results" / "synthetic" / kind / name


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def close(a: float, b: float, tolerance: float) -> bool:
    return a == pytest.approx(b, rel=tolerance, abs=1e-12)


def same_numbers(a, b, tolerance: float, where: str = "") -> None:
    """Every number of two result trees within ``tolerance`` (relative), every other value equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            same_numbers(a[key], b[key], tolerance, f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            same_numbers(x, y, tolerance, f"{where}[{index}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert close(a, b, tolerance), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, smollm2_dir):
    """A results root and a cache with the fine-tuned target and retain models, built once for this module by one
    process (as a multi-process run requires), and the runs launched so far (several tests compare to one)."""
    tmp_path = tmp_path_factory.mktemp("sharding")
    cache_dir = tmp_path / "cache"
    (cache_dir / "models").mkdir(parents=True)
    (cache_dir / "models" / smollm2_dir.name).symlink_to(smollm2_dir)
    launch(command(1, tmp_path, cache_dir, "prepare", "--unlearn.max_steps", "1", entry="finetune.py"))
    return tmp_path, cache_dir


@pytest.fixture(scope="module")
def launched() -> dict[str, subprocess.CompletedProcess]:
    return {}


def launch_once(launched: dict, name: str, arguments: list[str]) -> None:
    """Launch ``arguments`` unless a test of this module already did."""
    if name not in launched:
        launched[name] = launch(arguments)


def test_fsdp_on_two_processes_trains_as_one_process_with_twice_the_accumulation(prepared):
    tmp_path, cache_dir = prepared
    common = ["--unlearn.max_steps", "4", "--unlearn.eval_every", "2", "--unlearn.best_metric", "forget.prob",
              "--unlearn.best_goal", "min", "--unlearn.save_model", "true"]
    launch(command(1, tmp_path, cache_dir, "one", *common, "--unlearn.gradient_accumulation_steps", "2"))
    attack = ["--attack.datasets", "relearn", "--attack.max_steps", "2", "--attack.num_examples", "2"]
    launch(command(2, tmp_path, cache_dir, "fsdp", *common, *attack, "--overall.sharding", "fsdp"))
    one, fsdp = folder(tmp_path, "one"), folder(tmp_path, "fsdp")
    curve = json.loads((fsdp / "attacks.json").read_text())["relearn"]  # the attack fine-tunes sharded weights too
    assert [p["step"] for p in curve] == [0, 2] and curve[0]["forget"] == json.loads(
        (fsdp / "metrics.json").read_text())["after"]["forget"]
    for a, b in zip(records(one / "train_log.jsonl"), records(fsdp / "train_log.jsonl"), strict=True):
        for key in ("loss", "npo", "retain_nll", "grad_norm"):
            assert close(a[key], b[key], TRAINING_TOLERANCE), (a["step"], key)
    same_numbers(json.loads((one / "metrics.json").read_text()), json.loads((fsdp / "metrics.json").read_text()),
                 TRAINING_TOLERANCE)
    assert [p["step"] for p in records(fsdp / "eval_log.jsonl")] == [0, 2, 4]  # every process evaluated, one wrote
    assert json.loads((fsdp / "env.json").read_text())["world_size"] == 2
    # the saved model is an ordinary save_pretrained folder of the whole weights, gathered from the shards
    saved, reference = load_file(str(fsdp / "model" / "model.safetensors")), load_file(
        str(one / "model" / "model.safetensors"))
    assert set(saved) == set(reference)
    assert all(torch.allclose(saved[k], reference[k], rtol=TRAINING_TOLERANCE, atol=1e-7) for k in saved)
    assert (fsdp / "model" / "config.json").is_file() and (fsdp / "model" / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("sharding", ["none", "fsdp"])
def test_evaluation_divided_over_processes_equals_one_process_per_example(prepared, launched, sharding):
    tmp_path, cache_dir = prepared
    evaluate = ["--eval.model", "target", "--eval.max_examples", "7", "--eval.batch_size", "3",  # 3 batches: uneven
                "--eval.metrics", "prob,rouge_l_recall,truth_ratio,mcq_acc"]  # mcq_acc: lm-eval's batches divided
    launch_once(launched, "alone", command(1, tmp_path, cache_dir, "alone", *evaluate, entry="evaluate.py"))
    shutil.rmtree(cache_dir / "evaluations", ignore_errors=True)  # computed again, not read from the cache
    launch(command(2, tmp_path, cache_dir, f"divided_{sharding}", *evaluate, "--overall.sharding", sharding,
                   entry="evaluate.py"))
    alone = json.loads((folder(tmp_path, "alone", "evaluations") / "per_example.json").read_text())
    divided = json.loads((folder(tmp_path, f"divided_{sharding}", "evaluations") / "per_example.json").read_text())
    same_numbers(alone, divided, EVALUATION_TOLERANCE[sharding])  # scores and greedy generations, split by split
    assert alone["evaluated"]["forget"]["generations"]["rouge_l_recall"][6]["generation"] is not None


def stop_after_checkpoint(arguments: list[str], run: Path, at_least: int) -> None:
    """Run ``arguments`` and stop it (SIGTERM to its process group) once it saved a checkpoint of step ``at_least``
    or later, as a user's Ctrl-C or a scheduler's preemption does; the run is left as ``<run>.failed``."""
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=environment(), start_new_session=True)
    progress = run.with_name(run.name + ".incomplete") / "checkpoint" / "progress.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads(progress.read_text())["step"] >= at_least:
                os.killpg(process.pid, signal.SIGTERM)
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    process.communicate(timeout=300)
    assert (run.with_name(run.name + ".failed") / "checkpoint").is_dir(), "the run was not stopped with saved state"


@pytest.mark.parametrize("resumed_on", [2, 1])
def test_a_stopped_fsdp_run_resumes_on_two_processes_or_one_and_ends_the_same(prepared, launched, resumed_on):
    tmp_path, cache_dir = prepared
    steps = ["--unlearn.max_steps", "8", "--unlearn.save_every", "2", "--eval.before", "false", "--eval.metrics",
             "prob"]
    launch_once(launched, "whole", command(2, tmp_path, cache_dir, "whole", *steps, "--overall.sharding", "fsdp"))
    name = f"stopped_{resumed_on}"
    stop_after_checkpoint(command(2, tmp_path, cache_dir, name, *steps, "--overall.sharding", "fsdp"),
                          folder(tmp_path, name), 4)
    resumed = (command(2, tmp_path, cache_dir, name, *steps, "--overall.sharding", "fsdp",
                       "--logger.resume", "true") if resumed_on == 2 else
               command(1, tmp_path, cache_dir, name, *steps, "--unlearn.gradient_accumulation_steps", "2",
                       "--logger.resume", "true"))
    launch(resumed)
    a = records(folder(tmp_path, "whole") / "train_log.jsonl")
    b = records(folder(tmp_path, name) / "train_log.jsonl")
    assert [r["step"] for r in b] == list(range(1, 9))
    # the same processes resume bitwise; one process continues with its own summation order, whose rounding
    # gap to FSDP's grows with the steps (measured 6e-5 relative on the gradient norm after 16 steps)
    tolerance = 0.0 if resumed_on == 2 else RESUMED_TOLERANCE
    for x, y in zip(a, b, strict=True):
        assert close(x["loss"], y["loss"], tolerance) and close(x["grad_norm"], y["grad_norm"], tolerance), x["step"]
    same_numbers(json.loads((folder(tmp_path, "whole") / "metrics.json").read_text()),
                 json.loads((folder(tmp_path, name) / "metrics.json").read_text()), tolerance)


def test_lora_adapters_train_sharded(prepared):
    tmp_path, cache_dir = prepared
    lora = ["--unlearn.max_steps", "3", "--lora.enabled", "true", "--lora.dropout", "0", "--unlearn.lr", "1e-2"]
    launch(command(1, tmp_path, cache_dir, "lora_one", *lora, "--unlearn.gradient_accumulation_steps", "2"))
    launch(command(2, tmp_path, cache_dir, "lora_fsdp", *lora, "--overall.sharding", "fsdp"))
    one = records(folder(tmp_path, "lora_one") / "train_log.jsonl")
    fsdp = records(folder(tmp_path, "lora_fsdp") / "train_log.jsonl")
    assert all(close(a["loss"], b["loss"], TRAINING_TOLERANCE) for a, b in zip(one, fsdp, strict=True))
    adapter = load_file(str(folder(tmp_path, "lora_fsdp") / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in key for key in adapter)  # gathered whole: the adapter's full shapes
    reference = load_file(str(folder(tmp_path, "lora_one") / "adapter" / "adapter_model.safetensors"))
    assert {k: v.shape for k, v in adapter.items()} == {k: v.shape for k, v in reference.items()}


@pytest.mark.parametrize("extra,message", [
    (["--unlearn.unlearn_method", "RMU"], "RMU's term rmu stops the forward pass at layer"),
    (["--unlearn.unlearn_method", "SAM_NPO"], "crashes under FSDP2"),
    (["--unlearn.unlearn_method", "GA_KL"], "needs a frozen copy of the starting model"),
    (["--unlearn.unlearn_method", "ILU", "--unlearn.ILU.environments", "synthetic:math_train"],
     "use unlearn.ILU.w_form logits"),
    (["--unlearn.unlearn_method", "ULD"], "ULD combines the target with an assistant model"),
    (["--unlearn.g_effect_every", "1"], "unlearn.g_effect_every takes gradients with torch.autograd.grad"),
    (["--attack.datasets", "quantize:4"], "attack quantize:4 rounds whole weight matrices"),
    (["--lora.enabled", "true", "--lora.merge", "true"], "lora.merge and attacks merge the adapters"),
    (["--eval.metrics", "prob,mia_gradnorm"], "eval.metrics mia_gradnorm does not run on sharded weights"),
])
def test_what_does_not_run_sharded_is_refused_in_one_line_before_any_work(tmp_path, capsys, extra, message):
    argv = ["--config_file", str(ROOT / "configs" / "synthetic" / "npo.json"), "--overall.model_name",
            "tiny-random-llama", "--logger.json.root", str(tmp_path / "results"), "--overall.sharding", "fsdp",
            "--finetune.enabled", "false", "--dataset.data_dir", str(tmp_path / "data"), "--eval.metrics", "prob",
            "--unlearn.RMU.layer", "1", "--unlearn.RMU.trained_layers", "1", "--unlearn.ULD.num_layers", "1", *extra]
    assert run(run_unlearning, "unlearn_model.py", argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "results").exists()
