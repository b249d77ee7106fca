"""ILU: the invariance penalty's value and gradient against independent computations."""

import types

import pytest
import torch

from obliviate.config.loader import parse_config
from obliviate.data.examples import Example
from obliviate.data.tokenize import EncodedDataset, PromptFormat, encode_example
from obliviate.errors import UserError
from obliviate.experiment import experiment_schema
from obliviate.likelihood import forward_logits, mean_nll, token_nll
from obliviate.methods import METHODS
from obliviate.methods.ilu import InvariancePenalty, logit_scale_gradient
from obliviate.methods.objective import PrepareContext
from obliviate.models.embedded import tiny_random_llama
from obliviate.plan import configured_method

TRAINED = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture
def setup(tokenizer):
    torch.manual_seed(0)
    model = tiny_random_llama(tokenizer).double()
    model.set_attn_implementation("eager")  # as the penalty sets it, so that both sides compute the same
    for module in model.modules():  # HF's RMSNorm computes in fp32 even in an fp64 model: keep fp64 here
        if type(module).__name__.endswith("RMSNorm"):
            module.forward = types.MethodType(
                lambda self, x: self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon),
                module)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name == TRAINED)  # a small trainable set keeps finite differences cheap
    data = EncodedDataset([encode_example(tokenizer, Example(f"What is {i} plus {i}?", f"{2 * i}."), PromptFormat(), 24)
                           for i in range(4)], tokenizer.pad_token_id)
    batch = {"env0": data.collate([data[i] for i in range(4)])}
    return model, data, batch


def penalty_of(model, batch, w_form):
    term = InvariancePenalty(["env0"], w_form, 1)
    term.prepare(PrepareContext(model, {}, 4, torch.device("cpu")))
    return term(model, batch)


@pytest.mark.parametrize("w_form", ["elementwise", "scalar"])
def test_penalty_value_matches_an_independent_computation(setup, w_form):
    model, _, batch = setup
    theta = dict(model.named_parameters())[TRAINED]
    loss = mean_nll(*token_nll(forward_logits(model, batch["env0"]), batch["env0"].labels))
    (g,) = torch.autograd.grad(loss, [theta])
    expected = ((theta * g) ** 2).sum() if w_form == "elementwise" else (theta * g).sum() ** 2
    assert penalty_of(model, batch, w_form).item() == pytest.approx(expected.item(), rel=1e-9)


def test_logits_form_is_the_squared_derivative_of_the_nll_in_a_logit_scale(setup):
    # IRMv1's dummy w on the logits: autograd through w·z against the closed form the penalty uses
    model, _, batch = setup
    logits = forward_logits(model, batch["env0"]).detach()
    w = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
    (derivative,) = torch.autograd.grad(mean_nll(*token_nll(w * logits, batch["env0"].labels)), [w])
    assert penalty_of(model, batch, "logits").item() == pytest.approx(derivative.item() ** 2, rel=1e-9)
    # by hand on one answer token (predicted at position 0): z = (0, ln 3), y = 0: p = (1/4, 3/4),
    # E_p[z] − z_y = (3/4)·ln 3
    tiny = torch.tensor([[[0.0, float(torch.log(torch.tensor(3.0)))], [0.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[-100, 0]])
    assert logit_scale_gradient(tiny, labels).item() == pytest.approx(0.75 * float(torch.log(torch.tensor(3.0))))


@pytest.mark.parametrize("w_form", ["elementwise", "scalar", "logits"])
def test_penalty_gradient_matches_finite_differences(setup, w_form):
    model, _, batch = setup
    theta = dict(model.named_parameters())[TRAINED]
    (analytic,) = torch.autograd.grad(penalty_of(model, batch, w_form), [theta])
    assert analytic.abs().sum() > 0  # the penalty carries gradient (it is not a detached constant)
    epsilon = 1e-6
    for index in [(0, 0), (5, 17), (63, 127)]:
        with torch.no_grad():
            theta[index] += epsilon
        up = penalty_of(model, batch, w_form).item()
        with torch.no_grad():
            theta[index] -= 2 * epsilon
        down = penalty_of(model, batch, w_form).item()
        with torch.no_grad():
            theta[index] += epsilon
        assert analytic[index].item() == pytest.approx((up - down) / (2 * epsilon), rel=1e-4, abs=1e-10)


def test_lambda_changes_the_update(setup):
    model, data, batch = setup
    batch = {"forget": batch["env0"], **batch}
    theta = dict(model.named_parameters())[TRAINED]
    gradients = []
    for lam in (0.0, 100.0):
        objective = METHODS.get("GA").build() + InvariancePenalty(["env0"], "elementwise", 1) * lam
        objective.prepare(PrepareContext(model, {"forget": data, "env0": data}, 4, torch.device("cpu")))
        (gradient,) = torch.autograd.grad(objective(model, batch).loss, [theta])
        gradients.append(gradient)
    assert not torch.allclose(gradients[0], gradients[1])


def test_every_k_skips_the_double_backward(setup):
    model, _, batch = setup
    term = InvariancePenalty(["env0"], "elementwise", every_k=2)
    values = [term(model, batch).item() for _ in range(3)]
    assert values[0] > 0 and values[1] == 0.0 and values[2] == values[0]
    assert term.extra_logs()["ilu_computed"] == 1.0


def test_ilu_wraps_its_base_method_and_needs_environments():
    settings = parse_config(["--unlearn.unlearn_method", "ilu", "--unlearn.ILU.environments", "synthetic:full_text",
                             "--unlearn.ILU.base_method", "graddiff", "--unlearn.ILU.lam", "2"], experiment_schema())
    objective = configured_method(settings, "ILU").objective()
    assert objective.splits == {"forget", "retain", "env0"}
    assert [w for w, _ in objective.terms] == [-1.0, 1.0, 2.0]
    assert configured_method(settings, "ILU").datasets() == {"env0": "synthetic:full_text"}
    with pytest.raises(UserError, match="unlearn.ILU.environments is empty"):
        configured_method(parse_config([], experiment_schema()), "ILU").objective()


def test_ilu_reads_its_base_methods_extra_data():
    settings = parse_config(["--unlearn.unlearn_method", "ILU", "--unlearn.ILU.environments", "synthetic:math_train",
                             "--unlearn.ILU.base_method", "RMU", "--unlearn.RMU.extra_topics", "cyber.jsonl"],
                            experiment_schema())
    ilu = configured_method(settings, "ILU")
    assert ilu.datasets() == {"topic1": "cyber.jsonl", "env0": "synthetic:math_train"}
    assert ilu.objective().splits == {"forget", "topic1", "retain", "env0"}
