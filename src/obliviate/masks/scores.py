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

G_f and G_r are the gradients of the forget and retain NLL summed over one pass of each data set;
X_j is the j-th input feature of a Linear layer over all (non-padding) forget tokens.

Memory: scores are written into one fp32 buffer per parameter (G_r is accumulated there and
transformed in place); G_f uses the parameters' own ``.grad``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from obliviate.data.tokenize import EncodedDataset
from obliviate.methods.likelihood import forward_logits, sequence_nll
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


def accumulate_gradients(inputs: ScoringInputs, dataset: EncodedDataset) -> None:
    """Σ over batches of ∇ NLL (sum of answer-token NLL / tokens of the batch) into each parameter's .grad."""
    model = inputs.model
    device = next(model.parameters()).device
    model.eval()  # no dropout while attributing
    for parameter in inputs.parameters.values():
        parameter.grad = None
    for batch in dataset.loader(inputs.batch_size):
        batch = batch.to(device)
        sums, counts = sequence_nll(forward_logits(model, batch), batch.labels)
        (sums.sum() / counts.sum().clamp(min=1.0)).backward()


@MASK_SCORES.register("wagle")
def wagle(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    if inputs.retain is None:
        raise ValueError("the wagle score needs retain data; set dataset.retain_dataset_name")
    accumulate_gradients(inputs, inputs.retain)
    scores = {}
    for name, parameter in inputs.parameters.items():
        buffer = parameter.grad.float() if parameter.grad is not None else torch.zeros_like(parameter, dtype=torch.float32)
        scores[name] = buffer.div_(-inputs.mu).add_(parameter.detach().float())  # θ − G_r/μ, in place
    accumulate_gradients(inputs, inputs.forget)
    for name, parameter in inputs.parameters.items():
        if parameter.grad is None:
            scores[name].zero_()
        else:
            scores[name].mul_(parameter.grad.float()).abs_()
        parameter.grad = None
    return scores


@MASK_SCORES.register("grad")
def gradient(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    accumulate_gradients(inputs, inputs.forget)
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
