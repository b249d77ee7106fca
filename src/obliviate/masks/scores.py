"""Per-weight saliency scores (fp32 even for bf16 models, whose scores would tie massively).

=============  =============================================  ==========================================
score          formula                                        source
=============  =============================================  ==========================================
``wagle``      s = |(θ − G_r/μ) ⊙ G_f|                        WAGLE, Jia et al. NeurIPS 2024 (2410.17509)
``grad``       s = |G_f|                                      SalUn-style gradient saliency (2310.12508)
``magnitude``  s = |θ|                                        baseline
``random``     s ~ U[0, 1) (seeded)                           baseline
``wanda``      s_ij = |W_ij| · ‖X_j‖₂ (Linear weights only)   Wanda, Sun et al. 2023 (2306.11695)
=============  =============================================  ==========================================

G_f and G_r follow WAGLE's ``generate_mask.py``, which iterates a paired data set as long as the forget
set (item i = forget example i with a retain example drawn at random, with replacement): G_f is the sum
over its ⌈|f|/b⌉ batches of ∇ mean-token-NLL of the forget halves, G_r the same sum over the retain halves,
so G_r sums as many retain batches as G_f sums forget batches, whatever the size of the retain set (summing
the whole retain set would shrink the effective μ by |retain|/|forget|). See :func:`paired_batches`.
X_j is the j-th input feature of a Linear layer over all (non-padding) forget tokens.

Memory: scores are written into one fp32 buffer per parameter (G_r is accumulated there and
transformed in place); G_f uses the parameters' own ``.grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from obliviate.data.tokenize import EncodedDataset
from obliviate.likelihood import answer_nll, sequence_nll
from obliviate.registry import Registry


@dataclass
class ScoringInputs:
    model: torch.nn.Module
    parameters: dict[str, torch.nn.Parameter]  # the selected parameters, by name
    forget: EncodedDataset
    retain: EncodedDataset | None
    batch_size: int
    mu: float
    seed: int


Score = Callable[[ScoringInputs], dict[str, torch.Tensor]]
MASK_SCORES: Registry[Score] = Registry("mask score")


def paired_batches(forget_size: int, retain_size: int, batch_size: int, seed: int
                   ) -> tuple[list[list[int]], list[list[int]]]:
    """WAGLE's pairing: forget indices in a seeded shuffled order, each with a retain partner drawn uniformly
    with replacement, cut into batches of ``batch_size``; returns (forget batches, retain batches).

    Draws (a reproducible recipe): ``g = torch.Generator().manual_seed(seed)``; ``order = randperm(forget_size, g)``;
    ``partners = randint(retain_size, (forget_size,), g)`` (``retain_size`` 0: no retain batches).
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(forget_size, generator=generator).tolist()
    partners = torch.randint(retain_size, (forget_size,), generator=generator).tolist() if retain_size else []
    starts = range(0, forget_size, batch_size)
    return ([order[i:i + batch_size] for i in starts],
            [partners[i:i + batch_size] for i in starts] if partners else [])


def accumulate_gradients(inputs: ScoringInputs, dataset: EncodedDataset, batches: list[list[int]]) -> None:
    """Σ over ``batches`` (lists of row indices) of ∇ mean answer-token NLL of the batch, into each .grad."""
    model = inputs.model
    device = next(model.parameters()).device
    model.eval()  # no dropout while attributing
    for parameter in inputs.parameters.values():
        parameter.grad = None
    for rows in batches:
        batch = dataset.collate([dataset[row] for row in rows]).to(device)
        sums, counts = sequence_nll(*answer_nll(model, batch))
        (sums.sum() / counts.sum().clamp(min=1.0)).backward()


def _batches(inputs: ScoringInputs) -> tuple[list[list[int]], list[list[int]]]:
    return paired_batches(len(inputs.forget), len(inputs.retain) if inputs.retain is not None else 0,
                          inputs.batch_size, inputs.seed)


@MASK_SCORES.register("wagle")
def wagle(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    if inputs.retain is None:
        raise ValueError("the wagle score needs retain data; set dataset.retain_dataset_name")
    forget_batches, retain_batches = _batches(inputs)
    accumulate_gradients(inputs, inputs.retain, retain_batches)
    scores = {}
    for name, parameter in inputs.parameters.items():
        buffer = (parameter.grad.float() if parameter.grad is not None
                  else torch.zeros_like(parameter, dtype=torch.float32))
        scores[name] = buffer.div_(-inputs.mu).add_(parameter.detach().float())  # θ − G_r/μ, in place
    accumulate_gradients(inputs, inputs.forget, forget_batches)
    for name, parameter in inputs.parameters.items():
        if parameter.grad is None:
            scores[name].zero_()
        else:
            scores[name].mul_(parameter.grad.float()).abs_()
        parameter.grad = None
    return scores


@MASK_SCORES.register("grad")
def gradient(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    accumulate_gradients(inputs, inputs.forget, _batches(inputs)[0])
    scores = {}
    for name, parameter in inputs.parameters.items():
        grad = parameter.grad
        scores[name] = grad.float().abs_() if grad is not None else torch.zeros_like(parameter, dtype=torch.float32)
        parameter.grad = None
    return scores


@MASK_SCORES.register("magnitude")
def magnitude(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    return {name: p.detach().float().abs() for name, p in inputs.parameters.items()}


@MASK_SCORES.register("random")
def random_scores(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(inputs.seed)
    return {name: torch.rand(p.shape, generator=generator).to(p.device) for name, p in inputs.parameters.items()}


@MASK_SCORES.register("wanda")
@torch.no_grad()
def wanda(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    model = inputs.model
    linears = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if not_linear := sorted(set(inputs.parameters) - set(linears)):
        raise ValueError(f"the wanda score applies to Linear weights only, not {not_linear[0]}; "
                         "restrict mask.include to Linear layers (e.g. 'mlp|self_attn')")
    squares = {name: torch.zeros(linears[name].in_features, dtype=torch.float32, device=linears[name].weight.device)
               for name in inputs.parameters}
    valid: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module, args, output):
            features = args[0].reshape(-1, args[0].shape[-1])[valid["rows"]]
            squares[name] += features.float().pow(2).sum(0)
        return hook

    handles = [linears[name].register_forward_hook(record(name)) for name in inputs.parameters]
    device = next(model.parameters()).device
    model.eval()
    try:
        for batch in inputs.forget.loader(inputs.batch_size):
            batch = batch.to(device)
            valid["rows"] = batch.attention_mask.reshape(-1).bool()  # padding tokens never count
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    return {name: inputs.parameters[name].detach().float().abs() * squares[name].sqrt()[None, :]
            for name in inputs.parameters}
