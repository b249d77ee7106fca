"""White-box probes: is the forgotten answer still readable from the model's hidden states, layer by layer?

Output-level metrics cannot tell knowledge that is gone from knowledge that is only hidden from the output
(Hong et al. 2024, "Intrinsic evaluation of unlearning using parametric knowledge traces", arXiv 2406.11614:
most unlearning methods leave the parametric traces in place and suppress them at inference; Łucki et al.
2024, "An adversarial perspective on machine unlearning for AI safety", arXiv 2409.18025: knowledge unlearned
by RMU or NPO is largely recovered by white-box attacks, e.g. fine-tuning on unrelated data or removing directions
in activation space). Two probes read every decoder layer
ℓ = 1..L, h_ℓ being the layer's output (the residual stream after layer ℓ, before the final norm):

* ``logit_lens`` (nostalgebraist 2020, "interpreting GPT: the logit lens", LessWrong): the model's own final
  norm and output head applied to h_ℓ, p_ℓ(y_t) = softmax(W_U · norm(h_ℓ,t−1))[y_t], teacher-forced on the prompt
  and the answer exactly as ``prob`` tokenises them (answer tokens and the closing EOS scored; prompt and padding
  never). Per example p_ℓ = exp(mean_t log p_ℓ(y_t)): at ℓ = L it IS ``prob`` (the model's own logits; on a
  knowledge split, ``prob`` before its normalisation over the options).
  Recorded: ``logit_lens@Lℓ`` = mean over examples of p_ℓ; ``logit_lens`` = max over layers of that mean (the
  most the answer can be read out at any depth); per example, its own max over layers. In plain words: how
  probable the true answer looks if the model stopped at layer ℓ. A method that only suppresses the output
  head leaves the middle layers high while layer L falls.
* ``linear_probe`` (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier probes",
  arXiv 1610.01644): per layer, the features of an answer are the mean of h_ℓ over its answer tokens (and the
  closing EOS) after the prompt. An L2 logistic regression on standardised features (sklearn, C = 1, classes
  weighted to balance, fixed seed) learns on the RETAIN examples (``EvalOptions.probe_training``) to tell the
  true answer (label 1) from each perturbed answer (label 0), then labels this split's answers. The true answer
  is :func:`~obliviate.evaluation.splits.base_answer` (the paraphrased answer on forget/retain/holdout, as the
  truth ratio): like the perturbed answers, it was never trained on verbatim, so the probe reads whether the
  model knows the fact, not whether it recognises a memorised string. Accuracy is class-balanced per example,
  acc = (1[true answer labelled true] + mean_j 1[perturbed answer j labelled false]) / 2, so 0.5 is chance
  whatever the number of perturbed answers. Recorded: ``linear_probe@Lℓ`` = mean acc over this split's
  examples at layer ℓ; ``linear_probe`` = the acc at the layer chosen on retain alone (the best out-of-fold
  acc of a fixed 2-fold split of the retain examples, folds by position: the choice never sees this split);
  per example, its acc at that layer. An example that is also a training example is labelled by the probe of
  the fold that left it out, so the retain split's numbers are held-out numbers too. The probe is fitted anew
  for each evaluated model, on that model's own retain representations. In plain words: whether a linear
  read-out of layer ℓ, learnt on answers the model still knows, finds the true answer on the forget set.
  RMU (Li et al. 2024, "The WMDP benchmark", arXiv 2403.03218) scrambles the representations of a chosen
  layer on forget data and reports that linear probes no longer recover the knowledge: this curve checks
  that claim layer by layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.examples import Example
from obliviate.data.tokenize import IGNORE_INDEX, Query, TokenBatch, collate, encode, example_query
from obliviate.errors import UserError
from obliviate.evaluation.declarations import MetricResult, NotComputed, metric
from obliviate.evaluation.queries import SplitScores

if TYPE_CHECKING:  # sklearn is imported when a probe is fitted (about a second at every start otherwise)
    from sklearn.pipeline import Pipeline
from obliviate.evaluation.splits import Role, base_answer
from obliviate.evaluation.spread import map_batches
from obliviate.likelihood import shifted
from obliviate.models.anatomy import decoder_layers

FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm")  # where each layer stack's norm is
PROBE_ROLES = frozenset({Role.FORGET, Role.HOLDOUT, Role.RETAIN})
PROBE_SEED, PROBE_C, FOLDS = 0, 1.0, 2
FULL_TOLERANCE, HALF_TOLERANCE = 1e-3, 0.1  # nats the lens's last layer may differ from the model's own logits


def layer_name(layer: int, depth: int) -> str:
    """The curve point of 1-based ``layer`` of ``depth`` layers, zero-padded so that names sort: L01, L02, …"""
    return f"L{layer:0{max(2, len(str(depth)))}d}"


@dataclass(frozen=True)
class Readout:
    """What turns a residual-stream state into next-token logits: the final norm, then the output head."""

    norm: torch.nn.Module
    head: torch.nn.Module

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(hidden))


def readout(model: torch.nn.Module) -> Readout:
    """The final norm and output head of a causal LM (also inside peft and accelerate's wrappers)."""
    base = extract_model_from_parallel(model)
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    norm = next((found for path in FINAL_NORMS if (found := _submodule(base, path)) is not None), None)
    if head is None or norm is None:
        raise NotComputed(f"the logit lens cannot find the final norm and output head of {type(base).__name__} (a "
                          "Llama-style model has its norm at model.norm and its head from get_output_embeddings())")
    return Readout(norm, head)


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    module = model
    for attribute in path.split("."):
        module = getattr(module, attribute, None)
        if not isinstance(module, torch.nn.Module):
            return None
    return module


@contextlib.contextmanager
def layer_outputs(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward pass appends every decoder layer's output h_ℓ (ℓ = 1..L, in order)."""
    captured: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    try:
        layers = decoder_layers(model)
    except UserError as unknown:  # e.g. a ULD/Offset combination of two models: no one layer stack to read
        raise NotComputed(str(unknown)) from None
    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _batches(tokenizer: PreTrainedTokenizerBase, queries: list[Query], max_length: int, batch_size: int
             ) -> list[tuple[list[int], TokenBatch]]:
    """The queries encoded as ``prob`` encodes them, batched shortest first (right padding), with their positions."""
    encoded = [encode(tokenizer, query, max_length) for query in queries]
    for query, item in zip(queries, encoded):
        if all(label == IGNORE_INDEX for label in item.labels):
            raise UserError(f"dataset.max_length {max_length} cuts an evaluated answer off entirely (its prompt "
                            f"begins {query.prompt[:50]!r}); raise dataset.max_length")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [(rows, collate([encoded[i] for i in rows], rows, tokenizer.pad_token_id)) for rows in chunks]


def _in_order(count: int, chunks: list[tuple[list[int], TokenBatch]], results: list[np.ndarray]) -> np.ndarray:
    """Per-batch rows put back in the order of the queries."""
    ordered: list[np.ndarray | None] = [None] * count
    for (rows, _), values in zip(chunks, results):
        for row, value in zip(rows, values):
            ordered[row] = value
    return np.stack(ordered)


@torch.no_grad()
def lens_log_probs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, queries: list[Query],
                   max_length: int, batch_size: int) -> np.ndarray:
    """[query, layer]: mean_t log p_ℓ(y_t) over each query's answer tokens, p_ℓ = softmax(head(norm(h_ℓ))).

    The top layer is checked against the model's own logits; a model whose logits are not final norm + output
    head of its last layer's output (e.g. soft-capped logits) is reported as NotComputed."""
    model.eval()
    lens, device = readout(model), next(model.parameters()).device
    chunks = _batches(tokenizer, queries, max_length, batch_size)

    def score(chunk: tuple[list[int], TokenBatch]) -> np.ndarray:
        batch = chunk[1].to(device)
        with layer_outputs(model) as hidden:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        own, targets, mask = shifted(logits, batch.labels)
        rows, picked = mask.nonzero(as_tuple=True)[0], targets[mask].unsqueeze(-1)
        counts = mask.sum(-1).double()

        def mean_log_prob(predicting: torch.Tensor) -> torch.Tensor:
            log_p = F.log_softmax(predicting.float(), dim=-1).gather(-1, picked).squeeze(-1).double()
            return torch.zeros_like(counts).index_add_(0, rows, log_p) / counts

        layers = torch.stack([mean_log_prob(lens.logits(h[:, :-1][mask])) for h in hidden], dim=1)
        _check_top_layer(model, layers[:, -1], mean_log_prob(own[mask]), logits.dtype)
        return layers.cpu().numpy()

    return _in_order(len(queries), chunks, map_batches(chunks, score, "logit lens"))


def _check_top_layer(model: torch.nn.Module, top: torch.Tensor, own: torch.Tensor, dtype: torch.dtype) -> None:
    """The lens at the last layer must give the model's own log-probabilities (to float rounding)."""
    gap = float((top - own).abs().max())
    if gap > (FULL_TOLERANCE if dtype in (torch.float32, torch.float64) else HALF_TOLERANCE):
        raise NotComputed(f"the logit lens of {type(extract_model_from_parallel(model)).__name__} does not reproduce "
                          f"its logits at the last layer (answer log-probabilities differ by {gap:.3g} nats): its "
                          "logits are not its final norm and output head applied to the last layer's output")


@torch.no_grad()
def answer_features(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, queries: list[Query],
                    max_length: int, batch_size: int) -> np.ndarray:
    """[query, layer, width]: each layer's output h_ℓ averaged over the query's answer tokens (and closing EOS),
    teacher-forced after its prompt, in float32."""
    model.eval()
    device = next(model.parameters()).device
    chunks = _batches(tokenizer, queries, max_length, batch_size)

    def features(chunk: tuple[list[int], TokenBatch]) -> np.ndarray:
        batch = chunk[1].to(device)
        with layer_outputs(model) as hidden:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)
        weights = (batch.labels != IGNORE_INDEX).float()
        weights = (weights / weights.sum(-1, keepdim=True)).unsqueeze(-1)
        return torch.stack([(h.float() * weights).sum(1) for h in hidden], dim=1).cpu().numpy()

    return _in_order(len(queries), chunks, map_batches(chunks, features, "probe features"))


@metric("logit_lens", runs_sharded=False)
def logit_lens(scores: SplitScores) -> MetricResult:
    """The answer's probability read from each layer through the final norm and output head (max over layers)."""
    queries = [example_query(scores.tokenizer, e, scores.fmt) for e in scores.split.questions]
    probabilities = np.exp(lens_log_probs(scores.model, scores.tokenizer, queries, scores.options.max_length,
                                          scores.options.batch_size))
    means = probabilities.mean(axis=0)
    curve = {layer_name(layer + 1, len(means)): float(mean) for layer, mean in enumerate(means)}
    return MetricResult(float(means.max()), probabilities.max(axis=1).tolist(), curve=curve)


@dataclass(frozen=True)
class ProbeData:
    """Answers to probe: ``features`` [answer, layer, width]; ``labels`` 1 = the true answer, 0 = a perturbed one;
    ``owners`` the example of each answer (0..examples−1); ``folds`` the fold of a training example's answers
    (0..FOLDS−1) or −1 for an example the probes never trained on."""

    features: np.ndarray
    labels: np.ndarray
    owners: np.ndarray
    folds: np.ndarray

    @property
    def examples(self) -> int:
        return int(self.owners.max()) + 1


def probe() -> Pipeline:
    """Standardised features, then an L2 logistic regression with balanced class weights and a fixed seed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, class_weight="balanced", max_iter=2000,
                                                              random_state=PROBE_SEED))


def example_accuracies(predicted: np.ndarray, data: ProbeData) -> np.ndarray:
    """Per example, (1[true answer predicted 1] + mean_j 1[perturbed answer j predicted 0]) / 2."""
    correct = (predicted == data.labels).astype(float)
    result = np.zeros(data.examples)
    for label in (0, 1):
        chosen = data.labels == label
        hits = np.bincount(data.owners[chosen], correct[chosen], minlength=data.examples)
        result += hits / np.bincount(data.owners[chosen], minlength=data.examples) / 2
    return result


@dataclass(frozen=True)
class FittedProbes:
    """Per layer: the probe fitted on every training answer, the probes fitted without each fold, and the
    out-of-fold accuracy on the training examples (what chooses the layer)."""

    full: list[Pipeline]
    without_fold: list[list[Pipeline]]
    held_out: np.ndarray


def fit_probes(train: ProbeData) -> FittedProbes:
    """Every layer's probes on ``train`` (``FOLDS`` + 1 fits per layer)."""
    full, without_fold, held_out = [], [], []
    for layer in range(train.features.shape[1]):
        x = train.features[:, layer]
        out_of_fold = np.empty_like(train.labels)
        fitted = []
        for fold in range(FOLDS):
            fitted.append(probe().fit(x[train.folds != fold], train.labels[train.folds != fold]))
            out_of_fold[train.folds == fold] = fitted[-1].predict(x[train.folds == fold])
        full.append(probe().fit(x, train.labels))
        without_fold.append(fitted)
        held_out.append(example_accuracies(out_of_fold, train).mean())
    return FittedProbes(full, without_fold, np.array(held_out))


def accuracies_on(probes: FittedProbes, test: ProbeData) -> np.ndarray:
    """[layer, example]: each tested example's accuracy. A tested example that is a training example is labelled by
    the probe fitted without its fold; any other by the probe fitted on every training example."""
    tested = []
    for layer, full in enumerate(probes.full):
        x_test = test.features[:, layer]
        predicted = full.predict(x_test)
        for fold, fitted in enumerate(probes.without_fold[layer]):
            if (test.folds == fold).any():
                predicted[test.folds == fold] = fitted.predict(x_test[test.folds == fold])
        tested.append(example_accuracies(predicted, test))
    return np.stack(tested)


def probe_queries(scores: SplitScores, examples: list[Example], role: Role
                  ) -> tuple[list[Query], np.ndarray, np.ndarray]:
    """Each example's true answer (``base_answer`` of its split's ``role``) and its perturbed answers after its
    question: the queries, their labels and the example each belongs to."""
    queries, labels, owners = [], [], []
    for owner, example in enumerate(examples):
        prompt = scores.prompt(example.question)
        answers = (base_answer(example, role), *example.perturbed_answers)
        queries += [Query(prompt, answer) for answer in answers]
        labels += [1] + [0] * len(example.perturbed_answers)
        owners += [owner] * len(answers)
    return queries, np.array(labels), np.array(owners)


@dataclass(frozen=True)
class TrainedProbes:
    """The probes of one evaluation: fitted once on the training answers' features, shared by every split."""

    features: dict[Query, np.ndarray]  # [layer, width] of each training answer
    fold_of: dict[Example, int]
    probes: FittedProbes


def trained_probes(scores: SplitScores, training: list[Example]) -> TrainedProbes:
    """The training answers' features and the fitted probes, computed on the first split that asks and kept for the
    others in the evaluation's shared memo (the model does not change within one evaluation)."""
    if (found := scores.shared.get("linear_probe")) is None:
        queries, labels, owners = probe_queries(scores, training, Role.RETAIN)
        distinct = list(dict.fromkeys(queries))
        rows = answer_features(scores.model, scores.tokenizer, distinct, scores.options.max_length,
                               scores.options.batch_size)
        features = dict(zip(distinct, rows))
        train = ProbeData(np.stack([features[q] for q in queries]), labels, owners, owners % FOLDS)
        found = scores.shared["linear_probe"] = TrainedProbes(
            features, {example: index % FOLDS for index, example in enumerate(training)}, fit_probes(train))
    return found


def tested_data(scores: SplitScores, trained: TrainedProbes, tested: list[Example]) -> ProbeData:
    """The tested answers' features (an answer the probes trained on is not run again) with their folds."""
    queries, labels, owners = probe_queries(scores, tested, scores.split.role)
    missing = list(dict.fromkeys(q for q in queries if q not in trained.features))
    computed = dict(zip(missing, answer_features(scores.model, scores.tokenizer, missing, scores.options.max_length,
                                                 scores.options.batch_size))) if missing else {}
    features = np.stack([trained.features[q] if q in trained.features else computed[q] for q in queries])
    folds = np.array([trained.fold_of.get(example, -1) for example in tested])[owners]
    return ProbeData(features, labels, owners, folds)


@metric("linear_probe", roles=PROBE_ROLES, runs_sharded=False)
def linear_probe(scores: SplitScores) -> MetricResult:
    """Accuracy of a retain-trained linear probe telling true from perturbed answers (layer chosen on retain)."""
    training = list(dict.fromkeys(e for e in scores.options.probe_training if e.perturbed_answers))
    if len(training) < FOLDS:
        raise NotComputed(f"the probe trains on the retain split's records with perturbed_answer, and {len(training)} "
                          f"are given (at least {FOLDS}): set dataset.retain_dataset_name to a split whose records "
                          "have perturbed_answer")
    questions = scores.split.questions
    tested = [e for e in questions if e.perturbed_answers]
    if not tested:
        raise NotComputed(f"no record of {scores.split.name} has perturbed_answer (the wrong answers the probe tells "
                          "from the true one)")
    trained = trained_probes(scores, training)
    held_out, accuracies = trained.probes.held_out, accuracies_on(trained.probes, tested_data(scores, trained,
                                                                                                  tested))
    chosen = int(np.argmax(held_out))
    by_example = dict(zip(map(id, tested), accuracies[chosen].tolist()))
    curve = {layer_name(layer + 1, len(held_out)): float(row.mean()) for layer, row in enumerate(accuracies)}
    return MetricResult(float(accuracies[chosen].mean()), [by_example.get(id(e)) for e in questions], curve=curve)
