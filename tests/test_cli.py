"""The whole CLI on tiny-random-llama, and every bad input: one line, exit status 2, nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from obliviate.cli import run
from obliviate.config.loader import parse_config
from obliviate.evaluation.session import EvaluationSession
from obliviate.experiment import experiment_schema, run_evaluation, run_unlearning
from obliviate.methods import METHODS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NPO_CONFIG = str(ROOT / "configs" / "synthetic" / "npo.json")


def cli(*argv):
    return run(run_unlearning, "unlearn_model.py", list(argv))


@pytest.fixture
def fast(tmp_path, cache_dir):
    """Overrides that make the default experiment a seconds-long smoke test in tmp folders."""
    return ["--config_file", NPO_CONFIG, "--overall.model_name", "tiny-random-llama",
            "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--unlearn.max_steps", "2",
            "--finetune.max_steps", "2", "--eval.max_examples", "4", "--eval.max_new_tokens", "4"]


def test_full_run_writes_every_result_file(fast, tmp_path, capsys):
    assert cli(*fast, "--logger.name", "first") == 0
    folder = tmp_path / "results" / "synthetic" / "NPO" / "first"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "env.json", "metrics.json",
                                                         "per_example.json", "summary.md", "train_log.jsonl"]
    assert "| forget | prob |" in (folder / "summary.md").read_text()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"before", "after"}
    assert set(metrics["after"]) == {"forget", "retain", "holdout", "real_authors", "world_facts", "model"}
    assert set(metrics["after"]["forget"]) == {"prob", "rouge_l_recall", "truth_ratio", "forget_quality", "mcq_acc"}
    assert set(metrics["after"]["retain"]) == {"prob", "rouge_l_recall", "truth_ratio", "mcq_acc"}
    assert set(metrics["after"]["model"]) == {"model_utility", "forget_quality_log10"}
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and {"npo", "retain_nll", "lr", "grad_norm", "seconds"} <= set(log[0])
    env = json.loads((folder / "env.json").read_text())
    assert env["world_size"] == 1 and env["packages"]["torch"] and env["wall_time_seconds"]["total"] > 0
    assert "results:" in capsys.readouterr().out
    # the saved config reproduces the run's settings
    saved = parse_config(["--config_file", str(folder / "config.json")], experiment_schema())
    assert saved.unlearn.max_steps == 2 and saved.overall.model_name == "tiny-random-llama"
    assert not list((tmp_path / "results").rglob("*.incomplete"))


def test_second_run_reuses_fine_tuned_models_and_before_evaluation(fast, tmp_path, cache_dir):
    assert cli(*fast, "--logger.name", "a") == 0
    built = {p: p.stat().st_mtime_ns for p in (cache_dir / "finetuned").glob("*/config.json")}
    evaluations = sorted((cache_dir / "evaluations").iterdir())
    assert len(built) == 2  # target and retain model
    assert cli(*fast, "--logger.name", "b") == 0
    assert {p: p.stat().st_mtime_ns for p in (cache_dir / "finetuned").glob("*/config.json")} == built
    assert sorted((cache_dir / "evaluations").iterdir()) == evaluations
    first, second = (json.loads((tmp_path / "results/synthetic/NPO" / n / "metrics.json").read_text()) for n in "ab")
    assert first == second  # same seed, same result


def test_existing_run_is_not_overwritten_unless_asked(fast, tmp_path, capsys):
    assert cli(*fast, "--eval.before", "false", "--logger.name", "same") == 0
    capsys.readouterr()
    assert cli(*fast, "--logger.name", "same") == 2
    assert "already exists; choose another --logger.name or pass --logger.overwrite true" in capsys.readouterr().err
    assert cli(*fast, "--eval.before", "false", "--logger.name", "same", "--logger.overwrite", "1") == 0


def _bert_folder(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    return str(folder)


def _empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    return str(path)


BAD_INPUTS = {
    "missing data file": (lambda t: ["--dataset.forget_dataset_name", "nope.jsonl"], "dataset 'nope.jsonl' not found"),
    "misspelled key": (lambda t: ["--unlearn.lrr", "1e-5"], "did you mean 'unlearn.lr'"),
    "unknown method": (lambda t: ["--unlearn.unlearn_method", "npoo"],
                       "must be one of " + "|".join(METHODS.names())),
    "out of range": (lambda t: ["--unlearn.lr", "-1"], "unlearn.lr='-1' must be a number >= 0.0"),
    "not a causal LM": (lambda t: ["--overall.model_name", _bert_folder(t)], "not a causal language model"),
    "empty forget set": (lambda t: ["--dataset.forget_dataset_name", _empty_file(t)], "is empty"),
    "hub id offline": (lambda t: ["--overall.model_name", "someone/model"], "the hub is offline"),
    "no retain model": (lambda t: ["--finetune.enabled", "false"],
                        "forget_quality need the retain model, and there is none"),
    "no retain data": (lambda t: ["--dataset.retain_dataset_name", ""], "needs retain data"),
    "bad template": (lambda t: ["--dataset.question_template", "Q: {q}"], "may only use the field {question}"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, fast, tmp_path, capsys):
    extra, message = BAD_INPUTS[case]
    assert cli(*fast, *extra(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "results").exists()
    assert not (Path(fast[fast.index("--overall.cache_dir") + 1]) / "finetuned").exists()


def test_entry_point_exit_status_and_help():
    script = str(ROOT / "src" / "exec" / "unlearn_model.py")
    bad = subprocess.run([sys.executable, script, "--config_file", NPO_CONFIG, "--unlearn.lrr", "1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown key 'unlearn.lrr'")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert shown.returncode == 0 and "--unlearn.NPO.beta" in shown.stdout


def test_finetune_entry_point_builds_both_models_once(fast, cache_dir, capsys):
    sys.path.insert(0, str(ROOT / "src" / "exec"))
    from finetune import finetune

    assert run(finetune, "finetune.py", fast) == 0
    printed = capsys.readouterr().out
    assert "target model: " in printed and "retain model: " in printed
    built = sorted((cache_dir / "finetuned").glob("*/recipe.json"))
    assert [json.loads(p.read_text())["role"] for p in built].count("target") == 1 and len(built) == 2
    assert run(finetune, "finetune.py", [*fast, "--finetune.enabled", "false", "--eval.metrics", "prob"]) == 2
    assert "nothing to fine-tune" in capsys.readouterr().err
    # unlearning seeds share the target (as in TOFU); finetune.seed makes another one
    assert run(finetune, "finetune.py", [*fast, "--overall.seed", "3"]) == 0
    assert len(list((cache_dir / "finetuned").glob("*/recipe.json"))) == 2
    assert run(finetune, "finetune.py", [*fast, "--finetune.seed", "3"]) == 0
    assert len(list((cache_dir / "finetuned").glob("*/recipe.json"))) == 4


def test_missing_mask_is_built_saved_and_then_reused(fast, tmp_path):
    path = tmp_path / "mask" / "tiny_wagle.safetensors"
    args = [*fast, "--unlearn.mask_path", str(path), "--mask.ratio", "0.5", "--eval.before", "false"]
    assert cli(*args, "--logger.name", "one") == 0
    assert path.is_file() and path.with_suffix(".png").is_file()
    stats = json.loads((tmp_path / "results/synthetic/NPO/one/mask_stats.json").read_text())
    assert stats["metadata"]["score"] == "wagle" and 0 < stats["trainable_fraction"] < 0.5
    built = path.stat().st_mtime_ns
    assert cli(*args, "--logger.name", "two") == 0
    assert path.stat().st_mtime_ns == built


def test_mask_that_does_not_fit_the_model_fails_before_any_work(fast, tmp_path, capsys):
    import torch

    from obliviate.masks.mask import ParameterMask

    path = tmp_path / "wrong.safetensors"
    ParameterMask({"model.layers.0.mlp.up_proj.weight": torch.ones(2, 2, dtype=torch.bool)}).save(path)
    assert cli(*fast, "--unlearn.mask_path", str(path)) == 2
    assert "does not fit the model: 1 shapes differ" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_fine_tune_attacks_write_curves_from_the_unlearned_weights(fast, tmp_path):
    args = [*fast, "--attack.datasets", "synthetic:math_train,relearn", "--attack.test_datasets",
            '["synthetic:math_test", ""]', "--attack.max_steps", "2,3", "--attack.eval_every", "2",
            "--attack.num_examples", "8", "--attack.lr", "1e-3", "--logger.name", "attacked"]
    assert cli(*args) == 0
    folder = tmp_path / "results" / "synthetic" / "NPO" / "attacked"
    curves = json.loads((folder / "attacks.json").read_text())
    assert set(curves) == {"synthetic:math_train", "relearn"}
    assert [p["step"] for p in curves["relearn"]] == [0, 2, 3]
    assert "exact_match" in curves["synthetic:math_train"][0]["task"] and "task" not in curves["relearn"][0]
    # every attack starts from the unlearned model, whose forget metrics are the "after" evaluation
    after = json.loads((folder / "metrics.json").read_text())["after"]["forget"]
    assert curves["relearn"][0]["forget"] == curves["synthetic:math_train"][0]["forget"] == after
    assert curves["relearn"][-1]["forget"]["prob"] > curves["relearn"][0]["forget"]["prob"]  # relearning works
    logged = [json.loads(line) for line in (folder / "attack_train_log.jsonl").read_text().splitlines()]
    assert [r["attack"] for r in logged] == ["synthetic:math_train"] * 2 + ["relearn"] * 3  # steps per attack
    assert [p["step"] for p in curves["synthetic:math_train"]] == [0, 2]


def test_quantization_attacks_are_evaluated_from_the_unlearned_weights(fast, tmp_path, monkeypatch):
    forget_evaluations = []
    evaluate_forget = EvaluationSession.forget_metrics
    monkeypatch.setattr(EvaluationSession, "forget_metrics", lambda self, *args, with_tasks=False: (
        forget_evaluations.append(with_tasks), evaluate_forget(self, *args, with_tasks=with_tasks))[1])
    args = [*fast, "--attack.max_steps", "2", "--attack.num_examples", "2", "--attack.lr", "1e-3"]
    assert cli(*args, "--attack.datasets", "quantize:8,relearn,quantize:4", "--logger.name", "quantized") == 0
    # the forget split of the unlearned weights is evaluated once for the three attacks, then once per later point
    # (quantize:8 and :4 after rounding, relearn at step 2), besides relearn's unseen examples at steps 0 and 2
    assert forget_evaluations.count(True) == 4 and forget_evaluations.count(False) == 2
    assert cli(*args, "--attack.datasets", "quantize:4", "--logger.name", "quantized_alone") == 0
    folder = tmp_path / "results" / "synthetic" / "NPO" / "quantized"
    curves = json.loads((folder / "attacks.json").read_text())
    after = json.loads((folder / "metrics.json").read_text())["after"]["forget"]
    for name in ("quantize:8", "quantize:4"):
        assert [p["step"] for p in curves[name]] == [0, 1]
        assert curves[name][0]["forget"] == after  # the unlearned model's forget metrics
    assert curves["quantize:4"][1]["forget"] != after and curves["quantize:8"][1] != curves["quantize:4"][1]
    # the weights were restored after quantize:8 and relearn: quantize:4 rounds what it rounds when run alone
    alone = json.loads((folder.with_name("quantized_alone") / "attacks.json").read_text())["quantize:4"]
    assert curves["quantize:4"] == alone
    logged = [json.loads(line)["attack"] for line in (folder / "attack_train_log.jsonl").read_text().splitlines()]
    assert logged == ["relearn", "relearn"]  # quantization trains nothing


@pytest.mark.parametrize("extra,message", [
    (["--attack.datasets", "synthetic:nope_train"], "unknown synthetic split 'nope_train'"),
    (["--attack.datasets", "quantize:3"], "attack 'quantize:3': quantization width '3' is not one of 4, 8"),
    (["--attack.datasets", "relearn", "--attack.test_datasets", "a.jsonl,b.jsonl"],
     "attack.test_datasets has 2 values for 1 attack.datasets"),
    (["--attack.datasets", "relearn,synthetic:math_train", "--attack.lr", "1e-4,1e-3,1e-2"],
     "attack.lr has 3 values for 2 attack.datasets"),
    (["--attack.datasets", "relearn,relearn"], "lists 'relearn' more than once"),
])
def test_bad_attack_config_fails_before_any_work(fast, tmp_path, capsys, extra, message):
    assert cli(*fast, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def evaluate_cli(*argv):
    return run(run_evaluation, "evaluate.py", list(argv))


def test_evaluate_writes_one_models_results_and_the_comparison_reads_them(fast, tmp_path, capsys):
    from obliviate.comparison import comparison_rows

    assert evaluate_cli(*fast, "--eval.model", "target", "--logger.name", "target") == 0
    assert evaluate_cli(*fast, "--eval.model", "retain", "--logger.name", "retain") == 0
    folder = tmp_path / "results" / "synthetic" / "evaluations"
    metrics = json.loads((folder / "target" / "metrics.json").read_text())
    assert set(metrics) == {"evaluated"}
    assert {"forget", "retain", "holdout", "real_authors", "world_facts", "model"} == set(metrics["evaluated"])
    assert (folder / "target" / "summary.md").read_text().startswith("# target: ")
    # the retain model compared with itself is indistinguishable: forget quality 1
    assert json.loads((folder / "retain" / "metrics.json").read_text())["evaluated"]["forget"]["forget_quality"] == 1.0
    _, rows = comparison_rows([folder / "target", folder / "retain"])
    assert [row["label"].split(":")[0] for row in rows] == ["target", "retain"] and "forget.prob" in rows[0]


def test_evaluate_needs_no_data_of_the_configured_method(fast, tmp_path):
    """NPO needs retain data to train; evaluating a model needs only what is evaluated."""
    assert evaluate_cli(*fast, "--finetune.enabled", "false", "--dataset.retain_dataset_name", "",
                        "--eval.metrics", "prob", "--logger.name", "no_retain") == 0
    metrics = json.loads((tmp_path / "results/synthetic/evaluations/no_retain/metrics.json").read_text())
    assert "retain" not in metrics["evaluated"] and "prob" in metrics["evaluated"]["forget"]


def test_evaluating_a_fine_tuned_model_without_fine_tuning_fails_first(fast, tmp_path, capsys):
    assert evaluate_cli(*fast, "--finetune.enabled", "false", "--eval.metrics", "prob", "--eval.model", "target") == 2
    assert "eval.model target needs the fine-tuned models" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_a_saved_retain_evaluation_serves_forget_quality_and_privleak(fast, tmp_path, capsys):
    metrics = ["--eval.metrics", "prob,truth_ratio,forget_quality,mia_min_k,mia_reference"]
    assert evaluate_cli(*fast, *metrics, "--eval.model", "retain", "--logger.name", "retain") == 0
    retain = tmp_path / "results" / "synthetic" / "evaluations" / "retain"
    saved = json.loads((retain / "metrics.json").read_text())["evaluated"]
    assert saved["model"]["privleak"] == pytest.approx(0.0)  # the retain model against itself
    assert saved["model"]["mia_reference_auc"] == pytest.approx(0.5)  # identical NLLs: no signal
    assert cli(*fast, *metrics, "--eval.retain_logs_path", str(retain), "--logger.name", "uses_saved") == 0
    folder = tmp_path / "results" / "synthetic" / "NPO" / "uses_saved"
    after = json.loads((folder / "metrics.json").read_text())["after"]
    assert {"privleak", "mia_min_k_auc", "mia_reference_auc", "forget_quality_log10"} <= set(after["model"])
    assert "forget_quality" in after["forget"]
    assert cli(*fast, "--eval.retain_logs_path", str(tmp_path), "--logger.name", "bad") == 2
    assert "is not a finished evaluate.py run folder" in capsys.readouterr().err


@pytest.mark.parametrize("task,message", [
    ("wmdp_bioo", "eval.lm_eval_tasks: 'wmdp_bioo' is not an lm-eval task"),
    ("wmdp_bio", "cannot load the data of lm-eval tasks wmdp_bio: the hub is offline and the data is not cached"),
])
def test_lm_eval_tasks_are_checked_before_any_work(fast, tmp_path, capsys, task, message):
    assert cli(*fast, "--eval.lm_eval_tasks", task) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_muse_form_evaluates_texts_and_extra_qa_splits(tmp_path, cache_dir):
    args = ["--config_file", str(ROOT / "configs" / "synthetic" / "eval_muse.json"),
            "--overall.model_name", "tiny-random-llama", "--eval.retain_model_name", "tiny-random-llama",
            "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--eval.max_examples", "3", "--eval.max_new_tokens", "4",
            "--logger.name", "muse"]
    assert evaluate_cli(*args) == 0
    metrics = json.loads((tmp_path / "results" / "synthetic" / "evaluations" / "muse" / "metrics.json").read_text())
    evaluated = metrics["evaluated"]
    assert set(evaluated["forget"]) == {"verbmem", "mia_min_k", "continuation_bleu"}  # texts: no QA metrics
    assert set(evaluated["forget_qa"]) == {"knowmem", "mia_min_k"}  # a forget-role QA split: KnowMem_f
    assert set(evaluated["retain"]) == {"knowmem", "mia_min_k"}  # KnowMem_r
    assert evaluated["model"]["privleak"] == pytest.approx(0.0)  # the retain model is this same model
    per_example = json.loads((tmp_path / "results/synthetic/evaluations/muse/per_example.json").read_text())
    shot = per_example["evaluated"]["forget_qa"]["generations"]["knowmem"][0]
    assert shot["prompt"].count("Question:") == 6  # five in-context examples, then the question
    assert evaluate_cli(*args[:-2], "--eval.extra_splits", "forget=synthetic:forget10") == 2


def test_extra_split_entries_are_checked():
    from obliviate.errors import UserError
    from obliviate.evaluation.splits import Role, parse_extra_split

    assert parse_extra_split("forget_qa : forget = synthetic:forget10") == ("forget_qa", Role.FORGET,
                                                                              "synthetic:forget10")
    with pytest.raises(UserError, match="must read 'name:role=dataset'"):
        parse_extra_split("forget_qa=synthetic:forget10")
    with pytest.raises(UserError, match="unknown role 'secret'"):
        parse_extra_split("x:secret=synthetic:forget10")
    with pytest.raises(UserError, match="split name 'retain' is already used"):
        parse_extra_split("retain:retain=x.jsonl")
