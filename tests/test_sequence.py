"""Sequential unlearning (unlearn.sequence): stages from the previous stage's weights, evaluated after each, resumed
between and inside stages to the same result as an uninterrupted run."""

import json
from pathlib import Path

import pytest

from obliviate.cli import run
from obliviate.config.loader import parse_config
from obliviate.errors import UserError
from obliviate.experiment import experiment_schema, run_unlearning
from obliviate.loggers.json_logger import RunFolder
from obliviate.plan import plan

ROOT = Path(__file__).resolve().parents[1]
STAGES = "synthetic:forget10[0:10],synthetic:forget10[10:20]"


def argv(tmp_path, cache_dir, name, *extra):
    return ["--config_file", str(ROOT / "configs" / "synthetic" / "npo.json"), "--overall.model_name",
            "tiny-random-llama", "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--logger.name", name, "--finetune.max_steps", "2",
            "--unlearn.max_steps", "3", "--unlearn.lr", "1e-3", "--unlearn.save_every", "2",
            "--unlearn.sequence", STAGES, "--eval.max_examples", "4", "--eval.metrics", "prob", *extra]


def planned(tmp_path, *extra):
    settings = parse_config(["--config_file", str(ROOT / "configs" / "synthetic" / "npo.json"),
                             "--overall.model_name", "tiny-random-llama", "--dataset.data_dir",
                             str(tmp_path / "data"), *extra], experiment_schema())
    return plan(settings)


def test_the_plan_checks_the_sequence(tmp_path):
    stages = planned(tmp_path, "--unlearn.sequence", STAGES).sequence
    assert [stage.name for stage in stages] == ["stage_1", "stage_2"]
    assert [len(stage.training_data["forget"]) for stage in stages] == [10, 10]
    assert stages[0].training_data["retain"] == stages[1].training_data["retain"]
    assert [stage.forget.name for stage in stages] == ["forget_stage1", "forget_stage2"]
    with pytest.raises(UserError, match="a sequence needs two or more"):
        planned(tmp_path, "--unlearn.sequence", "synthetic:forget10[0:5]")
    with pytest.raises(UserError, match="holds 5 examples that are not in dataset.forget_dataset_name"):
        planned(tmp_path, "--unlearn.sequence", "synthetic:forget10[0:5],synthetic:retain90[0:5]")
    with pytest.raises(UserError, match="unlearn.eval_every counts the steps of one run"):
        planned(tmp_path, "--unlearn.sequence", STAGES, "--unlearn.eval_every", "2")
    with pytest.raises(UserError, match=r"'synthetic:forget10\[30:40\]' is empty: 'synthetic:forget10' has 20"):
        planned(tmp_path, "--unlearn.sequence", "synthetic:forget10[0:5],synthetic:forget10[30:40]")


def unlearn(arguments):
    return run(run_unlearning, "unlearn_model.py", arguments)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [(2, 1), (1, 3)], ids=["inside the second stage", "between stages"])
def test_a_sequence_evaluates_every_stage_and_resumes_to_the_same_result(tmp_path, cache_dir, monkeypatch, capsys,
                                                                         stop):
    assert unlearn(argv(tmp_path, cache_dir, "straight")) == 0
    folder = tmp_path / "results" / "synthetic" / "NPO" / "straight"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"before", "stage_1", "after"}
    for stage in ("before", "stage_1", "after"):
        assert {"forget", "forget_stage1", "forget_stage2", "retain"} <= set(metrics[stage])
    before, first, last = (metrics[stage]["forget_stage1"]["prob"] for stage in ("before", "stage_1", "after"))
    assert first != before and last != first  # the first forget set moves at stage 1, and again at stage 2
    assert metrics["stage_1"]["forget_stage2"]["prob"] != metrics["after"]["forget_stage2"]["prob"]
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in log] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert (folder / "sequence.png").is_file() and not list(folder.glob("checkpoint*"))
    assert json.loads((folder / "sequence.json").read_text())["forget_sets"] == ["forget_stage1", "forget_stage2"]

    real_append = RunFolder.append_jsonl

    def interrupt(self, name, record):
        real_append(self, name, record)
        if (record.get("stage"), record.get("step")) == stop:
            raise KeyboardInterrupt
    monkeypatch.setattr(RunFolder, "append_jsonl", interrupt)
    assert unlearn(argv(tmp_path, cache_dir, "stopped")) == 130
    saved = "step 2 of stage_1" if stop == (1, 3) else "step 3 of stage_1"  # stage 2 saves first at its step 2
    assert f"--logger.resume true to continue after {saved}" in capsys.readouterr().err
    monkeypatch.setattr(RunFolder, "append_jsonl", real_append)
    assert unlearn(argv(tmp_path, cache_dir, "stopped", "--logger.resume", "true")) == 0
    resumed = tmp_path / "results" / "synthetic" / "NPO" / "stopped"
    assert json.loads((resumed / "metrics.json").read_text()) == metrics
    again = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"], r["loss"]) for r in again] == [(r["stage"], r["step"], r["loss"]) for r in log]


def test_a_study_cell_may_be_a_sequence_and_a_grid_may_vary_it(tmp_path):
    from obliviate.study.spec import load_study

    two, four = ([f"synthetic:forget10[{a}:{a + 20 // n}]" for a in range(0, 20, 20 // n)] for n in (2, 4))
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"name": "sequences", "seeds": [0], "forget_metrics": ["prob"],
                                 "overrides": {"dataset.data_dir": str(tmp_path / "data")},
                                 "methods": {"NPO": {"config_file": str(ROOT / "configs/synthetic/npo.json"),
                                                     "unlearn.sequence": [two, four]},
                                             "NPO once": {"config_file": str(ROOT / "configs/synthetic/npo.json")}}}))
    cells = load_study(study, []).cells
    sequences = sorted(len(cell.overrides.get("unlearn.sequence", [])) for cell in cells)
    assert sequences == [0, 2, 4]
