"""Resume: a run interrupted after a saved state and rerun with --logger.resume true ends exactly like an
uninterrupted one (bitwise on CPU: the same seeded data stream, optimiser, scheduler, RNG and method state)."""

import json
from pathlib import Path

import pytest

from obliviate.cli import run
from obliviate.experiment import run_unlearning
from obliviate.loggers.json_logger import RunFolder, RunOptions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def argv(tmp_path, cache_dir, name, *extra):
    return ["--config_file", str(ROOT / "configs" / "synthetic" / "pdu.json"), "--overall.model_name",
            "tiny-random-llama", "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--logger.name", name, "--finetune.max_steps", "2",
            "--unlearn.max_steps", "6", "--unlearn.lr", "1e-3", "--unlearn.save_every", "2",
            "--unlearn.eval_every", "3", "--unlearn.best_metric", "forget.prob", "--unlearn.best_goal", "min",
            "--eval.max_examples", "4", "--eval.metrics", "prob", *extra]


def unlearn(arguments):
    return run(run_unlearning, "unlearn_model.py", arguments)


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, cache_dir, monkeypatch, capsys):
    assert unlearn(argv(tmp_path, cache_dir, "straight")) == 0
    real_log_step = RunFolder.log_step

    def interrupt_at_step_5(self, record):
        real_log_step(self, record)
        if record["step"] == 5:
            raise KeyboardInterrupt
    monkeypatch.setattr(RunFolder, "log_step", interrupt_at_step_5)
    assert unlearn(argv(tmp_path, cache_dir, "stopped")) == 130
    hint = "rerun the same command with --logger.name stopped --logger.resume true to continue after step 4"
    assert hint in capsys.readouterr().err
    monkeypatch.setattr(RunFolder, "log_step", real_log_step)
    assert unlearn(argv(tmp_path, cache_dir, "stopped", "--unlearn.lr", "2e-3", "--logger.resume", "true")) == 2
    assert "had unlearn.lr=0.001, this command 0.002" in capsys.readouterr().err
    assert unlearn(argv(tmp_path, cache_dir, "stopped", "--logger.resume", "true")) == 0

    folders = {name: tmp_path / "results" / "synthetic" / "PDU" / name for name in ("straight", "stopped")}
    logs = {name: [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
            for name, folder in folders.items()}
    assert [r["step"] for r in logs["stopped"]] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "logit_margin", "retain_nll", "dual", "grad_norm"):
        assert [r[key] for r in logs["stopped"]] == [r[key] for r in logs["straight"]], key
    metrics = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in folders.items()}
    assert metrics["stopped"]["after"] == metrics["straight"]["after"]
    assert metrics["stopped"]["best"] == metrics["straight"]["best"]
    evaluations = {name: (folder / "eval_log.jsonl").read_text() for name, folder in folders.items()}
    assert evaluations["stopped"] == evaluations["straight"]
    assert not (folders["stopped"] / "checkpoint").exists() and not (folders["stopped"] / "failure.json").exists()
    assert not list(folders["stopped"].parent.glob("*.failed"))


def test_resume_needs_a_run_name(tmp_path):
    from obliviate.errors import UserError

    with pytest.raises(UserError, match="logger.resume needs the logger.name"):
        RunFolder(RunOptions(root=tmp_path, task="task", kind="GA", resume=True))
