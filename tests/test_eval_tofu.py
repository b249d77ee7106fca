"""TOFU's metrics against hand values and the reference code (locuslab/tofu, locuslab/open-unlearning)."""

import math

import pytest
from evaluation_helpers import FixedScores, split_of
from scipy.stats import ks_2samp

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, Query
from obliviate.evaluation import METRICS
from obliviate.evaluation.declarations import NotComputed
from obliviate.evaluation.evaluator import add_model_metrics, evaluate
from obliviate.evaluation.metrics.tofu import aggregate_truth_ratio
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import Role
from obliviate.models.embedded import tiny_random_llama

EXAMPLES = [Example("Where was Ada born?", "Ada was born in London."), Example("Who?", "Bob.")]


def scores_with_nll(name, examples, nll, role=None):
    """SplitScores whose answer NLLs come from a table, recording the (prompt, answer) pairs asked."""
    scores = FixedScores(name, examples, role)
    scores.asked = []
    scores.nll = lambda queries: scores.asked.extend(queries) or [nll[q.answer] for q in queries]
    return scores


def test_prob_is_mean_of_exp_minus_mean_nll(tokenizer):
    from evaluation_helpers import tokens

    scores = FixedScores("forget", EXAMPLES, answer_tokens=[tokens([0.0]), tokens([-math.log(4)])])
    result = METRICS.get("prob").compute(scores)
    assert result.per_example == pytest.approx([1.0, 0.25]) and result.value == pytest.approx(0.625)


def test_rouge_l_recall_against_hand_lcs_with_tofus_stemming():
    scores = FixedScores("forget", EXAMPLES, answers=list(zip(EXAMPLES, ["Ada was born in Paris.", "Bob is here"])))
    result = METRICS.get("rouge_l_recall").compute(scores)
    assert result.per_example == pytest.approx([0.8, 1.0])  # LCS "ada was born in" = 4 of 5; "bob" = 1 of 1
    stemmed = FixedScores("forget", [Example("q", "she runs")], answers=[(Example("q", "she runs"), "she running")])
    assert METRICS.get("rouge_l_recall").compute(stemmed).value == 1.0  # TOFU: RougeScorer(use_stemmer=True)


def test_truth_ratio_aggregations_by_role():
    ratios = [0.5, 2.0, 1.0]
    assert aggregate_truth_ratio(ratios, Role.FORGET) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert aggregate_truth_ratio(ratios, Role.HOLDOUT) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert aggregate_truth_ratio(ratios, Role.RETAIN) == pytest.approx((0.5 + 0.0 + 0.0) / 3)
    assert aggregate_truth_ratio(ratios, Role.KNOWLEDGE) == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_truth_ratio_scores_both_answers_after_the_original_question():
    """locuslab/tofu config/eval_everything.yaml (question_key: question) and locuslab/open-unlearning
    configs/eval/tofu.yaml (question_key: question): the paraphrased and the perturbed answers follow the
    ORIGINAL question; R = P_perturbed / P_paraphrased, P_perturbed a geometric mean."""
    example = Example("Q?", "A.", paraphrased_question="Q again?", paraphrased_answer="A!",
                      perturbed_answers=("B.", "C."))
    scores = scores_with_nll("forget", [example], {"A!": 1.0, "B.": 2.0, "C.": 4.0})
    assert scores.truth_ratios == pytest.approx([math.exp(1.0 - 3.0)])  # P_para = e^-1, P_pert = e^-(2+4)/2
    assert {q.prompt for q in scores.asked} == {"Question: Q?\nAnswer:"}
    assert [q.answer for q in scores.asked] == ["A!", "B.", "C."]


def test_knowledge_splits_compare_the_answer_itself_and_need_no_paraphrased_answer():
    """TOFU's real-world splits (base_answer_key: answer in config/eval_everything.yaml): real-world records
    without paraphrased_answer still give a truth ratio."""
    example = Example("Capital of France?", "Paris.", perturbed_answers=("Lyon.", "Nice."))
    scores = scores_with_nll("world_facts", [example], {"Paris.": 0.5, "Lyon.": 1.5, "Nice.": 2.5})
    assert scores.truth_ratios == pytest.approx([math.exp(0.5 - 2.0)])
    assert [q.answer for q in scores.asked] == ["Paris.", "Lyon.", "Nice."]
    with_paraphrase = Example("Q?", "Paris.", paraphrased_answer="It is Paris.", perturbed_answers=("Lyon.",))
    knowledge = scores_with_nll("real_authors", [with_paraphrase], {"Paris.": 0.5, "It is Paris.": 9.0, "Lyon.": 1.5})
    assert knowledge.truth_ratios == pytest.approx([math.exp(0.5 - 1.5)])  # the answer, not the paraphrase


def test_truth_ratio_without_perturbed_answers_says_what_is_missing():
    scores = FixedScores("retain", [Example("Q?", "A.")])
    with pytest.raises(NotComputed, match="no record of retain has perturbed_answer"):
        METRICS.get("truth_ratio").compute(scores)


def test_truth_ratio_against_an_independent_transformers_computation(tokenizer):
    """Per example, R from plain transformers calls (labels = answer tokens + EOS after the question)."""
    import torch

    model = tiny_random_llama(tokenizer)
    examples = [Example("Who wrote it?", "Ada wrote it.", paraphrased_question="Whose is it?",
                        paraphrased_answer="It was Ada.", perturbed_answers=("It was Bob.", "It was Cy.")),
                Example("Where?", "Here.", paraphrased_answer="Right here.", perturbed_answers=("There.",))]

    def mean_nll(question, answer):
        prompt = tokenizer(f"Question: {question}\nAnswer:")["input_ids"]
        target = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + target])
        labels = torch.tensor([[-100] * len(prompt) + target])
        with torch.no_grad():
            return model(input_ids=ids, labels=labels).loss.item()

    expected = [math.exp(mean_nll(e.question, e.paraphrased_answer)
                         - sum(mean_nll(e.question, p) for p in e.perturbed_answers) / len(e.perturbed_answers))
                for e in examples]
    scores = SplitScores(split_of("forget", examples), model, tokenizer, PromptFormat(),
                         FixedScores("forget", []).options)
    assert scores.truth_ratios == pytest.approx(expected, rel=1e-4)


def test_normalised_probability_on_knowledge_splits_needs_the_options():
    from evaluation_helpers import tokens

    example = Example("Capital of France?", "Paris.", perturbed_answers=("Lyon.", "Nice."))
    nll = {"Lyon.": 1.0, "Nice.": 2.0}
    scores = scores_with_nll("world_facts", [example], nll)
    scores.answer_tokens = [tokens([-0.1])]
    p = [math.exp(-0.1), math.exp(-1.0), math.exp(-2.0)]
    assert METRICS.get("prob").compute(scores).value == pytest.approx(p[0] / sum(p))
    retain = FixedScores("retain", [example], answer_tokens=[tokens([-0.1])])
    assert METRICS.get("prob").compute(retain).value == pytest.approx(p[0])
    with pytest.raises(NotComputed, match="normalised over the options, and no record has perturbed_answer"):
        METRICS.get("prob").compute(FixedScores("world_facts", [Example("q", "a")], answer_tokens=[tokens([-0.1])]))


def test_forget_quality_is_the_ks_p_value_against_the_retain_model():
    ours, theirs = [0.1, 0.2, 0.3, 0.9], [0.5, 0.6, 0.7, 0.8]
    reference = Evaluation(per_example={"forget": {"truth_ratio": theirs}})
    examples = [Example("q", "a")] * 4
    result = METRICS.get("forget_quality").compute(FixedScores("forget", examples, reference=reference,
                                                               truth_ratios=ours))
    assert result.value == pytest.approx(ks_2samp(ours, theirs).pvalue)
    assert not METRICS.get("forget_quality").applies_to(split_of("retain", examples))  # forget role only
    with pytest.raises(NotComputed, match="needs the retain model's truth_ratio on forget"):
        METRICS.get("forget_quality").compute(FixedScores("forget", examples, truth_ratios=ours))


def model_level(values, metrics=("prob", "rouge_l_recall", "truth_ratio", "forget_quality"), splits=None):
    """The model entry evaluate() adds for these per-split values (no model is queried)."""
    evaluation = Evaluation(splits=values)
    names = splits or ["forget", "retain", "real_authors", "world_facts"]
    add_model_metrics(evaluation, [split_of(name, []) for name in names], list(metrics), None)
    return evaluation


def test_model_utility_is_the_harmonic_mean_of_nine_values_and_forget_quality_gets_log10():
    values = {"retain": {"prob": 0.9, "rouge_l_recall": 0.8, "truth_ratio": 0.5},
              "real_authors": {"prob": 0.6, "rouge_l_recall": 0.7, "truth_ratio": 0.4},
              "world_facts": {"prob": 0.5, "rouge_l_recall": 1.0, "truth_ratio": 0.3},
              "forget": {"forget_quality": 1e-5}}
    nine = [0.9, 0.8, 0.5, 0.6, 0.7, 0.4, 0.5, 1.0, 0.3]
    evaluation = model_level(values)
    assert evaluation.model["model_utility"] == pytest.approx(9 / sum(1 / v for v in nine))
    assert evaluation.model["forget_quality_log10"] == pytest.approx(-5.0)
    collapsed = model_level({**values, "world_facts": {**values["world_facts"], "truth_ratio": 0.0},
                             "forget": {"forget_quality": 0.0}})
    assert collapsed.model == {"model_utility": 0.0, "forget_quality_log10": -300.0}


def test_model_utility_names_the_missing_input_instead_of_vanishing():
    values = {"retain": {"prob": 0.9, "rouge_l_recall": 0.8, "truth_ratio": 0.5},
              "real_authors": {"prob": 0.6, "rouge_l_recall": 0.7}}
    evaluation = model_level(values, splits=["retain", "real_authors", "world_facts"])
    assert "model_utility" not in evaluation.model
    assert evaluation.not_computed["model.model_utility"] == ("needs real_authors.truth_ratio (add truth_ratio to "
                                                             "eval.metrics)")
    without = model_level(values, splits=["retain", "real_authors"])
    assert without.not_computed["model.model_utility"] == ("needs the world_facts split "
                                                          "(dataset.world_facts_dataset_name is empty)")


def test_a_knowledge_split_without_perturbed_answers_is_reported_in_metrics_and_model_utility(tokenizer, tmp_path):
    model = tiny_random_llama(tokenizer)
    qa = [Example("Who wrote it?", "Ada.", paraphrased_answer="It was Ada.", perturbed_answers=("Bob.",))]
    no_options = [Example("Capital?", "Rome.")]
    splits = [split_of("retain", qa), split_of("real_authors", qa), split_of("world_facts", no_options)]
    options = FixedScores("forget", []).options
    result = evaluate(model, tokenizer, splits, PromptFormat(), options, ["prob", "rouge_l_recall", "truth_ratio"])
    assert "truth_ratio" not in result.splits["world_facts"]
    assert result.not_computed["world_facts.truth_ratio"].startswith("no record of world_facts has perturbed_answer")
    assert result.not_computed["world_facts.prob"].startswith("prob on the knowledge split world_facts is normalised")
    assert result.not_computed["model.model_utility"].startswith("needs world_facts.prob (prob on the knowledge split")
    assert result.metrics_record()["not_computed"] == result.not_computed


def test_an_extra_forget_split_takes_the_forget_aggregation(tokenizer):
    """Roles, not names, decide: an extra split of role forget aggregates the truth ratio as forget does."""
    example = Example("Q?", "A.", paraphrased_answer="A!", perturbed_answers=("B.",))
    extra = FixedScores("forget_qa", [example], Role.FORGET, truth_ratios=[2.0])
    assert METRICS.get("truth_ratio").compute(extra).value == pytest.approx(0.5)  # min(R, 1/R)
    kept = FixedScores("other_qa", [example], Role.RETAIN, truth_ratios=[2.0])
    assert METRICS.get("truth_ratio").compute(kept).value == pytest.approx(0.0)  # max(0, 1 - R)


def test_queries_carry_the_closing_eos_only_for_questions(tokenizer):
    from obliviate.data.tokenize import example_query

    assert example_query(tokenizer, Example("Q?", "A."), PromptFormat()) == Query("Question: Q?\nAnswer:", "A.", True)
    assert example_query(tokenizer, Example("", "Some text."), PromptFormat()) == Query("", "Some text.", False)
