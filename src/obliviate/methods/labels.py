"""Yao et al.'s label methods and their normalised ascent+descent (Jin Yao et al., "Machine Unlearning of
Pre-trained Large Language Models", ACL 2024, arXiv 2402.15159; seed 003; public code yaojin17/Unlearning_LLM
``utils/save_tokenized_dataset.py``, ``run_unlearn.py``).

With ℓ(y | x) = −log p_θ(y | x) on the answer tokens:

* RandomLabel: forget questions trained (gradient DESCENT) toward random answers: every answer token's target
  is replaced by a token id drawn uniformly from the vocabulary (bos/eos/pad ids excluded; a true special
  token keeps its place), L = γ·mean_t ℓ(ỹ_t | x, y_<t) + α·NLL(r). Drawn once per example, as the public
  code draws them once when it tokenises the data set (``np.random.choice`` after ``set_seed(42)``, saved to
  disk); ours with ``seed``. (Redrawing at every step is the "random mismatch" of Yuanshun Yao et al., arXiv
  2310.10683, a different method.)
* AdversarialLabel: the target of each answer token is the STARTING model's most likely token other than the
  true one, ỹ_t = argmax_{v ≠ y_t} p_ref(v | x, y_<t): a nearby wrong answer rather than noise. Computed
  once for the whole forget set before training (one token id per answer token; no reference model kept).
  The public code takes the top-k of the logits at the same position as the label (not the position that
  predicts it), one token off the rule its paper states; we follow the stated rule.
* AscentDescent (the paper's normalised objective): per-sequence mean NLL, ℓ̄_i = mean_t ℓ(y_t), weighted
  −1 on forget and +1 on retain sequences and averaged over the mixed batch of B forget and B retain
  sequences: L = (−Σ_i ℓ̄_i(f) + Σ_j ℓ̄_j(r)) / 2B = −½·mean ℓ̄(f) + ½·mean ℓ̄(r). Per-sequence means make a
  long answer count as much as a short one.

Ascent+KL, the paper's third form, is ``GA_KL`` (gradient ascent + KL(π_ref ‖ π_θ) on retain). Its code's
``compute_kl`` (copied from Yuanshun Yao et al.'s kevinyaobytedance/llm_unlearn) is the cross-entropy
−Σ_v p_ref log p_θ, reference-first already, with the gradient of KL(π_ref ‖ π_θ); ours differs only in the
positions it averages over (answer tokens, where that code takes every position).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from fastargs import Param

from obliviate.config.checkers import FloatValue, IntValue
from obliviate.data.tokenize import IGNORE_INDEX, EncodedDataset
from obliviate.likelihood import PerTokenReference, answer_nll, forward_logits, shifted
from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Batch, Objective, PrepareContext, Term
from obliviate.methods.terms import NLL, weight_params


def random_targets(dataset: EncodedDataset, vocab_size: int, kept: set[int], seed: int) -> PerTokenReference:
    """For every example, its shifted answer labels with each token not in ``kept`` replaced by an id drawn
    uniformly (with ``seed``) from the vocabulary without ``kept``; -100 elsewhere."""
    rng = random.Random(seed)
    choices = [token for token in range(vocab_size) if token not in kept]
    rows = [torch.tensor([label if label == IGNORE_INDEX or label in kept else rng.choice(choices)
                          for label in item.labels[1:]], dtype=torch.long)
            for item in dataset.encoded]
    return PerTokenReference(rows)


def runner_up_targets(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """argmax_{v ≠ y_t} z_v at every position predicting a label [B, T−1] (-100 where unlabelled)."""
    logits, targets, mask = shifted(logits, labels)
    without_truth = logits.scatter(-1, targets.clamp(min=0).unsqueeze(-1), float("-inf"))
    return without_truth.argmax(dim=-1).masked_fill(~mask, IGNORE_INDEX)


def relabelled_nll(logits: torch.Tensor, labels: torch.Tensor, new_targets: torch.Tensor) -> torch.Tensor:
    """mean −log p_θ(ỹ_t) over the answer positions of ``labels``, ỹ the new targets [B, T−1]."""
    logits, _, mask = shifted(logits, labels)
    nll = F.cross_entropy(logits.transpose(1, 2), new_targets.clamp(min=0), reduction="none")
    mask = mask.float()
    return (nll * mask).sum() / mask.sum().clamp(min=1.0)


def sequence_mean_nll(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over sequences of each sequence's mean answer-token NLL, from per-position NLL and mask."""
    return (nll.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean()


class RelabelledForget(Term):
    """NLL of new targets for the forget answers (random, or the starting model's runner-up), cached once."""

    split = "forget"
    shares_forward = True

    def __init__(self, kind: str, seed: int = 0) -> None:
        self.kind, self.seed = kind, seed
        self.name = f"{kind}_label_nll"
        self.targets: PerTokenReference | None = None

    def prepare(self, context: PrepareContext) -> None:
        dataset = context.datasets[self.split]
        if self.kind == "random":
            config = context.model.config
            special = {getattr(config, key, None) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
            kept = {int(i) for ids in special if ids is not None for i in (ids if isinstance(ids, list) else [ids])}
            self.targets = random_targets(dataset, config.vocab_size, kept, self.seed)
        else:
            self.targets = PerTokenReference.compute(context.model, dataset, context.batch_size, context.device,
                                                     runner_up_targets)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        if self.targets is None:
            raise RuntimeError(f"{self.name}: prepare() must run before training")
        data = batch[self.split]
        return relabelled_nll(forward_logits(model, data), data.labels, self.targets.for_batch(data))


class SequenceMeanNLL(Term):
    """mean over the sequences of ``batch[split]`` of their mean answer-token NLL."""

    shares_forward = True
    reads_distribution = False

    def __init__(self, split: str) -> None:
        self.split = split
        self.name = f"{split}_sequence_nll"

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        return sequence_mean_nll(*answer_nll(model, data))


@METHODS.register("RandomLabel")
class RandomLabel(Method):
    """Random labels: descend on random answer tokens for the forget questions (+ α·NLL(r))."""

    params = {**weight_params(1.0, 0.0), "seed": Param(IntValue(low=0), "seed of the random answer tokens", default=0)}

    @staticmethod
    def build(gamma: float, alpha: float, seed: int) -> Objective:
        return RelabelledForget("random", seed) * gamma + NLL("retain") * alpha


@METHODS.register("AdversarialLabel")
class AdversarialLabel(Method):
    """Adversarial labels: descend on the starting model's most likely wrong token (+ α·NLL(r))."""

    params = weight_params(1.0, 0.0)

    @staticmethod
    def build(gamma: float, alpha: float) -> Objective:
        return RelabelledForget("adversarial") * gamma + NLL("retain") * alpha


@METHODS.register("AscentDescent")
class AscentDescent(Method):
    """Normalised ascent + descent over the mixed batch: −½·mean ℓ̄(f) + ½·retain_factor·mean ℓ̄(r)."""

    params = {"retain_factor": Param(FloatValue(low=0.0), "weight of the descent on retain sequences relative "
                                     "to the ascent on forget ones (the paper: 1)", default=1.0)}

    @staticmethod
    def build(retain_factor: float) -> Objective:
        return SequenceMeanNLL("forget") * -0.5 + SequenceMeanNLL("retain") * (0.5 * retain_factor)
