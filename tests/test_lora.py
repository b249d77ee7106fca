"""LoRA for any method through peft: only adapters train, the adapter-disabled model is the starting model,
merging keeps the function, reference terms need no copy, and the run folder holds a loadable adapter."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from obliviate.cli import run
from obliviate.config.sections import Lora
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.errors import UserError
from obliviate.experiment import run_unlearning
from obliviate.likelihood import forward_logits, sequence_nll, token_kl, token_nll
from obliviate.methods import METHODS
from obliviate.methods.objective import PrepareContext
from obliviate.models import adapters
from obliviate.models.embedded import tiny_random_llama
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
LORA = Lora(enabled=True, r=4, alpha=8.0, dropout=0.0, target_modules=["all-linear"], merge=False)


def data(tokenizer, offset, n=6):
    examples = [Example(f"Who is person {i}?", f"Person {i} bakes {i * 7} pies.") for i in range(offset, offset + n)]
    return encode_dataset(tokenizer, examples, PromptFormat(), 32)


def unlearn_with_lora(tokenizer, method, params, lora=LORA, steps=3):
    torch.manual_seed(0)
    base = tiny_random_llama(tokenizer)
    start = copy.deepcopy(base)  # the starting model, for comparison only
    model = adapters.attach(base, lora)
    datasets = {"forget": data(tokenizer, 0), "retain": data(tokenizer, 100)}
    objective = METHODS.get(method).build(**params)
    objective.prepare(PrepareContext(model, datasets, 4, torch.device("cpu")))
    config = TrainingConfig(lr=5e-2, num_epochs=1, max_steps=steps, gradient_accumulation_steps=1, weight_decay=0.0,
                            warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0, logging_steps=1, batch_size=2)
    train(model, objective, datasets, "forget", config, Accelerator(cpu=True), 0)
    return model, start, datasets, objective


def logits_of(model, dataset):
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return forward_logits(model, batch), batch


def test_a_lora_run_changes_only_adapters_and_disabling_them_gives_the_starting_model(tokenizer):
    model, plain, datasets, _ = unlearn_with_lora(tokenizer, "GradDiff", {"gamma": 1.0, "alpha": 1.0})
    start = dict(plain.named_parameters())
    for name, parameter in model.named_parameters():
        if "lora_" not in name:  # base weights: bit-identical
            original = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(parameter, start[original]), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if "lora_B" in n)
    with adapters.without_adapters(model) as starting:
        disabled, _ = logits_of(starting, datasets["forget"])
    expected, _ = logits_of(plain, datasets["forget"])
    assert torch.equal(disabled, expected)  # exactly the starting model
    trained, _ = logits_of(model, datasets["forget"])
    assert not torch.allclose(trained, expected)


def test_merging_keeps_the_adapter_models_function(tokenizer):
    model, _, datasets, _ = unlearn_with_lora(tokenizer, "GradDiff", {"gamma": 1.0, "alpha": 1.0})
    adapted, _ = logits_of(model, datasets["retain"])
    merged = adapters.merged(model)
    assert not adapters.is_adapted(merged)
    assert torch.allclose(logits_of(merged, datasets["retain"])[0], adapted, atol=1e-5)


def test_kl_and_npo_references_come_from_the_adapter_disabled_model(tokenizer):
    model, plain, datasets, objective = unlearn_with_lora(
        tokenizer, "NPO", {"beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "kl"})
    npo, kl = (term for _, term in objective.terms)
    assert kl.reference.copy is None  # no second copy of the model
    forget_logits, forget_batch = logits_of(plain, datasets["forget"])
    sums, _ = sequence_nll(*token_nll(forget_logits, forget_batch.labels))
    assert torch.allclose(npo.reference_nll, sums, atol=1e-5)  # S_ref of the starting model
    reference_logits, batch = logits_of(plain, datasets["retain"])
    with torch.no_grad():
        expected = token_kl(forward_logits(model, batch), reference_logits, batch.labels)
        assert kl(model, {"retain": batch}).item() == pytest.approx(expected.item(), rel=1e-5)


def test_rmu_with_lora_trains_the_adapters_of_its_modules(tokenizer):
    params = {"layer": 1, "trained_layers": [1], "param_pattern": r"mlp\.down_proj\.weight", "steering_coeff": 5.0,
              "steering_norm_multiple": 0.0, "alpha": 10.0, "seed": 0}
    model, _, _, _ = unlearn_with_lora(tokenizer, "RMU", params)
    trained = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trained == ["base_model.model.model.layers.1.mlp.down_proj.lora_A.default.weight",
                       "base_model.model.model.layers.1.mlp.down_proj.lora_B.default.weight"]


def test_target_modules_are_checked_by_name():
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.norm.weight"]
    adapters.check_target_modules(replace(LORA, target_modules=["q_proj", "down_proj"]), names)
    with pytest.raises(UserError, match="lora.target_modules: the model has no module 'c_attn'"):
        adapters.check_target_modules(replace(LORA, target_modules=["q_proj", "c_attn"]), names)


def cli(*argv):
    return run(run_unlearning, "unlearn_model.py", list(argv))


@pytest.fixture
def fast(tmp_path, cache_dir):
    return ["--config_file", str(ROOT / "configs/synthetic/npo.json"), "--overall.model_name", "tiny-random-llama",
            "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--unlearn.max_steps", "2", "--finetune.max_steps", "2",
            "--eval.max_examples", "4", "--eval.max_new_tokens", "4", "--eval.metrics", "prob",
            "--lora.enabled", "true"]


@pytest.mark.slow
def test_the_run_folder_holds_a_loadable_adapter_and_the_merged_model(fast, tmp_path, cache_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert cli(*fast, "--lora.merge", "true", "--lora.r", "4", "--logger.name", "lora") == 0
    folder = tmp_path / "results" / "synthetic" / "NPO" / "lora"
    assert json.loads((folder / "adapter" / "adapter_config.json").read_text())["r"] == 4
    target = next(f.parent for f in (cache_dir / "finetuned").glob("*/recipe.json")
                  if json.loads(f.read_text())["role"] == "target")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(target), folder / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(folder / "model")
    ids = torch.tensor([[1, 20, 300, 4000, 5]])
    with torch.no_grad():
        assert torch.allclose(adapted(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5)
    env = json.loads((folder / "env.json").read_text())
    assert 0 < env["trainable_parameters"] < sum(p.numel() for p in merged.parameters()) / 10


def test_lora_with_a_mask_or_an_unknown_module_fails_before_any_work(fast, tmp_path, capsys):
    assert cli(*fast, "--unlearn.mask_path", str(tmp_path / "m.safetensors")) == 2
    assert "unlearn.mask_path selects base weights, which LoRA freezes" in capsys.readouterr().err
    assert cli(*fast, "--lora.target_modules", "c_attn") == 2
    assert "lora.target_modules: the model has no module 'c_attn'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
