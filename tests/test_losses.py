"""Each loss against hand-computed values on tiny tensors; prompt and padding never count."""

import math

import pytest
import torch

from obliviate import likelihood
from obliviate.data.examples import Example
from obliviate.data.tokenize import IGNORE_INDEX as X
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.likelihood import answer_nll, chunked_nll, forward_logits, mean_nll, sequence_nll, token_kl, token_nll
from obliviate.methods.npo import npo_loss, simnpo_loss
from obliviate.models.embedded import tiny_random_llama

# Two sequences of 4 positions over a 3-token vocabulary. Labels: position 0 is prompt (ignored),
# row 1 has padding at the end. After the shift, logits[:, t] predict labels[:, t+1].
LOGITS = torch.tensor([
    [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [9.0, 9.0, 9.0]],
    [[1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [5.0, 5.0, 5.0], [7.0, 0.0, 7.0]],
])
LABELS = torch.tensor([[X, 0, 1, 2], [X, 1, X, X]])


def nll_of(logits_row, target):
    return -math.log(math.exp(logits_row[target]) / sum(math.exp(v) for v in logits_row))


# By hand: row 0 predicts label 0 from [2,0,0], 1 from [0,1,0], 2 from [0,0,3]; row 1 predicts 1 from [1,1,0].
ROW0 = [nll_of([2, 0, 0], 0), nll_of([0, 1, 0], 1), nll_of([0, 0, 3], 2)]
ROW1 = [nll_of([1, 1, 0], 1)]


def test_token_nll_counts_only_labelled_positions():
    nll, mask = token_nll(LOGITS, LABELS)
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert nll[0].tolist() == pytest.approx(ROW0, rel=1e-6)
    assert nll[1].tolist() == pytest.approx([ROW1[0], 0.0, 0.0], rel=1e-6)


def test_sequence_nll_is_a_per_sequence_sum():
    sums, counts = sequence_nll(*token_nll(LOGITS, LABELS))
    assert sums.tolist() == pytest.approx([sum(ROW0), ROW1[0]], rel=1e-6)
    assert counts.tolist() == [3.0, 1.0]


def test_mean_nll_is_the_token_mean_and_matches_cross_entropy():
    expected = (sum(ROW0) + ROW1[0]) / 4
    assert mean_nll(*token_nll(LOGITS, LABELS)).item() == pytest.approx(expected, rel=1e-6)
    reference = torch.nn.functional.cross_entropy(LOGITS[:, :-1].reshape(-1, 3), LABELS[:, 1:].reshape(-1))
    assert mean_nll(*token_nll(LOGITS, LABELS)).item() == pytest.approx(reference.item(), rel=1e-6)


def test_padding_logits_do_not_change_any_loss():
    changed = LOGITS.clone()
    changed[1, 2:] = torch.randn(2, 3) * 100  # positions whose targets are padding
    changed[:, -1] = torch.randn(2, 3) * 100  # the last position predicts nothing
    for function in (lambda lg, lb: mean_nll(*token_nll(lg, lb)), lambda lg, lb: sequence_nll(*token_nll(lg, lb))[0]):
        assert torch.allclose(function(changed, LABELS), function(LOGITS, LABELS))


def test_chunked_nll_hand_values_in_any_chunk_size(monkeypatch):
    rows = LOGITS[0, :3]  # row 0's three predicting positions
    expected = ROW0
    assert chunked_nll(rows, torch.tensor([0, 1, 2])).tolist() == pytest.approx(expected, rel=1e-6)
    monkeypatch.setattr(likelihood, "CHUNK_LOGITS", 4)  # one row of 3 logits per chunk
    assert chunked_nll(rows, torch.tensor([0, 1, 2])).tolist() == pytest.approx(expected, rel=1e-6)
    assert chunked_nll(rows[:0], torch.tensor([], dtype=torch.long)).shape == (0,)


def test_chunked_nll_of_bf16_logits_recomputes_each_chunk_with_the_same_gradient(monkeypatch):
    """bf16 logits: each chunk's fp32 log-softmax is recomputed in backward (not kept); values and gradients are
    those of the whole fp32 computation."""
    torch.manual_seed(0)
    logits = (torch.randn(7, 11) * 3).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 11, (7,))
    whole = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    (expected_grad,) = torch.autograd.grad((whole * torch.arange(7.0)).sum(), logits)
    monkeypatch.setattr(likelihood, "CHUNK_LOGITS", 22)  # 2 rows per chunk
    chunked = chunked_nll(logits, targets)
    assert chunked.dtype == torch.float32
    (grad,) = torch.autograd.grad((chunked * torch.arange(7.0)).sum(), logits)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grad, expected_grad)


@pytest.fixture
def tiny_batch(tokenizer):
    model = tiny_random_llama(tokenizer).double()
    examples = [Example(f"Who is person {i}?", f"Person {i} bakes bread{' every day' * i}.") for i in range(3)]
    data = encode_dataset(tokenizer, examples, PromptFormat(), 64)
    return model, data.collate([data[i] for i in range(3)])


def test_answer_nll_is_token_nll_of_the_full_logits_with_the_head_at_the_answers_only(tiny_batch):
    model, batch = tiny_batch
    head_rows = []
    model.lm_head.register_forward_hook(lambda module, args, output: head_rows.append(args[0].shape[:-1].numel()))
    nll, mask = answer_nll(model, batch)
    (nll * torch.arange(1.0, nll.shape[1] + 1)).sum().backward()
    gradient = {name: p.grad.clone() for name, p in model.named_parameters()}
    answers = int((batch.labels[:, 1:] != X).sum())
    assert head_rows == [answers]  # not batch × length
    model.zero_grad()
    expected, expected_mask = token_nll(forward_logits(model, batch), batch.labels)
    (expected * torch.arange(1.0, nll.shape[1] + 1)).sum().backward()
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(nll, expected, rtol=1e-12, atol=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(gradient[name], p.grad, rtol=1e-10, atol=1e-12)


def test_answer_nll_of_a_model_without_logits_to_keep_computes_every_position(tiny_batch):
    model, batch = tiny_batch

    class PlainForward(torch.nn.Module):  # a forward without transformers' logits_to_keep
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    nll, mask = answer_nll(PlainForward(), batch)
    expected, expected_mask = token_nll(forward_logits(model, batch), batch.labels)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(nll, expected, rtol=1e-12, atol=1e-12)


def test_npo_loss_hand_values():
    beta = 0.5
    current, reference = torch.tensor([3.0, 1.0]), torch.tensor([2.0, 1.0])
    # (2/β)·mean[−log σ(β(S_θ − S_ref))] = 4·mean[−log σ(0.5), −log σ(0)]
    expected = 4 * (-math.log(1 / (1 + math.exp(-0.5))) + math.log(2)) / 2
    assert npo_loss(current, reference, beta).item() == pytest.approx(expected, rel=1e-6)


def test_npo_starts_at_2_over_beta_log_2_and_falls_as_forget_answers_become_unlikely():
    beta = 0.1
    same = torch.tensor([5.0, 7.0])
    assert npo_loss(same, same, beta).item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    assert npo_loss(same + 1.0, same, beta) < npo_loss(same, same, beta)  # higher NLL on forget → lower loss
    current = same.clone().requires_grad_(True)
    npo_loss(current, same, beta).backward()
    assert (current.grad < 0).all()  # gradient descent raises the forget NLL


def test_simnpo_loss_hand_values():
    beta, delta = 2.0, 0.5
    sums, lengths = torch.tensor([6.0, 2.0]), torch.tensor([3.0, 4.0])
    # (2/β)·mean[−log σ(β·S/|y| − δ)]: arguments 2·2 − 0.5 = 3.5 and 2·0.5 − 0.5 = 0.5
    expected = (math.log(1 + math.exp(-3.5)) + math.log(1 + math.exp(-0.5))) / 2
    assert simnpo_loss(sums, lengths, beta, delta).item() == pytest.approx(expected, rel=1e-6)


def test_kl_puts_the_reference_distribution_first_as_tofu_and_open_unlearning():
    """KL(π_ref ‖ π_θ) as in locuslab/tofu dataloader.py (kl_div(current, retain, log_target=True)) and
    locuslab/open-unlearning src/trainer/utils.py compute_kl_divergence; answer positions only."""
    logits = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]])
    reference = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 9.0, 0.0]]])
    labels = torch.tensor([[X, 0, 1]])

    def softmax(row):
        total = sum(math.exp(v) for v in row)
        return [math.exp(v) / total for v in row]

    p, q = softmax([1.0, 0.0, 0.0]), softmax([0.0, 2.0, 0.0])  # current, reference at the first answer position
    reference_first = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    current_first = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert abs(reference_first - current_first) > 0.05  # the two directions differ on this example
    expected = (reference_first + 0.0) / 2  # the second position: both uniform
    assert token_kl(logits, reference, labels).item() == pytest.approx(expected, rel=1e-5)
    # the same number as torch's kl_div with the reference as target (what TOFU's code calls)
    log_p = torch.log_softmax(logits[:, :1], -1)
    log_q = torch.log_softmax(reference[:, :1], -1)
    torch_value = torch.nn.functional.kl_div(log_p, log_q, reduction="sum", log_target=True).item()
    assert torch_value == pytest.approx(reference_first, rel=1e-5)
    assert token_kl(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-7)
    # an unlabelled (prompt) position never counts
    assert token_kl(logits, reference, torch.tensor([[X, X, 1]])).item() == pytest.approx(0.0, abs=1e-7)


def test_maximum_entropy_loss_is_the_kl_to_uniform_on_answer_tokens():
    """ME (Yuan et al. 2025, seed 002): mean over answer tokens of Σ_v p log p + log|V| = log|V| − H(p)."""
    from obliviate.methods.entropy import uniform_kl

    logits = torch.tensor([[[2.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 3.0, 1.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[X, 0, 2, X]])  # positions 0 and 1 predict answer tokens; 2 predicts padding

    def kl_to_uniform(row):
        total = sum(math.exp(v) for v in row)
        p = [math.exp(v) / total for v in row]
        return sum(pi * math.log(pi) for pi in p) + math.log(3)

    expected = (kl_to_uniform([2.0, 0.0, 0.0]) + kl_to_uniform([1.0, 1.0, 1.0])) / 2
    assert uniform_kl(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert kl_to_uniform([1.0, 1.0, 1.0]) == pytest.approx(0.0, abs=1e-12)  # uniform: nothing left to forget
    changed = logits.clone()
    changed[0, 2] = torch.tensor([50.0, -50.0, 0.0])  # predicts padding: never counts
    assert uniform_kl(changed, labels).item() == pytest.approx(expected, rel=1e-6)


def test_maximum_entropy_public_code_form_is_the_kl_from_uniform():
    """sail-sg/closer-look-LLM-unlearning get_me_loss: F.kl_div(log p, u) = Σ_v u (log u − log p) = KL(U ‖ p)."""
    from obliviate.methods.entropy import uniform_kl

    logits = torch.tensor([[[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[X, 0]])
    total = math.exp(2) + 2
    p = [math.exp(2) / total, 1 / total, 1 / total]
    expected = sum((1 / 3) * (math.log(1 / 3) - math.log(pi)) for pi in p)
    assert uniform_kl(logits, labels, "uniform_to_model").item() == pytest.approx(expected, rel=1e-6)


def test_answer_preservation_hand_values():
    """IDK+AP's AP (closer-look trainer/losses.py ap_loss): −(1/β)·mean log σ(β·(S_idk − S_true))."""
    from obliviate.methods.refusal import answer_preservation_loss

    true, refusal, beta = torch.tensor([2.0, 5.0]), torch.tensor([4.0, 5.0]), 0.1
    expected = (-math.log(1 / (1 + math.exp(-0.2))) + math.log(2)) / 2 / beta
    assert answer_preservation_loss(true, refusal, beta).item() == pytest.approx(expected, rel=1e-6)
    grown = torch.tensor([2.0, 5.0], requires_grad=True)
    answer_preservation_loss(grown, refusal, beta).backward()
    assert (grown.grad > 0).all()  # descending lowers the true answers' NLL
