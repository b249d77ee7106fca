"""Evaluation during unlearning and the best checkpoint: the selection rule on hand-made points, its checks, and
a run whose best point is evaluated in full and saved beside the last one."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from obliviate.cli import run
from obliviate.errors import UserError
from obliviate.evaluation.during_training import BestRule
from obliviate.experiment import run_unlearning

ROOT = Path(__file__).resolve().parents[1]
POINTS = [{"step": 0, "forget": {"forget_quality": 0.001}, "retain": {"prob": 0.90}},
          {"step": 5, "forget": {"forget_quality": 0.30}, "retain": {"prob": 0.88}},
          {"step": 10, "forget": {"forget_quality": 0.60}, "retain": {"prob": 0.80}},   # too much utility lost
          {"step": 15, "forget": {"forget_quality": 0.30}, "retain": {"prob": 0.86}},   # ties step 5: later
          {"step": 20, "forget": {"forget_quality": 0.05}, "retain": {"prob": 0.90}}]


def test_the_rule_maximises_among_eligible_points_earliest_on_ties():
    rule = BestRule("forget.forget_quality", "max", "retain.prob>=0.95")  # retain.prob ≥ 0.855
    assert rule.choose(POINTS)["step"] == 5
    assert BestRule("forget.forget_quality", "max").choose(POINTS)["step"] == 10
    assert BestRule("forget.forget_quality", "min", "retain.prob>=0.95").choose(POINTS)["step"] == 20
    assert BestRule("forget.forget_quality", "max", "retain.prob>=1.01").choose(POINTS) is None
    assert BestRule("forget.forget_quality", "max", "retain.prob<=0.9").choose(POINTS)["step"] == 10


@pytest.mark.parametrize("metric,constraint,message", [
    ("holdout.prob", "", "unlearn.best_metric 'holdout.prob' is not evaluated during unlearning"),
    ("forget.rouge_l_recall", "", "unlearn.best_metric 'forget.rouge_l_recall' is not evaluated"),
    ("forget.prob", "retain.prob>0.9", "unlearn.best_constraint 'retain.prob>0.9' is not <split>.<metric>>=<ratio>"),
])
def test_rules_naming_what_is_not_evaluated_are_refused(metric, constraint, message):
    with pytest.raises(UserError, match=message):
        BestRule.parse(metric, "max", constraint, ["forget", "retain"], ["prob"])


def argv(tmp_path, cache_dir, *extra):
    return ["--config_file", str(ROOT / "configs" / "synthetic" / "ga.json"), "--overall.model_name",
            "tiny-random-llama", "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--logger.name", "run", "--finetune.max_steps", "2",
            "--unlearn.max_steps", "6", "--unlearn.lr", "1e-3", "--eval.max_examples", "4", "--eval.metrics", "prob",
            *extra]


@pytest.mark.slow
def test_best_checkpoint_is_evaluated_and_saved_beside_the_last(tmp_path, cache_dir):
    assert run(run_unlearning, "unlearn_model.py", argv(
        tmp_path, cache_dir, "--unlearn.eval_every", "2", "--unlearn.best_metric", "forget.prob",
        "--unlearn.best_goal", "max", "--unlearn.save_model", "true")) == 0
    folder = tmp_path / "results" / "synthetic" / "GA" / "run"
    points = [json.loads(line) for line in (folder / "eval_log.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [0, 2, 4, 6]
    assert points[1]["forget"]["prob"] > points[3]["forget"]["prob"]  # gradient ascent forgets step by step
    best = json.loads((folder / "best_checkpoint.json").read_text())
    assert best["step"] == 2 and best["rule"] == "max forget.prob"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["best"]["forget"]["prob"] == pytest.approx(points[1]["forget"]["prob"], rel=1e-6)
    assert metrics["after"]["forget"]["prob"] == pytest.approx(points[3]["forget"]["prob"], rel=1e-6)
    last, chosen = (load_file(str(folder / name / "model.safetensors")) for name in ("model", "model_best"))
    assert any(not last[key].equal(chosen[key]) for key in last)
    assert (folder / "eval_curves.png").stat().st_size > 0


def test_a_rule_without_evaluation_during_unlearning_fails_before_any_work(tmp_path, cache_dir, capsys):
    assert run(run_unlearning, "x", argv(tmp_path, cache_dir, "--unlearn.best_metric",
                                                         "forget.prob")) == 2
    assert "set unlearn.eval_every" in capsys.readouterr().err
    assert not (tmp_path / "results" / "synthetic").exists()


@pytest.mark.slow
def test_tensorboard_gets_training_evaluation_and_attack_curves(tmp_path, cache_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run(run_unlearning, "unlearn_model.py", argv(
        tmp_path, cache_dir, "--unlearn.eval_every", "3", "--logger.tensorboard", "true",
        "--attack.datasets", "relearn", "--attack.max_steps", "2", "--attack.eval_every", "1")) == 0
    events = EventAccumulator(str(tmp_path / "results" / "synthetic" / "GA" / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_log/loss", "train_log/forget_nll", "eval_log/forget/prob", "eval_log/retain/prob",
            "attack_train_log/relearn/loss", "attacks/relearn/forget/prob"} <= tags
    assert [event.step for event in events.Scalars("train_log/loss")] == [1, 2, 3, 4, 5, 6]
    assert [event.step for event in events.Scalars("eval_log/forget/prob")] == [0, 3, 6]
