"""Token and sequence log-likelihoods of the labelled (answer) tokens of a batch.

Logits at position t predict the token at t+1, so labels are shifted left by one; positions whose
shifted label is -100 (prompt, padding) contribute nothing.

Two ways to read a model: :func:`forward_logits`, the whole distribution at every position (for terms that need
it: KL, entropy, distillation), and :func:`answer_nll`, only −log p(y_t) of the labelled tokens, for which the
model's output head runs at the labelled positions alone and the fp32 log-softmax over the vocabulary runs a chunk
of positions at a time (:func:`chunked_nll`): on SmolLM2's 49k vocabulary with TOFU-style prompts the head is a
fifth of the model's matrix products, and on Llama-3's 128k vocabulary the [B, T, V] fp32 logits are what fills
the memory.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from obliviate.data.tokenize import IGNORE_INDEX, EncodedDataset, TokenBatch

CHUNK_LOGITS = 2 ** 24
"""At most this many logits (64 MiB in fp32) go through the fp32 log-softmax of :func:`chunked_nll` at once."""


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in fp32 for the loss maths (fp64 stays fp64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def forward_logits(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Logits [B, T, V] of a causal LM, in at least fp32 for the loss maths (fp64 stays fp64); inside
    :func:`joint_forward`, a batch of that pass is served from it (once)."""
    joint = _JOINT.get()
    if joint is not None and (logits := joint.take(model, batch, every_position=True)) is not None:
        return at_least_fp32(logits)
    return at_least_fp32(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits)


def predicting_labels(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions t whose next token y_{t+1} is labelled, the only logits an answer-token loss
    reads (the last position predicts nothing)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


@functools.cache
def _heads_at_positions(model_class: type) -> bool:
    """Whether the class's forward takes transformers' ``logits_to_keep`` (every causal LM of the pinned
    transformers applies it with ``slice_logits_to_keep``, which accepts a boolean mask; remote code, wrapped or
    not, may not)."""
    return ("logits_to_keep" in inspect.signature(model_class.forward).parameters
            and not any(base.__module__.startswith("transformers_modules") for base in model_class.__mro__))


def kept_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor,
                **inputs) -> torch.Tensor:
    """The logits at the ``keep`` positions ([B, T] bool) only, flattened row-major to [N, V] in the model's dtype.

    The output head runs at those positions alone (the model's own forward, with ``logits_to_keep=keep``), so
    wrappers (DDP, FSDP, PEFT) and what a model does after its head (e.g. Gemma's soft-capping) stay as they are;
    a model whose forward has no such argument computes every position and the kept ones are picked."""
    inner = getattr(model, "module", model)  # DDP
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT
    if _heads_at_positions(type(inner)):
        return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, **inputs).logits
    return model(input_ids=input_ids, attention_mask=attention_mask, **inputs).logits[keep]


def _fp32_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(at_least_fp32(logits), targets, reduction="none")


def chunked_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−log softmax(logits)[target] per row of [N, V] logits, in at least fp32, :data:`CHUNK_LOGITS` logits at a
    time. Logits narrower than fp32 (bf16) are recomputed chunk by chunk in backward (``torch.utils.checkpoint``):
    only they are kept, never an fp32 copy or log-softmax of all of them (fp32 logits keep their log-softmax, the
    same size)."""
    rows = max(1, CHUNK_LOGITS // max(logits.shape[-1], 1))
    recompute = logits.requires_grad and logits.dtype.itemsize < 4
    return torch.cat([checkpoint(_fp32_nll, part, goal, use_reentrant=False) if recompute else _fp32_nll(part, goal)
                      for part, goal in zip(logits.split(rows), targets.split(rows))])


def answer_nll(model: torch.nn.Module, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`token_nll` gives on :func:`forward_logits` (per-position −log p(y_t) [B, T−1], 0 where
    unlabelled, and the float mask of labelled positions), with the head and the log-softmax at the labelled
    positions only (:func:`kept_logits`, :func:`chunked_nll`); inside :func:`joint_forward`, served from that pass."""
    joint = _JOINT.get()
    served = joint.take(model, batch, every_position=False) if joint is not None else None
    if served is None:
        served = kept_logits(model, batch.input_ids, batch.attention_mask, predicting_labels(batch.labels))
    elif served.dim() == 3:  # every position was computed for another term of the same split
        return token_nll(at_least_fp32(served), batch.labels)
    targets = batch.labels[:, 1:]
    mask = targets != IGNORE_INDEX
    values = chunked_nll(served, targets[mask])
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values), mask.float()


class JointForward:
    """The logits of several right-padded micro-batches from ONE forward pass of ``model`` over their rows
    stacked (each padded further on the right to the longest). Attention is causal and padding is on the right,
    so a row's logits at its own positions are those its own batch's pass gives (to float rounding), while the
    model runs once: one pass (and, through the summed loss, one backward) instead of one per micro-batch, and
    under FSDP one all-gather of each layer instead of one per micro-batch.

    The head runs at every position of the batches in ``every_position`` (read by :func:`forward_logits`) and at
    the labelled positions only of the others (read by :func:`answer_nll`)."""

    def __init__(self, model: torch.nn.Module, batches: list[TokenBatch], every_position: list[bool]) -> None:
        self.model = model
        width = max(batch.input_ids.shape[1] for batch in batches)

        def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([F.pad(tensor, (0, width - tensor.shape[1])) for tensor in tensors])

        keeps = [torch.ones_like(batch.labels, dtype=torch.bool) if whole else predicting_labels(batch.labels)
                 for batch, whole in zip(batches, every_position)]
        flat = kept_logits(model, stacked([batch.input_ids for batch in batches]),
                           stacked([batch.attention_mask for batch in batches]), stacked(keeps))
        self.pending: dict[int, tuple[bool, torch.Tensor]] = {}
        start = 0
        for batch, whole, keep in zip(batches, every_position, keeps):
            count = int(keep.sum())
            logits = flat[start:start + count]
            self.pending[id(batch)] = (whole, logits.view(*keep.shape, -1) if whole else logits)
            start += count

    def take(self, model: torch.nn.Module, batch: TokenBatch, every_position: bool) -> torch.Tensor | None:
        """``batch``'s logits from the joint pass ([B, T, V] when every position was computed, else the labelled
        positions' [N, V]), the first time the same model asks for them with grad; None when that pass did not
        compute what is asked (every position), for a reference pass without grad, or a second pass after the
        weights moved: those run the model themselves."""
        if model is not self.model or not torch.is_grad_enabled() or id(batch) not in self.pending:
            return None
        whole, logits = self.pending[id(batch)]
        if every_position and not whole:
            return None
        del self.pending[id(batch)]
        return logits


_JOINT: ContextVar[JointForward | None] = ContextVar("joint_forward", default=None)


@contextlib.contextmanager
def joint_forward(model: torch.nn.Module, batches: list[TokenBatch], every_position: list[bool]) -> Iterator[None]:
    """Within the block, :func:`forward_logits` and :func:`answer_nll` of ``model`` on any of ``batches`` are served
    by one joint pass (``every_position``: per batch, whether a term reads its whole distribution)."""
    token = _JOINT.set(JointForward(model, batches, every_position))
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


def sequence_nll(nll: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S(x) = Σ_t −log p(y_t) over each sequence's labelled tokens [B], and their counts |y| [B], from per-position
    NLL and mask (:func:`answer_nll`, :func:`token_nll`)."""
    return nll.sum(dim=1), mask.sum(dim=1)


def mean_nll(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """NLL averaged over all labelled tokens of the batch (what ``model(..., labels=...).loss`` returns), from
    per-position NLL and mask (:func:`answer_nll`, :func:`token_nll`)."""
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
        sums, _ = sequence_nll(*answer_nll(model, batch))
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
