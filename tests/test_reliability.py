"""Runs that stop cleanly: a non-finite step is never applied and leaves a failed folder, interruptions are one
line, run folders are claimed atomically, metrics of a collapsed model stay finite, JSON stays strict."""

import json
import math
import re
import threading
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from obliviate.cli import run
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.errors import NonFiniteStep, UserError
from obliviate.evaluation.metrics.tofu import option_share
from obliviate.evaluation.queries import bounded_exp
from obliviate.experiment import run_unlearning
from obliviate.io import write_json_atomic
from obliviate.loggers.json_logger import OWNER_FILE, RunFolder, RunOptions
from obliviate.methods import METHODS
from obliviate.models.embedded import tiny_random_llama
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig
from obliviate.unlearner import Unlearner

ROOT = Path(__file__).resolve().parents[1]


def training_config(steps=3):
    return TrainingConfig(lr=1e-3, num_epochs=1, max_steps=steps, gradient_accumulation_steps=1, weight_decay=0.0,
                          warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0, logging_steps=1,
                          batch_size=2)


def test_a_non_finite_step_is_not_applied_and_names_the_step_and_terms(tokenizer):
    model = tiny_random_llama(tokenizer)
    data = encode_dataset(tokenizer, [Example(f"Q{i}?", f"A{i}.") for i in range(4)], PromptFormat(), 32)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    accelerator = Accelerator(cpu=True)
    with pytest.raises(NonFiniteStep, match=r"train step 1: the loss or gradient is not finite \(forget_nll=nan, "
                                            r"loss=nan"):
        train(model, METHODS.get("GA").build(), {"forget": data}, "forget", training_config(), accelerator, 0)
    assert all(torch.equal(p.nan_to_num(), start[n].nan_to_num()) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not accelerator._optimizers and not accelerator._models  # released even on failure


def test_training_releases_the_optimizer(tokenizer):
    model = tiny_random_llama(tokenizer)
    data = encode_dataset(tokenizer, [Example(f"Q{i}?", f"A{i}.") for i in range(4)], PromptFormat(), 32)
    accelerator = Accelerator(cpu=True)
    train(model, METHODS.get("GA").build(), {"forget": data}, "forget", training_config(1), accelerator, 0)
    assert not accelerator._optimizers and not accelerator._schedulers and not accelerator._models


def cli_argv(tmp_path, cache_dir, *extra):
    return ["--config_file", str(ROOT / "configs" / "synthetic" / "ga.json"), "--overall.model_name",
            "tiny-random-llama", "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--unlearn.max_steps", "2", "--finetune.max_steps", "2",
            "--eval.max_examples", "4", "--eval.metrics", "prob", "--logger.name", "run", *extra]


def test_a_run_with_nan_weights_stops_at_step_1_and_is_marked_failed(tmp_path, cache_dir, tokenizer, capsys):
    model = tiny_random_llama(tokenizer)
    with torch.no_grad():
        model.lm_head.weight[5, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan_model")
    tokenizer.save_pretrained(tmp_path / "nan_model")
    argv = cli_argv(tmp_path, cache_dir, "--overall.model_name", str(tmp_path / "nan_model"), "--finetune.enabled",
                    "false", "--eval.before", "false")
    assert run(run_unlearning, "unlearn_model.py", argv) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: unlearn (GA) step 1: the loss or gradient is not finite") and "run.failed" in error
    method_folder = tmp_path / "results" / "synthetic" / "GA"
    assert sorted(p.name for p in method_folder.iterdir()) == ["run.failed"]
    failed = method_folder / "run.failed"
    assert json.loads((failed / "failure.json").read_text())["step"] == 1
    assert not (failed / "metrics.json").exists() and not (failed / OWNER_FILE).exists()


def test_an_interrupted_run_is_one_line_and_leaves_a_failed_folder(tmp_path, cache_dir, capsys, monkeypatch):
    def interrupted(self, *args):
        raise KeyboardInterrupt
    monkeypatch.setattr(Unlearner, "_unlearn", interrupted)
    assert run(run_unlearning, "unlearn_model.py", cli_argv(tmp_path, cache_dir)) == 130
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: interrupted; the partial run") and "rerun the same command" in error
    failed = tmp_path / "results" / "synthetic" / "GA" / "run.failed"
    assert json.loads((failed / "failure.json").read_text())["reason"] == "interrupted"


def test_two_runs_claiming_one_name_at_once_one_proceeds(tmp_path):
    outcomes = []

    def claim():
        try:
            RunFolder(RunOptions(root=tmp_path, task="task", kind="GA", name="same")).start({"n": 1})
            outcomes.append("started")
        except UserError as error:
            outcomes.append(str(error))
    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes)[1] == "started" and "is running now" in sorted(outcomes)[0]
    assert json.loads((tmp_path / "task" / "GA" / "same.incomplete" / "config.json").read_text()) == {"n": 1}


def test_a_dead_runs_work_folder_is_reclaimed_and_a_finished_one_is_kept(tmp_path):
    work = tmp_path / "task" / "GA" / "old.incomplete"
    work.mkdir(parents=True)
    (work / OWNER_FILE).write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": 2**22 + 17}))
    folder = RunFolder(RunOptions(root=tmp_path, task="task", kind="GA", name="old"))
    folder.start({})
    assert folder.finish().name == "old"
    with pytest.raises(UserError, match="already exists"):
        RunFolder(RunOptions(root=tmp_path, task="task", kind="GA", name="old"))


def test_a_results_root_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="logger.json.root '.*file' is a file, not a folder"):
        RunFolder(RunOptions(root=tmp_path / "file", task="task", kind="GA", name="x"))


def test_collapsed_model_arithmetic_stays_finite():
    assert bounded_exp(5000.0) == math.exp(700.0) and bounded_exp(-5000.0) == math.exp(-700.0)
    assert option_share(1000.0, [1000.0, 3000.0]) == pytest.approx(0.5)
    assert option_share(9000.0, [8000.0]) == pytest.approx(0.0) and option_share(10.0, [9000.0]) == 1.0


def test_json_files_are_strict(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [None, 1.0]}


def test_model_folders_without_safe_weights_or_with_broken_ones_are_one_line(tmp_path, tokenizer):
    from obliviate.models.loading import load_model, resolve_model

    tiny_random_llama(tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    content = weights.read_bytes()
    weights.unlink()
    with pytest.raises(UserError, match="has no weights \\(model.safetensors\\)"):
        resolve_model(str(tmp_path / "model"))
    torch.save({"x": torch.zeros(1)}, tmp_path / "model" / "pytorch_model.bin")
    with pytest.raises(UserError, match="has only pickled weights .* refused because unpickling can run code"):
        resolve_model(str(tmp_path / "model"))
    weights.write_bytes(content[: len(content) // 2])  # a truncated cache entry
    source = resolve_model(str(tmp_path / "model"))
    with pytest.raises(UserError, match="cannot be read .*delete that folder and rerun to rebuild it"):
        load_model(source, tmp_path / "cache", torch.device("cpu"), torch.float32)


def test_records_with_null_or_empty_text_and_bad_json_lines_are_one_line(tmp_path):
    from obliviate.data.sources import load_examples

    cases = {"null.jsonl": ('{"question": "Q?", "answer": "A."}\n{"question": null, "answer": "B."}\n',
                            "record 2': question is null, not a text"),
             "empty.jsonl": ('{"question": "Q?", "answer": "  "}\n', "record 1': answer is empty"),
             "broken.jsonl": ('{"question": "Q?", "answer": "A."}\n\n{"question": "Q?"\n', "line 3 is not valid JSON")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=message):
            load_examples(str(tmp_path / name), tmp_path)


def test_masks_must_be_boolean_and_select_something(tmp_path):
    from safetensors.torch import save_file

    from obliviate.masks.mask import ParameterMask

    save_file({"w": torch.tensor([0.3, 0.0])}, str(tmp_path / "scores.safetensors"))
    with pytest.raises(UserError, match="holds values other than 0/1 in 'w'"):
        ParameterMask.load(tmp_path / "scores.safetensors")
    save_file({"w": torch.tensor([0.0, 0.0])}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(UserError, match="selects no element \\(all False\\)"):
        ParameterMask.load(tmp_path / "empty.safetensors").check({"w": (2,)}, "'empty'")


def test_asking_for_wandb_without_the_package_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(UserError, match="logger.wandb is true but the wandb package is not installed"):
        RunFolder(RunOptions(root=tmp_path, task="task", kind="GA", name="x", wandb=True))


def _config_folder(t):
    return ["--config_file", str(t)]


def _latin1_config(t):
    (t / "latin1.json").write_bytes('{"unlearn": {"lr": 1e-5}, "_comment": "caf\xe9"}'.encode("latin-1"))
    return ["--config_file", str(t / "latin1.json")]


def _custom_code_model(t):
    folder = t / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "my_own_lm", "architectures": ["MyOwnLM"],
                                                    "auto_map": {"AutoConfig": "modeling.MyConfig"}}))
    return ["--overall.model_name", str(folder)]


def _results_root_file(t):
    (t / "a_file").write_text("")
    return ["--logger.json.root", str(t / "a_file")]


@pytest.mark.parametrize("arguments,message", [
    (_config_folder, "config file '.*' is a folder, not a file"),
    (_latin1_config, "is not UTF-8 text \\(byte"),
    (lambda t: ["--unlearn.mask_path", str(t / "m.safetensors"), "--mask.include", "mlp(["],
     "mask.include 'mlp\\(\\[' is not a valid regular expression"),
    (lambda t: ["--unlearn.mask_path", str(t)], "unlearn.mask_path '.*' is a folder; name a mask file"),
    (_custom_code_model, "needs its own Python code \\(trust_remote_code\\), which is refused"),
    (_results_root_file, "logger.json.root '.*a_file' is a file, not a folder"),
])
def test_bad_inputs_are_one_line_before_any_work(tmp_path, cache_dir, capsys, arguments, message):
    base = ["--overall.model_name", "tiny-random-llama", "--overall.cache_dir", str(cache_dir),
            "--dataset.data_dir", str(tmp_path / "data"), "--logger.json.root", str(tmp_path / "results"),
            "--eval.metrics", "prob"]
    assert run(run_unlearning, "unlearn_model.py", [*base, *arguments(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ")
    assert re.search(message, error[0]), error[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_sigterm_stops_a_run_in_one_line_and_marks_it_failed(tmp_path, cache_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, str(ROOT / "src" / "exec" / "unlearn_model.py"),
               *cli_argv(tmp_path, cache_dir, "--unlearn.max_steps", "100000", "--finetune.enabled", "false",
                         "--eval.before", "false")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    log = tmp_path / "results" / "synthetic" / "GA" / "run.incomplete" / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 130
    assert error.strip().splitlines()[-1].startswith("error: interrupted; the partial run")
    failed = tmp_path / "results" / "synthetic" / "GA" / "run.failed"
    assert json.loads((failed / "failure.json").read_text())["reason"] == "interrupted"
