"""The config contract, including a regression test for each measured fastargs 1.2.0 defect."""

import json
import re

import pytest

from obliviate.config.loader import HelpRequested, parse_config
from obliviate.errors import ConfigError
from obliviate.experiment import experiment_schema
from obliviate.methods import METHODS


def parse(*argv):
    return parse_config(list(argv), experiment_schema(), "test")


def write(tmp_path, content, name="exp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


def test_defaults_without_arguments():
    settings = parse()
    assert settings.unlearn.unlearn_method == "NPO"
    assert settings.unlearn.lr == 1e-5
    assert settings["unlearn.NPO.beta"] == 0.1


@pytest.mark.parametrize("flag", ["--config_file", "--config-file", "-C"])
def test_every_config_file_flag(tmp_path, flag):
    path = write(tmp_path, {"unlearn": {"lr": 3e-4}})
    assert parse(flag, path).unlearn.lr == 3e-4
    assert parse(f"{flag}={path}").unlearn.lr == 3e-4


def test_nested_and_dotted_keys_and_command_line_precedence(tmp_path):
    path = write(tmp_path, {"unlearn": {"lr": 3e-4, "NPO": {"beta": 0.2}}, "overall.seed": 7})
    settings = parse("--config_file", path, "--unlearn.lr", "1e-5", "--unlearn.NPO.beta", "0.05")
    assert (settings.unlearn.lr, settings.method("NPO")["beta"], settings.overall.seed) == (1e-5, 0.05, 7)


def test_later_files_override_earlier_and_null_means_default(tmp_path):
    first = write(tmp_path, {"unlearn": {"lr": 3e-4, "max_steps": 9}}, "a.json")
    second = write(tmp_path, {"unlearn": {"lr": None, "max_steps": 5}}, "b.json")
    settings = parse("-C", first, "-C", second)
    assert settings.unlearn.lr == 1e-5  # null in a later file means the default, undoing the earlier value
    assert settings.unlearn.max_steps == 5
    assert parse("-C", first, "-C", second, "--unlearn.lr", "2e-5").unlearn.lr == 2e-5  # the command line wins
    assert parse("-C", write(tmp_path, {"unlearn": {"lr": None}}, "c.json")).unlearn.lr == 1e-5


@pytest.mark.parametrize("text,value", [("false", False), ("False", False), ("0", False), ("no", False),
                                        ("true", True), ("TRUE", True), ("1", True)])
def test_booleans_from_the_command_line_both_ways(text, value):
    # fastargs defect 2: its Bool checker is bool(value), so "False" and "0" were True.
    assert parse("--unlearn.save_model", text).unlearn.save_model is value


def test_file_true_overridden_to_false_on_the_command_line(tmp_path):
    # fastargs defect 3: an is_flag default collected after the file silently flipped file values.
    path = write(tmp_path, {"unlearn": {"save_model": True}, "finetune": {"enabled": 1}})
    assert parse("-C", path).unlearn.save_model is True
    assert parse("-C", path).finetune.enabled is True
    assert parse("-C", path, "--unlearn.save_model", "false").unlearn.save_model is False
    assert parse("--unlearn.save_model").unlearn.save_model is True  # a bare boolean key means true


def test_lists_from_json_and_command_line(tmp_path):
    # fastargs defect 5: lists arrived as raw strings.
    path = write(tmp_path, {"eval": {"metrics": ["prob", "mcq_acc"]}})
    assert parse("-C", path).eval.metrics == ["prob", "mcq_acc"]
    assert parse("--eval.metrics", '["prob", "truth_ratio"]').eval.metrics == ["prob", "truth_ratio"]
    assert parse("--eval.metrics", "prob,rouge_l_recall").eval.metrics == ["prob", "rouge_l_recall"]
    with pytest.raises(ConfigError, match=r"eval\.metrics.*item 1 \('rouge'\)"):
        parse("--eval.metrics", "prob,rouge")
    one = write(tmp_path, {"attack": {"lr": 1e-4, "max_steps": [10, 20]}})
    assert parse("-C", one).attack.lr == [1e-4]  # one value in a file is a list of one
    assert parse("-C", one).attack.max_steps == [10, 20]
    assert parse("--attack.lr", "3e-4").attack.lr == [3e-4]


def test_unknown_key_in_file_names_it_and_the_closest(tmp_path):
    # fastargs defect 6: misspelled keys in files were silently ignored.
    path = write(tmp_path, {"unlearn": {"lrr": 1e-5}})
    with pytest.raises(ConfigError, match=r"unknown key 'unlearn\.lrr' \(in .*exp\.json\); did you mean 'unlearn\.lr'"):
        parse("-C", path)


def test_unknown_key_on_command_line():
    with pytest.raises(ConfigError, match=r"unknown key 'unlearn\.NPO\.betta'.*did you mean 'unlearn\.NPO\.beta'"):
        parse("--unlearn.NPO.betta", "0.1")


def test_integer_is_not_truncated():
    # fastargs defect 6: Param(int) truncated 2.9 to 2.
    with pytest.raises(ConfigError, match=r"unlearn\.max_steps='2\.9' must be an integer"):
        parse("--unlearn.max_steps", "2.9")
    assert parse("--unlearn.max_steps", "3").unlearn.max_steps == 3


def test_wrong_values_name_key_value_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError, match=r"unlearn\.lr='fast' must be a number >= 0\.0"):
        parse("--unlearn.lr", "fast")
    with pytest.raises(ConfigError, match=r"dataset\.batch_size=0 must be an integer >= 1"):
        parse("-C", write(tmp_path, {"dataset": {"batch_size": 0}}))
    with pytest.raises(ConfigError, match=r"unlearn\.warmup_ratio='1\.5' must be a number in \[0\.0, 1\.0\]"):
        parse("--unlearn.warmup_ratio", "1.5")


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError, match=r"^3 config errors: .*unlearn\.lrr.*unlearn\.lr='x'.*dataset\.batch_size"):
        parse("--unlearn.lrr", "1", "--unlearn.lr", "x", "--dataset.batch_size", "-1")


def test_method_names_are_case_insensitive_and_unknown_ones_list_the_valid():
    assert parse("--unlearn.unlearn_method", "simnpo").unlearn.unlearn_method == "SimNPO"
    assert parse("--unlearn.unlearn_method", "graddiff").unlearn.unlearn_method == "GradDiff"
    names = re.escape("|".join(METHODS.names()))
    assert names.startswith(re.escape("AdversarialLabel|AscentDescent|CEU|DPO|GA|GA_KL|"))
    with pytest.raises(ConfigError, match=r"unlearn\.unlearn_method='npoo' must be one of " + names):
        parse("--unlearn.unlearn_method", "npoo")


def test_environment_variables_never_override(monkeypatch):
    # fastargs defect 7: environment variables named like dotted keys overrode the command line.
    monkeypatch.setenv("unlearn.lr", "0.5")
    assert parse("--unlearn.lr", "1e-4").unlearn.lr == 1e-4
    assert parse().unlearn.lr == 1e-5


def test_parses_are_independent_of_fastargs_global_state():
    # fastargs defect 8: one global config per process.
    from fastargs import get_current_config

    before = dict(get_current_config().entries)
    assert parse("--unlearn.lr", "1e-3").unlearn.lr == 1e-3
    assert parse().unlearn.lr == 1e-5
    assert dict(get_current_config().entries) == before


def test_help_lists_every_key_in_plain_text():
    # fastargs defect 9: help tables used terminal line-drawing codes.
    with pytest.raises(HelpRequested) as raised:
        parse("--config_file", "missing.json", "--help")
    text = raised.value.text
    assert "\x1b" not in text and "─" not in text
    for section, spec in experiment_schema().items():
        assert f"[{section}]" in text
        for key in spec.params:
            assert f"--{section}.{key}  (" in text
    assert "--unlearn.NPO.beta  (a number >= 1e-06; default 0.1)" in text


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file 'nope\.json' does not exist"):
        parse("--config_file", "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"unlearn": {"lr": 1e-5,}}')
    with pytest.raises(ConfigError, match=r"is not valid JSON \(line 1"):
        parse("-C", str(bad))


def test_value_missing_after_a_key():
    with pytest.raises(ConfigError, match=r"--unlearn\.lr needs a value"):
        parse("--unlearn.lr")


def test_resolved_config_reproduces_itself(tmp_path):
    settings = parse("--unlearn.lr", "2e-5", "--eval.metrics", "prob", "--unlearn.unlearn_method", "ga")
    path = write(tmp_path, settings.to_dict(), "resolved.json")
    again = parse("--config_file", path)
    assert again.to_dict() == settings.to_dict()


def test_comment_keys_are_ignored(tmp_path):
    assert parse("-C", write(tmp_path, {"_comment": "how to run", "unlearn": {"lr": 2e-5}})).unlearn.lr == 2e-5


def test_every_shipped_config_validates(tmp_path):
    from pathlib import Path

    from obliviate.study.spec import load_study

    root = Path(__file__).resolve().parents[1]
    folder = root / "configs"
    studies = sorted((folder / "studies").glob("*.json"))
    experiments = sorted(set(folder.rglob("*.json")) - set(studies))
    assert experiments and studies
    for config in experiments:
        parse("--config_file", str(config))
    for study in studies:  # the study file and every cell's experiment config
        content = json.loads(study.read_text())
        if stage := content.pop("selected_in", None):  # its settings come from a study run first: check the rest
            unlearned = set(content["methods"]) - {content.get("control")}  # the control unlearns nothing
            assert unlearned <= set(json.loads((root / stage).read_text())["methods"])
            study = tmp_path / study.name
            study.write_text(json.dumps(content))
        assert load_study(study, []).cells


@pytest.mark.slow
def test_every_synthetic_config_plans(smollm2_dir, tmp_path):
    """Beyond the schema: data, prompt, metrics, mask section and attacks of the configs that run here."""
    from pathlib import Path

    from obliviate.plan import plan

    folder = Path(__file__).resolve().parents[1] / "configs" / "synthetic"
    for config in sorted(folder.glob("*.json")):
        experiment = plan(parse("--config_file", str(config), "--dataset.data_dir", str(tmp_path / "data")))
        assert experiment.evaluation.splits[0].name == "forget", config.name


def test_generation_length_defaults_to_tofus_200_and_the_synthetic_configs_keep_16():
    """TOFU (eval_everything.yaml generation max_length) and open-unlearning generate up to 200 new tokens."""
    from pathlib import Path

    assert parse().eval.max_new_tokens == 200
    folder = Path(__file__).resolve().parents[1] / "configs" / "synthetic"
    for config in ("npo.json", "ga.json", "rmu.json", "eval_tofu.json"):
        assert parse("--config_file", str(folder / config)).eval.max_new_tokens == 16
