"""Importing the OPTML code line's experiment files: every key of ../shared/reference/config.md appendix A is
mapped or refused with one line naming it; the published example configs round-trip into valid configs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from obliviate.config.loader import parse_config, resolve_config
from obliviate.config.optml import import_optml
from obliviate.errors import UserError
from obliviate.experiment import experiment_schema

ROOT = Path(__file__).resolve().parents[1]

# Appendix A.2 A: configs/unlearn/wmdp/NPO+WAGLE.json of the ILU/WAGLE repository, verbatim but for the data
# (WMDPALL is refused, see below)
WMDP_NPO_WAGLE = {
    "overall": {"model_name": "HuggingFaceH4/zephyr-7b-beta", "logger": "json", "cache_dir": "./.cache", "seed": 0},
    "unlearn": {"unlearn_method": "NPO+FT", "num_epochs": 5, "lr": 1e-05, "weight_decay": 0.0,
                "gradient_accumulation_steps": 4, "mask_path": "./mask/wmdp_0.6.pt", "task_name": "wmdp",
                "sophia": False, "p": 0.01, "q": 0.01, "resume_path": None, "max_steps": 500, "use_lora": False,
                "mu": 1e-06, "NPO+FT": {"gamma": 1.0}},
    "dataset": {"forget_dataset_name": "WMDPBio", "retain_dataset_name": "WMDPBio", "dataset_seed": 1000,
                "forget_ratio": 1.0, "self_retain": False, "batch_size": 1},
    "logger": {"json": {"root": "files/results/unlearn_wmdp_all/NPO+WAGLE"}},
}
def changed(base, section, **values):
    copy = json.loads(json.dumps(base))
    copy[section].update(values)
    return copy


# A.2 B: configs/unlearn/Tofu/NPO+WAGLE.json differs from A in these values
TOFU_NPO_WAGLE = changed(changed(changed(
    WMDP_NPO_WAGLE, "overall", model_name="locuslab/tofu_ft_llama2-7b", seed=1),
    "unlearn", weight_decay=0.1, mask_path="./mask/tofu_0.95.pt", task_name="tofu", p=0.95, q=0.95, max_steps=400),
    "dataset", forget_dataset_name="Tofu_forget10", retain_dataset_name="Tofu_retain90", forget_ratio=400.0)
TOFU_NPO_WAGLE["logger"]["json"]["root"] = "files/results/unlearn_tofu/NPO+WAGLE"


def imported(content):
    ours = import_optml(content)
    resolve_config([], ours, experiment_schema())  # valid for our schema
    return ours


def test_wmdp_npo_wagle_maps_gamma_to_the_retain_weight():
    ours = imported(WMDP_NPO_WAGLE)
    assert ours["unlearn.unlearn_method"] == "NPO"
    assert (ours["unlearn.NPO.gamma"], ours["unlearn.NPO.alpha"], ours["unlearn.NPO.beta"]) == (1.0, 1.0, 0.1)
    assert ours["mask.mu"] == 1e-06 and ours["unlearn.mask_path"] == "./mask/wmdp_0.6.pt"
    assert ours["dataset.forget_dataset_name"] == "cais/wmdp-bio-forget-corpus"
    assert ours["dataset.retain_dataset_name"] == "cais/wmdp-corpora:bio-retain-corpus"
    assert ours["eval.lm_eval_tasks"] == ["wmdp_bio", "mmlu"]
    assert ours["logger.json.root"] == "files/results/unlearn_wmdp_all/NPO+WAGLE"
    steps = (ours["unlearn.max_steps"], ours["unlearn.gradient_accumulation_steps"], ours["dataset.batch_size"])
    assert steps == (500, 4, 1)


def test_tofu_npo_wagle_gets_tofus_splits_and_prompt():
    ours = imported(TOFU_NPO_WAGLE)
    assert ours["dataset.forget_dataset_name"] == "locuslab/TOFU:forget10_perturbed"
    assert ours["dataset.retain_dataset_name"] == "locuslab/TOFU:retain90"
    assert ours["dataset.holdout_dataset_name"] == "locuslab/TOFU:holdout10"
    assert ours["dataset.question_template"] == "[INST] {question} [/INST]"  # TOFU's Llama tags
    assert ours["unlearn.weight_decay"] == 0.1 and ours["eval.max_new_tokens"] == 200
    grad_diff = imported(changed(TOFU_NPO_WAGLE, "unlearn", unlearn_method="GA+FT", lr=7e-06,
                                 **{"GA+FT": {"gamma": 1.0}}))
    assert grad_diff["unlearn.unlearn_method"] == "GradDiff" and grad_diff["unlearn.GradDiff.alpha"] == 1.0
    without_gamma = imported(changed(TOFU_NPO_WAGLE, "unlearn", **{"NPO+FT": {}}))
    assert without_gamma["unlearn.NPO.alpha"] == 0.0  # their default retain weight


def test_unlearn_simple_simnpo_and_downstream_data():
    simple = changed(WMDP_NPO_WAGLE, "unlearn", unlearn_method="SimNPO+FT",
                     **{"SimNPO+FT": {"gamma": 1.0, "beta": 0.1}})
    simple["dataset"]["perturb_dataset_name"] = "GSM8K"
    ours = imported(simple)
    assert ours["unlearn.unlearn_method"] == "SimNPO" and ours["unlearn.SimNPO.beta"] == 0.1
    assert ours["unlearn.SimNPO.alpha"] == 1.0 and ours["unlearn.SimNPO.delta"] == 0.0
    assert ours["attack.datasets"] == ["openai/gsm8k:main"]
    assert ours["attack.test_datasets"] == ["openai/gsm8k:main@test"]


@pytest.mark.parametrize("section,values,key", [
    ("overall", {"logger": "none"}, "overall.logger"),
    ("unlearn", {"unlearn_method": "origin"}, "unlearn.unlearn_method"),
    ("unlearn", {"unlearn_method": "CL+FT"}, "unlearn.unlearn_method"),
    ("unlearn", {"unlearn_method": "NPO+FT+SAM"}, "unlearn.unlearn_method"),
    ("unlearn", {"unlearn_method": "RL"}, "unlearn.unlearn_method"),
    ("unlearn", {"sophia": True}, "unlearn.sophia"),
    ("unlearn", {"swa": True}, "unlearn.swa"),
    ("unlearn", {"resume_path": "files/model"}, "unlearn.resume_path"),
    ("unlearn", {"NPO+FT": {"gamma": 1.0, "sam_rho": 0.01}}, "unlearn.NPO+FT.sam_rho"),
    ("unlearn", {"warmup": 3}, "unlearn.warmup"),
    ("dataset", {"forget_dataset_name": "WMDPALL"}, "dataset.forget_dataset_name"),
    ("dataset", {"forget_dataset_name": "SafePku"}, "dataset.forget_dataset_name"),
    ("dataset", {"forget_dataset_name": "HP"}, "dataset.forget_dataset_name"),
    ("dataset", {"retain_dataset_name": "TruthfulQA"}, "dataset.retain_dataset_name"),
    ("dataset", {"retain_dataset_name": "C4"}, "dataset.retain_dataset_name"),
    ("dataset", {"forget_ratio": 0.5}, "dataset.forget_ratio"),
    ("dataset", {"self_retain": True}, "dataset.self_retain"),
    ("dataset", {"perturb_dataset_name": "MNLI"}, "dataset.perturb_dataset_name"),
])
def test_what_cannot_be_mapped_is_refused_naming_the_key(section, values, key):
    with pytest.raises(UserError, match=f"^cannot import {key.replace('+', '[+]')}: "):
        import_optml(changed(WMDP_NPO_WAGLE, section, **values))


def test_their_lora_switch_maps_to_our_lora_section_with_their_settings():
    ours = imported(changed(WMDP_NPO_WAGLE, "unlearn", use_lora=True, mask_path=None))
    assert (ours["lora.enabled"], ours["lora.r"], ours["lora.alpha"], ours["lora.dropout"]) == (True, 8, 32.0, 0.05)
    assert ours["lora.target_modules"] == ["q_proj", "v_proj"] and ours["lora.merge"]


def test_keys_without_effect_there_are_dropped_and_the_rest_maps():
    """Every key of appendix A.1: mapped (here) or refused (above)."""
    every_key = changed(TOFU_NPO_WAGLE, "unlearn", sophia_params={"betas_low": 0.9, "betas_high": 0.95, "rho": 0.03},
                        **{"l1_sparse": {"alpha": 0.1}, "GA+KL": {"gamma": 0.5}, "KL": {"gamma": 0.5},
                           "CL+FT": {"gamma": 1.0}, "CL+KL": {"gamma": 0.0}, "GA+FT": {"gamma": 2.0}})
    every_key["dataset"].update(self_retain=True, perturb_dataset_name=None)
    ours = imported(every_key)
    assert ours["dataset.retain_dataset_name"] == "locuslab/TOFU:retain90"  # TOFU forget10's complement
    assert "unlearn.GradDiff.alpha" not in ours  # another method's section has no effect on an NPO run
    assert ours["overall.seed"] == 1 and ours["overall.cache_dir"] == "./.cache"


@pytest.mark.slow
def test_the_entry_point_prints_a_valid_config_or_one_line(tmp_path):
    source = tmp_path / "npo.json"
    source.write_text(json.dumps(WMDP_NPO_WAGLE))
    command = [sys.executable, str(ROOT / "src/exec/import_config.py"), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (tmp_path / "ours.json").write_text(done.stdout)
    settings = parse_config(["--config_file", str(tmp_path / "ours.json")], experiment_schema())
    assert settings.unlearn.unlearn_method == "NPO" and settings.method("NPO")["alpha"] == 1.0
    source.write_text(json.dumps(changed(WMDP_NPO_WAGLE, "dataset", forget_dataset_name="WMDPALL")))
    refused = subprocess.run(command, capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: cannot import dataset.forget_dataset_name: 'WMDPALL'")
    assert len(refused.stderr.strip().splitlines()) == 1
