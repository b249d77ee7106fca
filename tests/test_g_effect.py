"""G-effect diagnostics: parameter blocks, the inner products by hand, the seed's smoothing, and a run whose
training is unchanged by switching the diagnostic on."""

import json
from pathlib import Path

import pytest
import torch

from obliviate.config.sections import Lora
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.likelihood import forward_logits, mean_nll, token_nll
from obliviate.models import adapters
from obliviate.models.anatomy import first_layers
from obliviate.models.embedded import tiny_random_llama
from obliviate.models.logit_difference import LogitDifferenceModel, LogitDifferenceSpec
from obliviate.training.g_effect import GEffectProbe, block_of, block_order
from obliviate.training.loop import micro_batches

ROOT = Path(__file__).resolve().parents[1]
LORA = Lora(enabled=True, r=4, alpha=8.0, dropout=0.0, target_modules=["all-linear"], merge=False)


@pytest.mark.parametrize("name,block", [
    ("model.embed_tokens.weight", "embeddings"), ("model.layers.3.mlp.down_proj.weight", "layer_3"),
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "layer_0"),
    ("model.norm.weight", "head"), ("lm_head.weight", "head"), ("transformer.h.12.attn.c_attn.weight", "layer_12"),
    ("transformer.wte.weight", "embeddings"),
    ("assistant.base_model.model.model.layers.1.mlp.up_proj.weight", "layer_1"),
])
def test_parameter_blocks(name, block):
    assert block_of(name) == block


def test_blocks_are_ordered_from_embeddings_to_head():
    assert block_order({"head", "layer_10", "layer_2", "embeddings"}) == ["embeddings", "layer_2", "layer_10", "head"]


@pytest.fixture
def probe_setup(tokenizer, tmp_path):
    model = tiny_random_llama(tokenizer)
    encode = lambda examples: encode_dataset(tokenizer, examples, PromptFormat(), 32)  # noqa: E731
    forget = encode([Example(f"Who is person {i}?", f"Person {i} is a baker.") for i in range(3)])
    retain = encode([Example("Where is town 0?", "Town 0 lies north.")])  # retain rows are drawn with replacement
    everything = {"forget": forget.collate([forget[i] for i in range(3)]), "retain": retain.collate([retain[0]])}
    return model, {"forget": forget, "retain": retain}, everything, tmp_path / "g.jsonl"


def gradients(model, batch):
    loss = mean_nll(*token_nll(forward_logits(model, batch), batch.labels))
    return dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters()))))


def test_g_effect_of_gradient_ascent_on_its_own_data_is_minus_the_squared_gradient_norm(probe_setup):
    model, datasets, everything, path = probe_setup
    forget, retain = gradients(model, everything["forget"]), gradients(model, everything["retain"])
    for name, parameter in model.named_parameters():
        parameter.grad = -forget[name]  # the step of GA on the whole forget set (3 examples = one probe batch)
    GEffectProbe(1, path, model, definition="probe", datasets=datasets, batch_size=3, seed=0, smoothing=0.0)(
        1, model, [])
    record = json.loads(path.read_text())

    def by_block(first, second):
        totals = {}
        for name in first:
            totals[block_of(name)] = totals.get(block_of(name), 0.0) + float((first[name] * second[name]).sum())
        return totals
    expected_forget, expected_retain = by_block(forget, forget), by_block(forget, retain)
    assert list(record["forget"]) == ["embeddings", "layer_0", "layer_1", "head"]
    for block, value in expected_forget.items():
        assert record["forget"][block] == pytest.approx(-value, rel=1e-4, abs=1e-9)
        assert record["retain"][block] == pytest.approx(-expected_retain[block], rel=1e-4, abs=1e-9)
    assert record["forget_total"] < 0  # gradient ascent forgets its own data


def test_smoothing_is_the_seeds_moving_average(probe_setup):
    model, datasets, everything, path = probe_setup
    forget = gradients(model, everything["forget"])
    squared = sum(float(g.pow(2).sum()) for g in forget.values())
    probe = GEffectProbe(1, path, model, definition="probe", datasets=datasets, batch_size=3, seed=0)
    for step, scale in ((1, 1.0), (2, 2.0)):
        for name, parameter in model.named_parameters():
            parameter.grad = -scale * forget[name]
        probe(step, model, [])
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["forget_total"] == pytest.approx(-squared, rel=1e-4)
    assert second["forget_total"] == pytest.approx(-(0.6 * 1.0 + 0.4 * 2.0) * squared, rel=1e-4)
    assert all(parameter.grad is not None for parameter in model.parameters())  # training gradients untouched


def products(first, second):
    return sum(float((first[name] * second[name]).sum()) for name in first)


@pytest.mark.parametrize("definition", ["seed", "probe"])
def test_the_risks_are_taken_on_the_steps_own_batch_or_on_a_drawn_probe_batch(probe_setup, definition):
    model, datasets, _, path = probe_setup
    forget_set = datasets["forget"]
    own = {"forget": forget_set.collate([forget_set[2], forget_set[0]]),  # the step's batch: 2 of the 3 examples
           "retain": datasets["retain"].collate([datasets["retain"][0]])}
    step_gradient = gradients(model, own["forget"])
    for name, parameter in model.named_parameters():
        parameter.grad = step_gradient[name].clone()
    GEffectProbe(1, path, model, definition=definition, datasets=datasets, batch_size=2, seed=0, smoothing=0.0)(
        1, model, [own])
    drawn = next(micro_batches(datasets, "forget", 2, 1))  # the probe's own stream (seed + 1)
    risk_batch = own["forget"] if definition == "seed" else drawn["forget"]
    assert definition == "seed" or not torch.equal(drawn["forget"].input_ids, own["forget"].input_ids)
    expected = products(step_gradient, gradients(model, risk_batch))
    assert json.loads(path.read_text())["forget_total"] == pytest.approx(expected, rel=1e-4)


def test_with_a_logit_difference_model_the_risk_is_the_combined_models(tokenizer, tmp_path):
    target = tiny_random_llama(tokenizer).requires_grad_(False)
    assistant = adapters.attach(first_layers(target, 1), LORA)
    combined = LogitDifferenceModel(target, assistant, LogitDifferenceSpec("", "", 1, -0.8, 0.0, False))
    torch.manual_seed(0)
    for name, parameter in assistant.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.1)
    data = encode_dataset(tokenizer, [Example(f"Who is person {i}?", f"Person {i} is a baker.") for i in range(2)],
                          PromptFormat(), 32)
    batch = {"forget": data.collate([data[0], data[1]]), "retain": data.collate([data[1]])}
    trained = [(n, p) for n, p in assistant.named_parameters() if p.requires_grad]

    def gradient_of(model):
        loss = mean_nll(*token_nll(forward_logits(model, batch["forget"]), batch["forget"].labels))
        return dict(zip([n for n, _ in trained], torch.autograd.grad(loss, [p for _, p in trained])))

    step = gradient_of(assistant)  # ULD's step: the assistant learns the forget answers
    for name, parameter in trained:
        parameter.grad = step[name].clone()
    GEffectProbe(1, tmp_path / "g.jsonl", combined, definition="seed", datasets={"forget": data, "retain": data},
                 batch_size=2, seed=0, smoothing=0.0)(1, assistant, [batch])
    record = json.loads((tmp_path / "g.jsonl").read_text())
    assert record["forget_total"] == pytest.approx(products(step, gradient_of(combined)), rel=1e-4)
    assert record["forget_total"] < 0 < products(step, step)  # the combined model forgets; the assistant learns


@pytest.mark.slow
def test_a_run_with_g_effect_trains_exactly_as_without_and_writes_the_plot(tmp_path, cache_dir):
    from obliviate.cli import run
    from obliviate.experiment import run_unlearning

    logs = {}
    for every in (0, 2):
        argv = ["--config_file", str(ROOT / "configs" / "synthetic" / "ga.json"), "--overall.model_name",
                "tiny-random-llama", "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "d"),
                "--logger.json.root", str(tmp_path / "r"), "--logger.name", f"every{every}", "--unlearn.max_steps",
                "4", "--finetune.max_steps", "2", "--eval.max_examples", "4", "--eval.metrics", "prob",
                "--unlearn.g_effect_every", str(every)]
        assert run(run_unlearning, "unlearn_model.py", argv) == 0
        folder = next((tmp_path / "r").rglob(f"every{every}"))
        logs[every] = [json.loads(line)["loss"] for line in (folder / "train_log.jsonl").read_text().splitlines()]
    records = [json.loads(line) for line in (folder / "g_effect.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and (folder / "g_effect.png").stat().st_size > 0
    assert logs[0] == logs[2]
