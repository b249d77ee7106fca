"""RMU against an independent computation; only the selected parameters change; no second model."""

import copy

import pytest
import torch
from accelerate import Accelerator

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.methods import METHODS
from obliviate.methods.objective import PrepareContext
from obliviate.methods.rmu import hidden_at_layer
from obliviate.models.embedded import tiny_random_llama
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig

PARAMS = dict(layer=0, trained_layers=[0], param_pattern=r"mlp\.down_proj\.weight", steering_coeff=3.0,
              steering_norm_multiple=0.0, alpha=50.0, seed=0)


def data(tokenizer, offset):
    examples = [Example(f"Tell me about item {i}?", f"Item {i} is blue and {i}.") for i in range(offset, offset + 5)]
    return encode_dataset(tokenizer, examples, PromptFormat(), 32)


@pytest.fixture
def setup(tokenizer):
    model = tiny_random_llama(tokenizer)
    datasets = {"forget": data(tokenizer, 0), "retain": data(tokenizer, 50)}
    objective = METHODS.get("RMU").build(**PARAMS)
    objective.prepare(PrepareContext(model, datasets, 4, torch.device("cpu")))
    batch = {name: d.collate([d[i] for i in range(3)]) for name, d in datasets.items()}
    return model, datasets, objective, batch


def hidden_reference(model, batch, layer):
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    return out.hidden_states[layer + 1].float()  # hidden_states[0] is the embeddings


def test_hidden_at_layer_is_the_decoder_layer_output(setup):
    model, _, _, batch = setup
    assert torch.allclose(hidden_at_layer(model, batch["forget"], 0), hidden_reference(model, batch["forget"], 0))


def test_rmu_loss_against_hand_formula(setup):
    model, _, objective, batch = setup
    u = objective.artifacts()["rmu_u"]
    assert u.norm().item() == pytest.approx(1.0, rel=1e-6) and (u >= 0).all()
    h, mask = hidden_reference(model, batch["forget"], 0), batch["forget"].attention_mask.float()
    forget = (((h - 3.0 * u) ** 2).mean(-1) * mask).sum() / mask.sum()
    output = objective(model, batch)
    assert output.logs["rmu_forget"] == pytest.approx(forget.item(), rel=1e-5)
    assert output.logs["rmu_retain"] == pytest.approx(0.0, abs=1e-12)  # the model is still the reference
    with torch.no_grad():
        dict(model.named_parameters())["model.layers.0.mlp.down_proj.weight"].add_(0.05)
    changed = hidden_reference(model, batch["retain"], 0)
    output = objective(model, batch)
    mask_r = batch["retain"].attention_mask.float()
    term = objective.terms[0][1]
    with torch.no_grad(), term.starting_weights():
        reference = hidden_reference(model, batch["retain"], 0)
    retain = (((changed - reference) ** 2).mean(-1) * mask_r).sum() / mask_r.sum()
    assert output.logs["rmu_retain"] == pytest.approx(retain.item(), rel=1e-5) and retain > 0
    assert output.loss.item() == pytest.approx(output.logs["rmu_forget"] + 50.0 * retain.item(), rel=1e-5)


def test_starting_weights_reproduce_the_original_model(tokenizer, setup):
    model, _, objective, batch = setup
    original = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.mul_(1.5)
    with objective.terms[0][1].starting_weights():
        assert torch.equal(hidden_at_layer(model, batch["retain"], 0), hidden_at_layer(original, batch["retain"], 0))
    assert not torch.equal(hidden_at_layer(model, batch["retain"], 0), hidden_at_layer(original, batch["retain"], 0))


def test_only_selected_parameters_change(setup):
    model, datasets, objective, _ = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = TrainingConfig(lr=1e-2, num_epochs=1, max_steps=2, gradient_accumulation_steps=1, weight_decay=0.1,
                            warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0, logging_steps=1, batch_size=2)
    train(model, objective, datasets, "forget", config, Accelerator(cpu=True), 0)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == {"model.layers.0.mlp.down_proj.weight"}


def test_steering_coefficient_relative_to_activation_norm(tokenizer):
    model = tiny_random_llama(tokenizer)
    forget = data(tokenizer, 0)
    objective = METHODS.get("RMU").build(**{**PARAMS, "steering_norm_multiple": 2.0, "alpha": 0.0})
    objective.prepare(PrepareContext(model, {"forget": forget}, 10, torch.device("cpu")))
    batch = forget.collate([forget[i] for i in range(len(forget))])
    h, mask = hidden_reference(model, batch, 0), batch.attention_mask.float()
    expected = 2.0 * float((h.norm(dim=-1) * mask).sum() / mask.sum())
    assert objective.terms[0][1].steering_coeffs == [pytest.approx(expected, rel=1e-5)]
    assert objective.splits == {"forget"}


def test_each_topic_has_its_own_control_vector_and_micro_batches_cycle_through_topics(tokenizer):
    model = tiny_random_llama(tokenizer)
    datasets = {"forget": data(tokenizer, 0), "topic1": data(tokenizer, 20), "retain": data(tokenizer, 50)}
    objective = METHODS.get("RMU").build(**{**PARAMS, "steering_norm_multiple": 2.0}, extra_topics=["cyber.jsonl"])
    objective.prepare(PrepareContext(model, datasets, 4, torch.device("cpu")))
    term = objective.terms[0][1]
    u = objective.artifacts()["rmu_u"]
    assert u.shape == (2, model.config.hidden_size) and not torch.allclose(u[0], u[1])
    assert torch.allclose(u.norm(dim=-1), torch.ones(2))
    single = METHODS.get("RMU").build(**PARAMS)
    single.prepare(PrepareContext(tiny_random_llama(tokenizer), datasets, 4, torch.device("cpu")))
    assert torch.equal(single.artifacts()["rmu_u"][0], u[0])  # topic 0 keeps the one-topic vector
    batch = {name: d.collate([d[i] for i in range(3)]) for name, d in datasets.items()}
    topics = []
    for _ in range(4):
        output = objective(model, batch)
        topics.append(output.logs["rmu_topic"])
        h = hidden_reference(model, batch[["forget", "topic1"][topics[-1]]], 0)
        mask = batch[["forget", "topic1"][topics[-1]]].attention_mask.float()
        expected = (((h - term.steering_coeffs[topics[-1]] * u[topics[-1]]) ** 2).mean(-1) * mask).sum() / mask.sum()
        assert output.logs["rmu_forget"] == pytest.approx(expected.item(), rel=1e-5)
    assert topics == [0, 1, 0, 1]
    assert term.steering_coeffs[0] != term.steering_coeffs[1]  # the norm rule per topic's own activations
