"""Issue 11's losses against hand-computed values on tiny tensors: DPO, the token-weighted ascents (WGA, SatImp,
TNPO, WTNPO), UNDIAL, CE-U, PDU, the label methods and the SAM gradient."""

import math

import pytest
import torch

from obliviate.data.tokenize import IGNORE_INDEX as X
from obliviate.likelihood import token_nll
from obliviate.methods.distillation import after_first_answer_tokens, ceu_target, soft_cross_entropy, undial_target
from obliviate.methods.labels import relabelled_nll, runner_up_targets, sequence_mean_nll
from obliviate.methods.objective import Term
from obliviate.methods.preference import dpo_loss
from obliviate.methods.primal_dual import dual_ascent, logit_margin_flattening
from obliviate.methods.sam import SharpnessAwareForget, gradient_carrier
from obliviate.methods.token_weighted import satimp_weights, tnpo_weights, weighted_token_nll, wga_weights

# Two sequences of 4 positions over 3 tokens; position 0 is prompt, row 1 padded; logits[:, t] predict labels[:, t+1].
LOGITS = torch.tensor([
    [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [9.0, 9.0, 9.0]],
    [[1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [5.0, 5.0, 5.0], [7.0, 0.0, 7.0]],
])
LABELS = torch.tensor([[X, 0, 1, 2], [X, 1, X, X]])
PREDICTING = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]]  # the 4 answer positions


def softmax(row):
    total = sum(math.exp(v) for v in row)
    return [math.exp(v) / total for v in row]


def nll_of(row, target):
    return -math.log(softmax(row)[target])


def log_sigmoid(x):
    return -math.log(1 + math.exp(-x))


def test_dpo_hand_values():
    # margins: (3−2) − (3−4) = 2 and (1.5−1) − (2.5−2) = 0; β = 0.5 → −(2/β)·mean log σ(β·margin)
    loss = dpo_loss(torch.tensor([2.0, 1.0]), torch.tensor([3.0, 1.5]), torch.tensor([4.0, 2.0]),
                    torch.tensor([3.0, 2.5]), beta=0.5)
    assert loss.item() == pytest.approx(-4.0 * (log_sigmoid(1.0) + log_sigmoid(0.0)) / 2, rel=1e-6)


def test_dpo_starts_at_2_over_beta_log_2_and_falls_as_the_true_answer_loses():
    same = torch.tensor([3.0, 5.0])
    assert dpo_loss(same, same, same, same, 0.1).item() == pytest.approx(20 * math.log(2), rel=1e-6)
    assert dpo_loss(same, same, same + 1.0, same, 0.1) < dpo_loss(same, same, same, same, 0.1)


NLL = torch.tensor([[0.5, 1.0], [2.0, 7.0]])
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the 7.0 is padding


def test_token_weighted_ascent_hand_values():
    p = (-NLL).exp()
    wga = (math.exp(-0.5) * 0.5 + math.exp(-1.0) * 1.0 + math.exp(-2.0) * 2.0) / 3
    assert weighted_token_nll(NLL, MASK, wga_weights(p, 1.0)).item() == pytest.approx(wga, rel=1e-6)

    def satimp(n):
        q = math.exp(-n)
        return q**2 * (1 - q) * n
    assert weighted_token_nll(NLL, MASK, satimp_weights(p, 2.0, 1.0)).item() == pytest.approx(
        (satimp(0.5) + satimp(1.0) + satimp(2.0)) / 3, rel=1e-6)

    reference = torch.tensor([[0.5, 0.25], [0.1, 0.9]])

    def tnpo(n, ref, beta, extra):
        q = math.exp(-n)
        return 2 * q ** (beta + extra) / (q**beta + ref**beta + 1e-5) * n
    for extra in (0.0, 1.0):  # TNPO, then WTNPO
        expected = (tnpo(0.5, 0.5, 0.1, extra) + tnpo(1.0, 0.25, 0.1, extra) + tnpo(2.0, 0.1, 0.1, extra)) / 3
        value = weighted_token_nll(NLL, MASK, tnpo_weights(p, reference, 0.1, extra))
        assert value.item() == pytest.approx(expected, rel=1e-6)


def test_token_weights_carry_no_gradient():
    nll = NLL.clone().requires_grad_(True)
    weighted_token_nll(nll, MASK, wga_weights((-nll).exp(), 1.0)).backward()
    expected = torch.tensor([[math.exp(-0.5), math.exp(-1.0)], [math.exp(-2.0), 0.0]]) / 3
    assert torch.allclose(nll.grad, expected)


def test_undial_target_lowers_only_the_true_token():
    target = undial_target(torch.tensor([[[1.0, 2.0, 0.0]]]), torch.tensor([[1]]), beta=10.0)
    assert target[0, 0].tolist() == pytest.approx(softmax([1.0, -8.0, 0.0]), rel=1e-6)


def test_soft_cross_entropy_hand_values_and_mask():
    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    target = torch.tensor([[[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]])
    both = (math.log(3) + nll_of([1.0, 0.0, 0.0], 0)) / 2
    assert soft_cross_entropy(logits, target, torch.tensor([[True, True]])).item() == pytest.approx(both, rel=1e-6)
    assert soft_cross_entropy(logits, target, torch.tensor([[True, False]])).item() == pytest.approx(math.log(3))


def test_ceu_target_removes_the_true_token_and_its_gradient_is_p_minus_q():
    z = torch.tensor([[[1.0, 2.0, 0.0]]], requires_grad=True)
    target = ceu_target(z, torch.tensor([[1]]))
    e = math.e
    assert target[0, 0].tolist() == pytest.approx([e / (e + 1), 0.0, 1 / (e + 1)], rel=1e-6)
    soft_cross_entropy(z, target, torch.tensor([[True]])).backward()
    expected = [p - q for p, q in zip(softmax([1.0, 2.0, 0.0]), [e / (e + 1), 0.0, 1 / (e + 1)])]
    assert z.grad[0, 0].tolist() == pytest.approx(expected, rel=1e-5)


def test_first_answer_tokens_are_skipped_per_row():
    mask = torch.tensor([[False, True, True, True], [True, False, True, False]])
    assert after_first_answer_tokens(mask, 1).tolist() == [[False, False, True, True], [False, False, True, False]]
    assert after_first_answer_tokens(mask, 0).tolist() == mask.tolist()


def test_logit_margin_flattening_hand_values():
    squares = [(max(row) - sum(row) / 3) ** 2 for row in PREDICTING]  # 16/9, 4/9, 4, 1/9
    assert logit_margin_flattening(LOGITS, LABELS).item() == pytest.approx(sum(squares) / 4, rel=1e-6)
    assert logit_margin_flattening(torch.zeros(2, 4, 3), LABELS).item() == 0.0  # flat logits: nothing to do


def test_dual_ascent_rises_on_violation_and_stops_at_zero():
    assert dual_ascent(1.0, 0.5, 0.4) == pytest.approx(1.2)
    assert dual_ascent(0.1, 1.0, -0.5) == 0.0


def test_adversarial_targets_are_the_top_wrong_token_at_the_predicting_position():
    targets = runner_up_targets(LOGITS, LABELS)
    assert targets.tolist() == [[1, 0, 0], [0, X, X]]  # first maximum on ties, as torch.argmax
    expected = (nll_of(PREDICTING[0], 1) + nll_of(PREDICTING[1], 0) + nll_of(PREDICTING[2], 0)
                + nll_of(PREDICTING[3], 0)) / 4
    assert relabelled_nll(LOGITS, LABELS, targets).item() == pytest.approx(expected, rel=1e-6)


def test_sequence_mean_nll_weights_each_sequence_equally():
    row0 = (nll_of(PREDICTING[0], 0) + nll_of(PREDICTING[1], 1) + nll_of(PREDICTING[2], 2)) / 3
    row1 = nll_of(PREDICTING[3], 1)
    assert sequence_mean_nll(*token_nll(LOGITS, LABELS)).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


class Quartic(Term):
    """L(w) = Σ w⁴/4 of a bias-free linear layer's weight: ∇L = w³."""

    name, split = "quartic", "forget"

    def __call__(self, model, batch):
        return model.weight.pow(4).sum() / 4


def test_sam_gradient_is_taken_at_the_perturbed_weights_and_the_weights_are_restored():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    start = model.weight.detach().clone()
    rho = 0.1
    g = torch.tensor([[1.0, 8.0]])
    perturbed = start + rho * g / math.sqrt(65.0)
    value = SharpnessAwareForget(Quartic(), rho)(model, {})
    assert torch.equal(model.weight, start)  # restored bit-exactly
    assert value.item() == pytest.approx(float(perturbed.pow(4).sum() / 4), rel=1e-6)
    (2.0 * value).backward()  # a weight on the term scales the carried gradient
    assert torch.allclose(model.weight.grad, 2.0 * perturbed.pow(3))


def test_gradient_carrier_has_the_value_and_deposits_the_gradient():
    w = torch.tensor([1.0, -1.0], requires_grad=True)
    carried = gradient_carrier(torch.tensor(5.0), [w], [torch.tensor([0.25, 3.0])])
    carried.backward()
    assert carried.item() == 5.0 and w.grad.tolist() == [0.25, 3.0]
