"""How metrics are declared and run: roles decide, missing inputs are reported, results files round-trip."""

from evaluation_helpers import OPTIONS, split_of

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation import METRICS
from obliviate.evaluation.declarations import reference_requirements
from obliviate.evaluation.evaluator import evaluate
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import Role
from obliviate.models.embedded import tiny_random_llama

QA = [Example("Who wrote it?", "Ada.", paraphrased_answer="It was Ada.", perturbed_answers=("Bob.", "Cy.")),
      Example("Where?", "Here.", paraphrased_answer="Right here.", perturbed_answers=("There.",))]
TEXTS = [Example("", "A passage about the court and its long history of rulings.")]


def test_every_metric_declares_what_it_reads_and_where_it_applies():
    for name, declared in METRICS:
        assert declared.reads in {"qa", "text", "any"} and declared.roles and declared.version >= 1, name
        assert declared.description and not declared.description.startswith(name + "\n"), name
    assert METRICS.get("forget_quality").roles == {Role.FORGET}
    assert METRICS.get("forget_quality").reference == ("truth_ratio",)
    assert not METRICS.get("forget_quality").higher_means_knowledge(Role.FORGET)
    assert not METRICS.get("truth_ratio").higher_means_knowledge(Role.FORGET)
    assert METRICS.get("truth_ratio").higher_means_knowledge(Role.RETAIN)
    assert METRICS.get("rouge_l_recall").generates and not METRICS.get("prob").generates


def test_reference_requirements_follow_the_declarations():
    splits = [split_of("forget", QA), split_of("holdout", QA), split_of("forget_qa", QA, Role.FORGET, primary=False)]
    needs = reference_requirements(splits, ["prob", "forget_quality", "mia_reference", "mia_min_k"])
    assert needs.by_split == {"forget": {"truth_ratio", "prob", "mia_min_k"}, "holdout": {"prob", "mia_min_k"},
                              "forget_qa": {"truth_ratio", "prob"}}  # privleak reads the primary splits only


def test_evaluate_keeps_generations_and_reports_what_it_could_not_compute(tokenizer):
    model = tiny_random_llama(tokenizer)
    splits = [split_of("forget", QA + TEXTS), split_of("retain", [Example("Q?", "A.")])]
    result = evaluate(model, tokenizer, splits, PromptFormat(), OPTIONS,
                      ["prob", "rouge_l_recall", "truth_ratio", "verbmem", "mia_loss"])
    assert len(result.per_example["forget"]["prob"]) == 3  # every example, text included
    assert len(result.per_example["forget"]["rouge_l_recall"]) == 2  # the questions
    (first, _) = result.generations["forget"]["rouge_l_recall"]
    assert first["prompt"] == "Question: Who wrote it?\nAnswer:" and first["ground_truth"] == "Ada."
    assert isinstance(first["generation"], str)
    assert result.generations["forget"]["verbmem"][0]["ground_truth"]
    assert result.not_computed["retain.truth_ratio"].startswith("no record of retain has perturbed_answer")
    assert result.not_computed["model.mia_loss_auc"] == "needs a holdout split (dataset.holdout_dataset_name is empty)"
    assert "model.model_utility" in result.not_computed  # asked for by its three metrics, inputs missing
    record = result.per_example_record()
    assert record["forget"]["generations"]["rouge_l_recall"][0] == first
    assert Evaluation.from_records(result.metrics_record(), record) == result


def test_a_metric_that_applies_to_no_split_is_reported(tokenizer):
    model = tiny_random_llama(tokenizer)
    result = evaluate(model, tokenizer, [split_of("forget", QA)], PromptFormat(), OPTIONS, ["verbmem"])
    assert result.not_computed["verbmem"].startswith("applies to text examples")
    assert result.splits == {}


def test_metric_versions_are_part_of_the_cache_key():
    from obliviate.evaluation.evaluator import evaluation_key

    key = evaluation_key("model", [split_of("forget", QA)], PromptFormat(), OPTIONS, ["truth_ratio"], None)
    assert key["metrics"] == {"truth_ratio": METRICS.get("truth_ratio").version} and key["version"] >= 2
    assert key["splits"]["forget"][0] == "forget"  # the role is part of the key
