"""Token and sequence log-likelihoods of the labelled (answer) tokens of a batch.

Logits at position t predict the token at t+1, so labels are shifted left by one; positions whose
shifted label is -100 (prompt, padding) contribute nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from obliviate.data.tokenize import IGNORE_INDEX, TokenBatch


def forward_logits(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Logits [B, T, V] of a causal LM, in at least fp32 for the loss maths (fp64 stays fp64)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits[:, :-1], labels[:, 1:], mask of labelled positions) aligned for next-token prediction."""
    targets = labels[:, 1:]
    return logits[:, :-1], targets, targets != IGNORE_INDEX


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position NLL −log p(y_t) [B, T−1] (0 where unlabelled) and the float mask of labelled positions."""
    logits, targets, mask = shifted(logits, labels)
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return nll * mask, mask.float()


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S(x) = Σ_t −log p(y_t) over each sequence's labelled tokens [B], and their counts |y| [B]."""
    nll, mask = token_nll(logits, labels)
    return nll.sum(dim=1), mask.sum(dim=1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL averaged over all labelled tokens of the batch (what ``model(..., labels=...).loss`` returns)."""
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp(min=1.0)


def token_kl(logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) = Σ_v p_ref(v)(log p_ref(v) − log p_θ(v)), averaged over labelled (answer) positions.

    Direction: the REFERENCE distribution first, as in the TOFU paper and its code
    (locuslab/tofu ``dataloader.py``: ``kl_div(current_log_probs, retain_log_probs, log_target=True)``) and
    open-unlearning (``src/trainer/utils.py`` ``compute_kl_divergence``). Positions: only answer tokens
    count here; open-unlearning averages over every position of the batch (prompt and padding included,
    ``reduction="batchmean"``), which dilutes the term by the prompt length.
    """
    logits, _, mask = shifted(logits, labels)
    reference_logits = reference_logits[:, :-1]
    log_p = F.log_softmax(logits, dim=-1)
    log_ref = F.log_softmax(reference_logits.float(), dim=-1)
    kl = (log_ref.exp() * (log_ref - log_p)).sum(dim=-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1.0)
