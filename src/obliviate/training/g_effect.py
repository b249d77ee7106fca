"""G-effect diagnostics (Wang et al., "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go
Beyond", ICLR 2025, arXiv 2502.19301; seed 001; public code tmlr-group/G-effect ``dataloader_ge.py``).

The G-effect of the unlearning objective L on a risk R is the inner product of their gradients,

    e = ⟨∇_θ L, ∇_θ R⟩,    R = NLL on forget data ("unlearning", e_u) or on retain data ("retention", e_r),

split into blocks of parameters: ``embeddings``, ``layer_<i>`` for every decoder layer, and ``head`` (final
norm and output head; a head tied to the embeddings counts as embeddings). A gradient step θ ← θ − η∇L
changes R by about −η·e, so **a negative e_u means the step forgets** (forget NLL rises) and **a negative
e_r means it damages retained knowledge** (retain NLL rises); the paper wants e_u notably negative and e_r
not negative.

Two definitions (``unlearn.g_effect_definition``), differing in which gradients are multiplied:

* ``seed`` (the default, as the seed's code): ∇L is the step's gradient as accumulated, BEFORE clipping and
  before a mask restricts it, and ∇R is taken on the step's OWN micro-batches (the forget risk on the forget
  batches the step trained on, so the self-term is included; the retain risk on its retain batches, or, for an
  objective that reads no retain data, on a retain batch the probe draws). The seed computes this after
  training, on frozen checkpoints, for its forget-only objectives; here it is read from the live run, with the
  whole objective (retain terms too) as the step applies it.
* ``probe``: ∇L is the gradient the optimiser applies (clipped, masked; with LoRA only the adapters), and ∇R
  is taken on probe batches of the forget and retain sets that the probe draws itself: an estimate of the
  step's effect on the risks in general rather than on the data it just saw.

In both, ∇R is the gradient of the mean answer-token NLL of the EVALUATED model (for ULD and Offset the
combined model z_T + w·z_A, whose forgetting the metrics measure, not the assistant alone) with respect to the
trained parameters, taken with ``torch.autograd.grad`` (the training ``.grad`` is left untouched), with the
random state (CPU and CUDA) forked so that dropout in the probe's passes does not change training.
Smoothing as the seed: each gradient (∇L, ∇R_forget, ∇R_retain) is an exponential moving average,
g ← 0.6·g_old + 0.4·g_new, updated at every logged step (the seed updates it at every micro-batch of a frozen
checkpoint; here the checkpoints are the live run's). ``smoothing`` 0 logs the raw products. The seed's
blocks are groups of ten layers; ours are single layers.

Resumable: the averages and the probe stream's position are part of a checkpoint (``unlearn.save_every``).
Cost per logged step: a forward+backward pass per risk batch (with ``seed`` and gradient accumulation, one per
micro-batch) and, with smoothing, three float32 copies of the trainable parameters kept between logged steps.
Output: ``g_effect.jsonl`` (one record per logged step) and ``g_effect.png`` (blocks × steps).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from obliviate.data.tokenize import EncodedDataset, TokenBatch
from obliviate.likelihood import answer_nll, mean_nll
from obliviate.methods.objective import Batch
from obliviate.plotting import pyplot
from obliviate.training.loop import micro_batches

G_EFFECT_LOG = "g_effect.jsonl"
SMOOTHING = 0.6  # weight of the old gradient in the seed's moving average
LAYER = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")
EMBEDDING = re.compile(r"embed|wte|wpe")
RISKS = ("forget", "retain")
DEFINITIONS = ("seed", "probe")


def block_of(name: str) -> str:
    """The block of a parameter name: layer_<i>, embeddings or head."""
    if match := LAYER.search(name):
        return f"layer_{int(match.group(1))}"
    return "embeddings" if EMBEDDING.search(name) else "head"


def block_order(blocks: set[str]) -> list[str]:
    """embeddings, layer_0 … layer_{n−1}, head."""
    layers = sorted((b for b in blocks if b.startswith("layer_")), key=lambda b: int(b.split("_")[1]))
    return [b for b in ("embeddings",) if b in blocks] + layers + [b for b in ("head",) if b in blocks]


def blockwise_products(first: list[torch.Tensor], second: list[torch.Tensor], blocks: list[str]) -> dict[str, float]:
    """Σ over each block's tensors of ⟨first, second⟩."""
    totals: dict[str, float] = {}
    for a, b, block in zip(first, second, blocks):
        totals[block] = totals.get(block, 0.0) + float((a.double() * b.double()).sum())
    return totals


class GEffectProbe:
    """Every ``every`` optimiser steps, the blockwise G-effects of the step's gradient on the forget and retain
    NLL of ``evaluated``, appended to ``path`` (jsonl); ``definition`` ``seed`` or ``probe`` (module docstring).
    The training loop calls it with the step's micro-batches, before clipping when :attr:`before_clipping`."""

    def __init__(self, every: int, path: Path, evaluated: torch.nn.Module, *, definition: str,
                 datasets: dict[str, EncodedDataset], batch_size: int, seed: int, smoothing: float = SMOOTHING) -> None:
        self.every, self.path, self.evaluated, self.smoothing = every, path, evaluated, smoothing
        self.own_batches = definition == "seed"
        self.before_clipping = definition == "seed"
        self.probes: Iterator[Batch] = micro_batches({k: datasets[k] for k in RISKS}, "forget", batch_size,
                                                     seed + 1)
        self.drawn = 0  # probe batches taken from the stream (replayed on resume)
        self.averages: dict[str, list[torch.Tensor]] = {}

    def state_dict(self) -> dict:
        """The moving averages and the probe stream's position: saved with a resumable checkpoint."""
        return {"drawn": self.drawn, "averages": self.averages}

    def load_state_dict(self, state: dict) -> None:
        for _ in range(state["drawn"] - self.drawn):
            next(self.probes)
        self.drawn, self.averages = state["drawn"], state["averages"]

    def _smoothed(self, key: str, gradients: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.smoothing == 0.0:
            return gradients
        if key not in self.averages:
            self.averages[key] = [g.detach().float().clone() for g in gradients]
        else:
            for average, g in zip(self.averages[key], gradients):
                average.mul_(self.smoothing).add_(g.detach().float(), alpha=1.0 - self.smoothing)
        return self.averages[key]

    def __call__(self, step: int, model: torch.nn.Module, batches: list[Batch]) -> None:
        if step % self.every:
            return
        start = time.perf_counter()
        device = next(model.parameters()).device
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
            else []
        with torch.random.fork_rng(devices=cuda):  # dropout in the probe's passes must not shift training's
            record = self._record(step, model, batches)
        record["seconds"] = round(time.perf_counter() - start, 3)
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def _risk_batches(self, batches: list[Batch], device: torch.device) -> dict[str, list[TokenBatch]]:
        """Per risk, the batches its gradient is taken on: the step's own (``seed``) or the probe's."""
        drawn = next(self.probes)
        self.drawn += 1
        chosen = {}
        for risk in RISKS:
            own = [batch[risk] for batch in batches if risk in batch] if self.own_batches else []
            chosen[risk] = [part.to(device) for part in own or [drawn[risk]]]
        return chosen

    def _risk_gradient(self, parameters: list[torch.nn.Parameter], batches: list[TokenBatch]) -> list[torch.Tensor]:
        """∇ of the mean over ``batches`` of the evaluated model's mean answer-token NLL."""
        total = [torch.zeros_like(p) for p in parameters]
        for data in batches:
            risk = mean_nll(*answer_nll(self.evaluated, data)) / len(batches)
            for accumulated, g in zip(total, torch.autograd.grad(risk, parameters, allow_unused=True)):
                if g is not None:
                    accumulated.add_(g)
        return total

    def _record(self, step: int, model: torch.nn.Module, batches: list[Batch]) -> dict:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
        parameters = [p for _, p in named]
        blocks = [block_of(n) for n, _ in named]
        objective = self._smoothed("objective", [p.grad for p in parameters])
        record: dict = {"step": step}
        for risk, risk_batches in self._risk_batches(batches, parameters[0].device).items():
            per_block = blockwise_products(objective, self._smoothed(risk, self._risk_gradient(parameters,
                                                                                               risk_batches)), blocks)
            record[risk] = {block: per_block[block] for block in block_order(set(per_block))}
            record[f"{risk}_total"] = sum(per_block.values())
        return record


def plot_g_effect(jsonl: Path, path: Path, title: str) -> None:
    """Two heat maps, blocks × logged steps, of the unlearning and the retention G-effect (red: negative)."""
    plt = pyplot()
    from matplotlib.colors import SymLogNorm

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    if not records:
        return
    steps = [r["step"] for r in records]
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.25 * len(records[0]["forget"]) + 2.5), squeeze=False)
    for axis, risk, label in zip(axes[0], RISKS, ("unlearning G-effect e_u (forget NLL)",
                                                  "retention G-effect e_r (retain NLL)")):
        blocks = list(records[0][risk])
        values = torch.tensor([[r[risk][b] for r in records] for b in blocks])
        limit = float(values.abs().max()) or 1.0
        image = axis.imshow(values.numpy(), aspect="auto", cmap="RdBu",
                            norm=SymLogNorm(linthresh=limit * 1e-3, vmin=-limit, vmax=limit))
        axis.set(title=label, xlabel="step", yticks=range(len(blocks)), yticklabels=blocks)
        axis.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize=7)
        axis.tick_params(axis="y", labelsize=7)
        figure.colorbar(image, ax=axis)
    figure.suptitle(f"{title}: negative e_u = forgetting, negative e_r = damage to retained knowledge")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
