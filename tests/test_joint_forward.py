"""One forward pass over the forget and retain micro-batches together (``likelihood.joint_forward``): the same loss
and gradient as one pass per micro-batch, for every method whose terms share their pass; the others keep theirs."""

import pytest
import torch

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.likelihood import JointForward, forward_logits
from obliviate.methods import METHODS
from obliviate.methods.objective import Objective, PrepareContext
from obliviate.models.embedded import tiny_random_llama

SHARING = ["AdversarialLabel", "AscentDescent", "CEU", "DPO", "GA_KL", "GradDiff", "IdkDPO", "ME_GD", "NPO", "Offset",
           "PDU", "RandomLabel", "SatImp", "SimNPO", "TNPO", "ULD", "UNDIAL", "WGA", "WTNPO"]


@pytest.fixture
def setup(tokenizer):
    model = tiny_random_llama(tokenizer).double()  # fp64: the two ways agree to rounding, far below the tolerance
    forget = [Example(f"Who is person {i}?", f"Person {i} is a baker.", perturbed_answers=(f"Person {i} flies.",))
              for i in range(4)]
    retain = [Example(f"Where is town {i}?", f"Town {i} lies north of the long river, past the hills." * (i % 2 + 1))
              for i in range(5)]

    def encode(examples):
        return encode_dataset(tokenizer, examples, PromptFormat(), 64)

    refusals = [Example("", "I don't know."), Example("", "No idea, sorry.")]
    datasets = {"forget": encode(forget), "retain": encode(retain)}
    context = PrepareContext(model, datasets, 3, torch.device("cpu"),
                             {"forget": forget, "retain": retain, "refusals": refusals}, encode)
    batch = {"forget": datasets["forget"].collate([datasets["forget"][i] for i in (2, 0)]),
             "retain": datasets["retain"].collate([datasets["retain"][i] for i in (4, 1, 3)])}
    assert batch["forget"].input_ids.shape[1] != batch["retain"].input_ids.shape[1]  # padded to different widths
    return model, context, batch


def configured(name: str):
    """The method ``name`` with its default values, a retain term on (alpha 1) where it has one, and one ILU
    environment (the methods it wraps configured alike)."""
    method = METHODS.get(name)
    values = {key: param.default for key, param in method.params.items()}
    values.update({key: value for key, value in (("alpha", 1.0), ("environments", ["synthetic:retain90"]))
                   if key in values})
    return method(name, values, configured)


def objective_of(name: str, context: PrepareContext) -> Objective:
    objective = configured(name).objective()
    objective.prepare(context)
    return objective


def loss_and_gradient(objective, model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    output = objective(model, batch)
    output.loss.backward()
    return output.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", SHARING)
def test_one_joint_pass_gives_the_loss_and_gradient_of_one_pass_per_split(setup, name, monkeypatch):
    model, context, batch = setup
    objective = objective_of(name, context)
    assert objective.joint_splits() == ["forget", "retain"]
    passes = []
    model.register_forward_hook(lambda module, args, output: passes.append(torch.is_grad_enabled()))
    joint_loss, joint_gradient = loss_and_gradient(objective, model, batch)
    joint_passes = passes.count(True)  # passes with grad (reference passes run without)
    monkeypatch.setattr(Objective, "joint_splits", lambda self: [])
    passes.clear()
    loss, gradient = loss_and_gradient(objective, model, batch)
    assert joint_passes == passes.count(True) - 1  # forget and retain in one pass (DPO's preferred answers: apart)
    assert joint_loss == pytest.approx(loss, rel=1e-9, abs=1e-12)
    assert joint_gradient.keys() == gradient.keys()
    for key in gradient:
        torch.testing.assert_close(joint_gradient[key], gradient[key], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", sorted(set(METHODS.names()) - set(SHARING)))
def test_methods_that_pass_the_model_their_own_way_keep_one_pass_per_split(name):
    """RMU reads activations, ILU takes a double backward, SAM perturbs the weights, GA reads one split, the
    refusal methods read derived batches: none is joined."""
    assert configured(name).objective().joint_splits() == []


def test_a_batch_is_served_once_and_only_with_grad_to_the_same_model(setup):
    model, _, batch = setup
    joint = JointForward(model, [batch["forget"], batch["retain"]], [True, False])
    with torch.no_grad():
        assert joint.take(model, batch["forget"], every_position=True) is None  # a reference pass runs the model
    assert joint.take(torch.nn.Linear(1, 1), batch["forget"], every_position=True) is None
    assert joint.take(model, batch["retain"], every_position=True) is None  # its head ran at the answers only
    served = joint.take(model, batch["forget"], every_position=True)
    torch.testing.assert_close(served, forward_logits(model, batch["forget"]))
    assert joint.take(model, batch["forget"], every_position=True) is None  # the second ask runs the model
    labels = batch["retain"].labels
    answers = joint.take(model, batch["retain"], every_position=False)
    assert answers.shape[0] == int((labels[:, 1:] != -100).sum())


@pytest.mark.parametrize("name", ["NPO", "GradDiff", "GA_KL"])
def test_the_joint_pass_runs_the_head_at_every_position_only_for_a_split_whose_distribution_is_read(setup, name):
    """NPO and GradDiff read only answer-token NLL: their pass runs the output head at the labelled positions alone;
    GA+KL's retain KL reads every position of the retain batch, its forget NLL the answers only."""
    model, context, batch = setup
    objective = objective_of(name, context)
    rows = []
    model.lm_head.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    objective(model, batch)
    answers = {split: int((data.labels[:, 1:] != -100).sum()) for split, data in batch.items()}
    whole = {split: data.labels.numel() for split, data in batch.items()}
    expected = answers["forget"] + (whole["retain"] if name == "GA_KL" else answers["retain"])
    assert rows[-1] == expected  # the last head call is the trained model's joint pass (GA+KL's reference ran first)
