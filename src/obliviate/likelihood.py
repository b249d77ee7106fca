"""Token and sequence log-likelihoods of the labelled (answer) tokens of a batch.

Logits at position t predict the token at t+1, so labels are shifted left by one; positions whose
shifted label is -100 (prompt, padding) contribute nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F

from obliviate.data.tokenize import IGNORE_INDEX, EncodedDataset, TokenBatch


def forward_logits(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Logits [B, T, V] of a causal LM, in at least fp32 for the loss maths (fp64 stays fp64); inside
    :func:`joint_forward`, a batch of that pass is served from it (once)."""
    joint = _JOINT.get()
    if joint is not None and (logits := joint.take(model, batch)) is not None:
        return logits
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class JointForward:
    """The logits of several right-padded micro-batches from ONE forward pass of ``model`` over their rows
    stacked (each padded further on the right to the longest). Attention is causal and padding is on the right,
    so a row's logits at its own positions are those its own batch's pass gives (to float rounding), while the
    model runs once: one pass (and, through the summed loss, one backward) instead of one per micro-batch, and
    under FSDP one all-gather of each layer instead of one per micro-batch."""

    def __init__(self, model: torch.nn.Module, batches: list[TokenBatch]) -> None:
        self.model = model
        width = max(batch.input_ids.shape[1] for batch in batches)

        def stacked(name: str) -> torch.Tensor:
            return torch.cat([F.pad(getattr(batch, name), (0, width - batch.input_ids.shape[1])) for batch in batches])

        logits = forward_logits(model, TokenBatch(stacked("input_ids"), stacked("attention_mask"),
                                                  stacked("labels"), torch.cat([batch.index for batch in batches])))
        self.pending: dict[int, torch.Tensor] = {}
        start = 0
        for batch in batches:
            rows, length = batch.input_ids.shape
            self.pending[id(batch)] = logits[start:start + rows, :length]
            start += rows

    def take(self, model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor | None:
        """``batch``'s logits from the joint pass, the first time the same model asks for them with grad (a
        reference pass without grad, or a second pass after the weights moved, runs the model itself)."""
        if model is not self.model or not torch.is_grad_enabled():
            return None
        return self.pending.pop(id(batch), None)


_JOINT: ContextVar[JointForward | None] = ContextVar("joint_forward", default=None)


@contextlib.contextmanager
def joint_forward(model: torch.nn.Module, batches: list[TokenBatch]) -> Iterator[None]:
    """Within the block, :func:`forward_logits` of ``model`` on any of ``batches`` is served by one joint pass."""
    token = _JOINT.set(JointForward(model, batches))
    try:
        yield
    finally:
        _JOINT.reset(token)


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


@torch.no_grad()
def reference_sequence_nll(model: torch.nn.Module, dataset: EncodedDataset, batch_size: int, device: torch.device
                           ) -> torch.Tensor:
    """S_ref(x) of every example of ``dataset`` under ``model`` as it is now (eval mode), indexed like the data
    set: the reference quantity NPO and DPO cache once instead of keeping a second model."""
    was_training = model.training
    model.eval()
    sums_by_index = torch.zeros(len(dataset))
    for batch in dataset.loader(batch_size):
        batch = batch.to(device)
        sums, _ = sequence_nll(forward_logits(model, batch), batch.labels)
        sums_by_index[batch.index.cpu()] = sums.float().cpu()
    model.train(was_training)
    return sums_by_index


class PerTokenReference:
    """A per-token quantity of the starting model for every example of a data set (e.g. log π_ref(y_t), or a
    target token), computed once, served aligned with a batch's shifted labels [B, T−1]."""

    def __init__(self, rows: list[torch.Tensor]) -> None:
        self.rows = rows

    @classmethod
    @torch.no_grad()
    def compute(cls, model: torch.nn.Module, dataset: EncodedDataset, batch_size: int, device: torch.device,
                quantity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> "PerTokenReference":
        """``quantity(logits, labels)`` → [B, T−1] under ``model`` as it is now (eval mode), for every example."""
        was_training = model.training
        model.eval()
        rows: list[torch.Tensor] = [torch.empty(0)] * len(dataset)
        for batch in dataset.loader(batch_size):
            batch = batch.to(device)
            values = quantity(forward_logits(model, batch), batch.labels).cpu()
            for row, index in enumerate(batch.index.tolist()):
                rows[index] = values[row, :int(batch.attention_mask[row].sum()) - 1]
        model.train(was_training)
        return cls(rows)

    def for_batch(self, batch: TokenBatch) -> torch.Tensor:
        """The cached values of the batch's rows, right-padded with 0 to [B, T−1]."""
        width = batch.input_ids.shape[1] - 1
        first = self.rows[int(batch.index[0])]
        out = torch.zeros((len(batch.index), width), dtype=first.dtype)
        for row, index in enumerate(batch.index.tolist()):
            values = self.rows[index]
            out[row, :len(values)] = values
        return out.to(batch.input_ids.device)
