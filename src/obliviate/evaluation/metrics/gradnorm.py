"""``mia_gradnorm``: the gradient-norm membership attack, open-unlearning's sixth MIA
(locuslab/open-unlearning ``src/evals/metrics/mia/gradnorm.py``, config ``mia_gradnorm.yaml`` with p = 2 and
batch size 1).

Per example (one at a time): the loss is the mean NLL of its answer tokens without the closing EOS (the
tokens of open-unlearning's ``tokenwise_logprobs``); its gradient is taken for EVERY parameter of the model
(whatever was frozen for training), and the score is

    s = −(1/|P|) Σ_{p ∈ P} ‖∇_p NLL‖₂

the mean over parameter tensors of each tensor's L2 gradient norm, negated so that, as for every membership
score here, higher = more member-like (a trained-on example sits near a minimum: small gradient).
open-unlearning returns the positive mean norm and takes holdout as the AUC's positive class: the same AUC.
Cost: one forward and one backward pass per example, with the gradients of all parameters in memory.
"""

from __future__ import annotations

import torch

from obliviate.data.tokenize import IGNORE_INDEX, collate, encode, example_query
from obliviate.evaluation.declarations import MetricResult, mean_of, metric
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.spread import map_batches
from obliviate.likelihood import answer_nll, mean_nll


def gradient_norms(model: torch.nn.Module, batches: list) -> list[float]:
    """Mean per-tensor L2 norm of ∇ mean-NLL for each one-example batch, over all parameters."""
    parameters = list(model.parameters())
    trainable = [parameter.requires_grad for parameter in parameters]
    was_training = model.training
    model.eval()
    def norm(batch) -> float:
        loss = mean_nll(*answer_nll(model, batch))
        gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
        return float(torch.stack([g.float().norm(2) for g in gradients if g is not None]).mean())

    try:
        for parameter in parameters:
            parameter.requires_grad_(True)
        with torch.enable_grad():
            norms = map_batches(batches, norm, "gradient norms")
    finally:
        for parameter, flag in zip(parameters, trainable):
            parameter.requires_grad_(flag)
        model.train(was_training)
    return norms


@metric("mia_gradnorm", reads="any", membership=True, runs_sharded=False)  # autograd.grad crashes under FSDP2
def gradient_norm_score(scores: SplitScores) -> MetricResult:
    """Gradient-norm attack: −mean per-tensor ‖∇ NLL‖₂ of each example (higher = more member-like)."""
    device = next(scores.model.parameters()).device
    batches = []
    for index, example in enumerate(scores.examples):
        encoded = encode(scores.tokenizer, example_query(scores.tokenizer, example, scores.fmt),
                         scores.options.max_length)
        if encoded.closing_eos:  # the closing EOS is not scored (open-unlearning's token span)
            encoded.labels[-1] = IGNORE_INDEX
        batches.append(collate([encoded], [index], scores.tokenizer.pad_token_id).to(device))
    values = [-norm for norm in gradient_norms(scores.model, batches)]
    return MetricResult(mean_of(values), values)
