"""White-box probes: the logit lens against a hand computation from HF's hidden states, and equal to ``prob`` at the
last layer; the linear probe's fitting, layer choice and per-example accuracy on synthetic features; the plot."""

import copy

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from obliviate.data.examples import Example
from obliviate.data.tokenize import IGNORE_INDEX, PromptFormat, Query, encode, example_query
from obliviate.evaluation import METRICS
from obliviate.evaluation.declarations import NotComputed
from obliviate.evaluation.evaluator import evaluate
from obliviate.evaluation.metrics import whitebox
from obliviate.evaluation.metrics.whitebox import (
    ProbeData,
    accuracies_on,
    example_accuracies,
    fit_probes,
    layer_name,
    lens_log_probs,
    readout,
)
from obliviate.evaluation.queries import EvalOptions, SplitScores
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import Role, Split
from obliviate.layer_curves import plot_layer_curves
from obliviate.models.embedded import tiny_random_llama

MAX_LENGTH = 96
OPTIONS = EvalOptions(batch_size=2, max_length=MAX_LENGTH, max_new_tokens=4)
FORGET = [Example("Where was Ada born?", "Ada was born in London in 1815.", paraphrased_answer="In London.",
                  perturbed_answers=("In Paris.", "In Rome.")),
          Example("Who wrote Emma?", "Jane Austen.", paraphrased_answer="Austen wrote it.",
                  perturbed_answers=("Dickens wrote it.",))]
RETAIN = [Example(f"What is fact {n}?", f"Fact {n} is {n * 7}.", paraphrased_answer=f"It is {n * 7}.",
                  perturbed_answers=(f"It is {n * 7 + 1}.", f"It is {n * 7 + 2}.")) for n in range(4)]


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_random_llama(tokenizer).eval()


def scores_of(model, tokenizer, name, examples, role, options=OPTIONS, shared=None):
    return SplitScores(Split(name, role, tuple(examples), True), model, tokenizer, PromptFormat(), options,
                       shared=shared)


def queries_of(tokenizer, examples):
    return [example_query(tokenizer, e, PromptFormat()) for e in examples]


@torch.no_grad()
def direct_lens(model, tokenizer, query):
    """Mean answer log-probability read at each layer, one unpadded sequence, from HF's hidden states by hand."""
    item = encode(tokenizer, query, MAX_LENGTH)
    hidden = model(input_ids=torch.tensor([item.input_ids]), output_hidden_states=True).hidden_states
    labels = torch.tensor(item.labels)[1:]
    scored = labels != IGNORE_INDEX

    def mean_log_prob(logits):
        logits = logits[0, :-1][scored].double()
        log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        return log_p[torch.arange(int(scored.sum())), labels[scored]].mean().item()

    layer_1 = model.lm_head(model.model.norm(hidden[1]))
    layer_2 = model.lm_head(hidden[2])  # HF's last hidden state is already normed
    return [mean_log_prob(layer_1), mean_log_prob(layer_2)]


def test_lens_reads_each_layer_through_the_final_norm_and_head(model, tokenizer):
    queries = queries_of(tokenizer, FORGET + RETAIN)
    lens = lens_log_probs(model, tokenizer, queries, MAX_LENGTH, batch_size=3)
    assert lens.shape == (len(queries), 2)
    for row, query in enumerate(queries):
        assert lens[row] == pytest.approx(direct_lens(model, tokenizer, query), abs=1e-5)


def test_last_layer_is_prob_and_the_metric_records_max_over_layers(model, tokenizer):
    prob = METRICS.get("prob").compute(scores_of(model, tokenizer, "retain", RETAIN, Role.RETAIN))
    result = METRICS.get("logit_lens").compute(scores_of(model, tokenizer, "retain", RETAIN, Role.RETAIN))
    p = np.exp(lens_log_probs(model, tokenizer, queries_of(tokenizer, RETAIN), MAX_LENGTH, 2))
    assert p[:, -1] == pytest.approx(prob.per_example, rel=1e-5)
    assert set(result.curve) == {"L01", "L02"}
    assert [result.curve["L01"], result.curve["L02"]] == pytest.approx(p.mean(axis=0).tolist(), rel=1e-9)
    assert result.value == pytest.approx(max(result.curve.values()))
    assert result.per_example == pytest.approx(p.max(axis=1).tolist())


def test_lens_is_the_same_alone_and_padded_beside_a_longer_answer(model, tokenizer):
    short = Query("Question: Who?\nAnswer:", "Bob.")
    long = Query("Question: Tell me everything about the history of the long river?\nAnswer:",
                 "It is a very long answer that goes on and on for many more tokens than the other one.")
    alone = lens_log_probs(model, tokenizer, [short], MAX_LENGTH, batch_size=1)
    together = lens_log_probs(model, tokenizer, [long, short], MAX_LENGTH, batch_size=2)
    assert together[1] == pytest.approx(alone[0], abs=1e-5)


def test_lens_works_under_a_peft_wrapper(model, tokenizer):
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"]))  # B = 0: same model
    queries = queries_of(tokenizer, FORGET)
    assert lens_log_probs(wrapped, tokenizer, queries, MAX_LENGTH, 2) == pytest.approx(
        lens_log_probs(model, tokenizer, queries, MAX_LENGTH, 2), abs=1e-6)


def test_a_model_without_final_norm_and_head_is_not_computed_and_named():
    with pytest.raises(NotComputed, match="Linear"):
        readout(torch.nn.Linear(2, 2))


def test_layer_names_sort():
    assert [layer_name(1, 2), layer_name(12, 32), layer_name(7, 120)] == ["L01", "L12", "L007"]


def test_per_example_accuracy_weighs_the_true_answer_as_all_perturbed_ones():
    data = ProbeData(np.zeros((6, 1, 1)), np.array([1, 0, 0, 0, 1, 0]), np.array([0, 0, 0, 0, 1, 1]),
                     np.full(6, -1))
    accuracies = example_accuracies(np.array([1, 1, 0, 0, 0, 0]), data)
    assert accuracies == pytest.approx([(1 + 2 / 3) / 2, (0 + 1) / 2])


def synthetic(examples, perturbed, rng, folds):
    """Layer 0 constant (reads nothing), layer 1 with the label on its first feature (linearly separable)."""
    labels = np.tile([1] + [0] * perturbed, examples)
    owners = np.repeat(np.arange(examples), perturbed + 1)
    features = np.zeros((len(labels), 2, 3))
    features[:, 1] = rng.normal(scale=0.5, size=(len(labels), 3))
    features[:, 1, 0] += 6.0 * labels
    return ProbeData(features, labels, owners, folds(owners))


def test_probe_finds_the_separable_layer_and_chance_at_the_other():
    rng = np.random.default_rng(0)
    train = synthetic(20, 2, rng, lambda owners: owners % 2)
    test = synthetic(6, 3, rng, lambda owners: np.full(len(owners), -1))
    probes = fit_probes(train)
    held_out, tested = probes.held_out, accuracies_on(probes, test)
    assert held_out == pytest.approx([0.5, 1.0])
    assert int(np.argmax(held_out)) == 1
    assert tested[0] == pytest.approx([0.5] * 6) and tested[1] == pytest.approx([1.0] * 6)


def test_a_training_example_is_labelled_by_the_probe_that_did_not_see_it():
    """Random labels on 200-wide noise: a probe fitted on every example memorises them (in-sample accuracy 1); the
    probe of the other fold cannot (chance)."""
    rng = np.random.default_rng(1)
    labels, owners = np.tile([1, 0], 12), np.repeat(np.arange(12), 2)
    features = rng.normal(size=(24, 1, 200))
    train = ProbeData(features, labels, owners, owners % 2)
    probes = fit_probes(train)
    seen = accuracies_on(probes, train)
    unseen = accuracies_on(probes, ProbeData(features, labels, owners, np.full(24, -1)))
    assert unseen[0].mean() == 1.0
    assert seen[0].mean() < 0.8


def test_linear_probe_compares_the_base_answer_with_the_perturbed_ones_and_runs_each_answer_once(
        tokenizer, monkeypatch):
    """Features faked: layer 1 blank, layer 2 tells the true (base) answer from the others; the retain split's own
    examples are the training examples (each (prompt, answer) run once); a record without perturbed answers gets
    None."""
    asked = []

    def fake_features(model, tokenizer, queries, max_length, batch_size):
        asked.extend(queries)
        true_answers = {e.paraphrased_answer for e in FORGET + RETAIN}
        return np.array([[[0.0, 0.0], [1.0 if q.answer in true_answers else -1.0, 0.0]] for q in queries])

    monkeypatch.setattr(whitebox, "answer_features", fake_features)
    options = EvalOptions(batch_size=2, max_length=MAX_LENGTH, max_new_tokens=4,
                          probe_training=tuple(RETAIN))
    retain = METRICS.get("linear_probe").compute(scores_of(None, tokenizer, "retain", RETAIN, Role.RETAIN, options))
    assert len(asked) == len(set(asked)) == sum(1 + len(e.perturbed_answers) for e in RETAIN)
    assert {q.answer for q in asked} >= {e.paraphrased_answer for e in RETAIN}
    assert not {q.answer for q in asked} & {e.answer for e in RETAIN}  # the paraphrase, not the trained answer
    assert retain.curve == {"L01": 0.5, "L02": 1.0} and retain.value == 1.0
    forget = METRICS.get("linear_probe").compute(
        scores_of(None, tokenizer, "forget", [*FORGET, Example("Q?", "A.")], Role.FORGET, options))
    assert forget.per_example == [1.0, 1.0, None] and forget.value == 1.0
    asked.clear()  # one evaluation: the probes train once, and a split runs only its own answers
    shared = {}
    for name, examples, role in (("retain", RETAIN, Role.RETAIN), ("forget", FORGET, Role.FORGET),
                                 ("forget_again", FORGET, Role.FORGET)):
        METRICS.get("linear_probe").compute(scores_of(None, tokenizer, name, examples, role, options, shared))
    assert len(asked) == sum(1 + len(e.perturbed_answers) for e in RETAIN) + 2 * sum(
        1 + len(e.perturbed_answers) for e in FORGET)


def test_linear_probe_without_retain_training_examples_or_perturbed_answers_is_not_computed(tokenizer):
    with pytest.raises(NotComputed, match="dataset.retain_dataset_name"):
        METRICS.get("linear_probe").compute(scores_of(None, tokenizer, "forget", FORGET, Role.FORGET))
    options = EvalOptions(batch_size=2, max_length=MAX_LENGTH, max_new_tokens=4,
                          probe_training=tuple(RETAIN))
    plain = [Example("Q?", "A.")]
    with pytest.raises(NotComputed, match="perturbed_answer"):
        METRICS.get("linear_probe").compute(scores_of(None, tokenizer, "forget", plain, Role.FORGET, options))


def test_evaluate_records_both_probes_with_their_layer_curves(model, tokenizer, tmp_path):
    options = EvalOptions(batch_size=4, max_length=MAX_LENGTH, max_new_tokens=4,
                          probe_training=tuple(RETAIN))
    splits = [Split("forget", Role.FORGET, tuple(FORGET), True), Split("retain", Role.RETAIN, tuple(RETAIN), True)]
    evaluation = evaluate(model, tokenizer, splits, PromptFormat(), options, ["prob", "logit_lens", "linear_probe"])
    assert evaluation.not_computed == {}
    for split in ("forget", "retain"):
        recorded = evaluation.splits[split]
        assert {"logit_lens", "logit_lens@L01", "logit_lens@L02", "linear_probe", "linear_probe@L01",
                "linear_probe@L02"} <= set(recorded)
        assert 0.0 <= recorded["linear_probe"] <= 1.0
        assert recorded["logit_lens@L02"] == pytest.approx(recorded["prob"], rel=1e-5)
        assert len(evaluation.per_example[split]["linear_probe"]) == len(splits[0 if split == "forget" else 1].examples)
    assert plot_layer_curves({"before": evaluation, "after": evaluation}, tmp_path / "layers.png")


def test_plot_writes_a_png_and_declines_without_curves(tmp_path):
    values = {"logit_lens": 0.4, "logit_lens@L01": 0.01, "logit_lens@L02": 0.4, "linear_probe": 0.9,
              "linear_probe@L01": 0.6, "linear_probe@L02": 0.9}
    before = Evaluation(splits={"forget": dict(values), "retain": dict(values), "forget_qa": dict(values)})
    after = Evaluation(splits={"forget": {**values, "logit_lens@L02": 0.001}, "retain": dict(values)})
    path = tmp_path / "plots" / "layers.png"
    assert plot_layer_curves({"before": before, "after": after}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nothing = tmp_path / "none.png"
    assert not plot_layer_curves({"after": Evaluation(splits={"forget": {"prob": 0.5}})}, nothing)
    assert not nothing.exists()
