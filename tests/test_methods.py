"""Method objects on a tiny model: registry, composition, sign conventions, cached reference terms."""

import math

import pytest
import torch

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.errors import UserError
from obliviate.likelihood import forward_logits, mean_nll, token_nll
from obliviate.methods import METHODS
from obliviate.methods.objective import PrepareContext
from obliviate.models.embedded import tiny_random_llama


@pytest.fixture
def setup(tokenizer):
    model = tiny_random_llama(tokenizer)
    examples = [Example(f"Who is person {i}?", f"Person {i} is a baker.") for i in range(6)]
    data = encode_dataset(tokenizer, examples, PromptFormat(), 32)
    batch = {"forget": data.collate([data[i] for i in (0, 1, 2)]), "retain": data.collate([data[i] for i in (3, 4, 5)])}
    return model, data, batch


def test_registry_is_case_insensitive_and_suggests():
    assert METHODS.canonical("simnpo") == "SimNPO"
    with pytest.raises(UserError, match=r"unknown unlearning method 'npx' \(did you mean 'NPO'\?\); valid: "
                                        r"AdversarialLabel, AscentDescent, CEU, DPO, GA, GA_KL"):
        METHODS.get("npx")


def test_ga_is_negative_forget_nll(setup):
    model, _, batch = setup
    output = METHODS.get("GA").build()(model, batch)
    nll = mean_nll(*token_nll(forward_logits(model, batch["forget"]), batch["forget"].labels))
    assert output.loss.item() == pytest.approx(-nll.item(), rel=1e-5)
    assert output.logs["forget_nll"] == pytest.approx(nll.item(), rel=1e-5)  # logged as the positive NLL


def test_graddiff_weights(setup):
    model, _, batch = setup
    output = METHODS.get("GradDiff").build(gamma=2.0, alpha=0.5)(model, batch)
    expected = -2.0 * output.logs["forget_nll"] + 0.5 * output.logs["retain_nll"]
    assert output.loss.item() == pytest.approx(expected, rel=1e-5)


def test_npo_reference_is_cached_once_and_loss_starts_at_2_over_beta_log_2(setup):
    model, data, batch = setup
    objective = METHODS.get("NPO").build(beta=0.1, gamma=1.0, alpha=0.0, retain_loss="nll")
    assert objective.splits == {"forget"}  # alpha 0 drops the retain term entirely
    objective.prepare(PrepareContext(model, {"forget": data}, 4, torch.device("cpu")))
    assert objective(model, batch).loss.item() == pytest.approx(20 * math.log(2), rel=1e-5)


def test_ga_kl_is_zero_kl_at_start_and_keeps_a_frozen_reference(setup):
    model, data, batch = setup
    objective = METHODS.get("GA_KL").build(gamma=1.0, alpha=1.0)
    objective.prepare(PrepareContext(model, {"forget": data, "retain": data}, 4, torch.device("cpu")))
    assert objective(model, batch).logs["retain_kl"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    assert objective(model, batch).logs["retain_kl"] > 0


def test_simnpo_has_no_reference_and_uses_retain(setup):
    model, _, batch = setup
    objective = METHODS.get("SimNPO").build(beta=4.5, delta=0.0, gamma=0.125, alpha=1.0, retain_loss="nll")
    assert objective.splits == {"forget", "retain"}
    output = objective(model, batch)
    assert output.loss.item() == pytest.approx(0.125 * output.logs["simnpo"] + output.logs["retain_nll"], rel=1e-5)
