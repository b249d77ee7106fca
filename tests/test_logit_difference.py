"""Logit-difference models (ULD, Offset): the combination and its relative-top filter against hand computations,
in scoring, greedy generation and lm-eval; the assistant made of the target's first layers; runs end to end,
the saved run folder evaluated again, and bad input refused in setup."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from obliviate.cli import run
from obliviate.config.sections import Lora
from obliviate.data.examples import Example
from obliviate.data.tokenize import Query, encode
from obliviate.errors import UserError
from obliviate.evaluation.scoring import greedy_answers, separate_statistics, shared_prompt_statistics
from obliviate.experiment import run_evaluation, run_unlearning
from obliviate.methods import METHODS
from obliviate.methods.entropy import MaxEntropyForget, uniform_kl
from obliviate.methods.logit_difference import augmented
from obliviate.methods.objective import PrepareContext
from obliviate.methods.terms import NLL, KLToReference
from obliviate.models import adapters
from obliviate.models.anatomy import first_layers
from obliviate.models.embedded import tiny_random_llama
from obliviate.models.logit_difference import (
    LogitDifferenceModel,
    LogitDifferenceSpec,
    combine_logits,
    relative_top_kept,
)

ROOT = Path(__file__).resolve().parents[1]
LORA = Lora(enabled=True, r=4, alpha=8.0, dropout=0.0, target_modules=["all-linear"], merge=False)


def test_relative_top_filter_by_hand():
    # log p = log_softmax(z); τ = 0.3 → threshold min(max + log 0.3, k-th largest) with k = ⌊0.3·5⌋ = 1
    z = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    log_p = z.log_softmax(-1)
    threshold = log_p.max() + math.log(0.3)  # the 1st largest is the max itself, so this one decides
    assert relative_top_kept(z, 0.3).tolist() == (log_p >= threshold).tolist() == [[True, True, False, False, False]]
    # τ = 0.6: k = 3 keeps the three most likely even though only the first passes max + log 0.6
    assert relative_top_kept(z, 0.6).tolist() == [[True, True, True, False, False]]
    assert relative_top_kept(z, 0.0).all()


def test_combined_logits_by_hand():
    target = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    assistant = torch.tensor([[4.0, -2.0, 1.0, 3.0, 0.0]])
    # τ = 0.3 keeps tokens 0 and 1: they get z_T + w·z_A; the others keep z_T (or −∞ for generation)
    expected = torch.tensor([[2.0 - 0.8 * 4.0, 1.0 + 0.8 * 2.0, 0.5, -1.0, -3.0]])
    assert torch.allclose(combine_logits(target, assistant, -0.8, 0.3), expected)
    excluded = combine_logits(target, assistant, -0.8, 0.3, exclude_filtered=True)
    assert torch.allclose(excluded[:, :2], expected[:, :2]) and torch.isinf(excluded[:, 2:]).all()
    assert torch.allclose(combine_logits(target, assistant, -0.8, 0.0), target - 0.8 * assistant)


def combined(tokenizer, offset: bool, relative_top: float, num_layers: int = 1, weight: float = -0.8):
    torch.manual_seed(0)
    target = tiny_random_llama(tokenizer).eval()
    target.requires_grad_(False)
    target.model.norm.weight.data.mul_(300.0)  # sharp next-token distributions, so that the filter acts
    assistant = adapters.attach(first_layers(target, num_layers), LORA)
    for name, parameter in assistant.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter
            parameter.data.normal_(0.0, 0.5)
    spec = LogitDifferenceSpec("tiny-random-llama", "", num_layers, weight, relative_top, offset)
    return LogitDifferenceModel(target, assistant, spec).eval()


def inputs(tokenizer, texts):
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"


@pytest.mark.parametrize("offset", [False, True])
def test_the_model_computes_the_combination_of_its_parts(tokenizer, offset):
    model = combined(tokenizer, offset, relative_top=0.01)
    batch = inputs(tokenizer, ["Who wrote the book?", "Hello"])
    with torch.no_grad():
        z_target = model.target(**batch).logits
        z_assistant = model.assistant(**batch).logits
        with adapters.without_adapters(model.assistant):
            z_initial = model.assistant(**batch).logits
        got = model(**batch).logits
    term = z_assistant - z_initial if offset else z_assistant
    log_p = z_target.log_softmax(-1)
    k = int(0.01 * log_p.shape[-1])
    threshold = torch.minimum(log_p.max(-1, keepdim=True).values + math.log(0.01), log_p.topk(k, -1).values[..., -1:])
    kept = log_p >= threshold
    assert 0 < kept.sum() < kept.numel()  # the filter acts
    assert torch.allclose(got, torch.where(kept, z_target + model.spec.weight * term, z_target), atol=1e-5)


def test_offset_starts_as_the_target(tokenizer):
    model = combined(tokenizer, offset=True, relative_top=0.0, weight=1.0)
    for name, parameter in model.assistant.named_parameters():
        if "lora_B" in name:
            parameter.data.zero_()  # a fresh adapter
    batch = inputs(tokenizer, ["Who wrote the book?"])
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, model.target(**batch).logits, atol=1e-5)


def test_offset_references_come_from_the_model_with_adapters_off(tokenizer):
    model = combined(tokenizer, offset=True, relative_top=0.0, weight=1.0)
    term = KLToReference("retain")
    term.prepare(PrepareContext(model, {}, 2, torch.device("cpu")))
    assert term.reference.copy is None  # no copy of target + assistant
    batch = inputs(tokenizer, ["Who wrote the book?"])
    with torch.no_grad(), adapters.without_adapters(model) as starting:
        assert torch.allclose(starting(**batch).logits, model.target(**batch).logits, atol=1e-5)


def test_the_assistant_is_the_targets_first_layers_without_a_copy(tokenizer):
    target = tiny_random_llama(tokenizer).eval()
    shallow = first_layers(target, 1)
    own = {id(p) for p in target.parameters()}
    assert all(id(p) in own for p in shallow.parameters())  # the same tensors
    batch = inputs(tokenizer, ["The capital of France"])
    with torch.no_grad():
        hidden = target(**batch, output_hidden_states=True).hidden_states[1]  # after layer 0
        by_hand = target.lm_head(target.model.norm(hidden))
        assert torch.allclose(shallow(**batch).logits, by_hand, atol=1e-5)
    adapters.attach(shallow, LORA)
    assert not any("lora" in name for name, _ in target.named_parameters())  # adapters stay in the assistant


def test_scoring_uses_the_combination_and_shared_prompts_agree(tokenizer):
    model = combined(tokenizer, offset=False, relative_top=0.01)
    queries = [Query("Who is Ana?", "Ana bakes bread.", True), Query("Who is Ana?", "Ana sings.", True)]
    separate = separate_statistics(model, tokenizer, queries, 64, 4)
    shared = shared_prompt_statistics(model, tokenizer, ["Who is Ana?"], [queries], 64)[0]
    for one, other in zip(separate, shared):
        assert one.token_ids == other.token_ids
        assert max(abs(a - b) for a, b in zip(one.log_probs, other.log_probs)) < 1e-4
    prompt = len(tokenizer("Who is Ana?")["input_ids"])
    full = torch.tensor([encode(tokenizer, queries[0], 64).input_ids])
    with torch.no_grad():
        by_hand = model(input_ids=full).logits.log_softmax(-1)[0]
    expected = [by_hand[t - 1, full[0, t]].item() for t in range(prompt, full.shape[1])]
    assert max(abs(a - b) for a, b in zip(separate[0].log_probs, expected)) < 1e-4


def greedy_by_hand(model, ids, steps):
    """Argmax of the combined logits over the kept tokens, recomputed from scratch at every step."""
    sequence = ids
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=sequence).logits[:, -1]
            z_target = model.target(input_ids=sequence).logits[:, -1]
        logits = logits.masked_fill(~relative_top_kept(z_target, model.spec.relative_top), -math.inf)
        sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    return sequence


@pytest.mark.parametrize("offset", [False, True])
def test_greedy_generation_follows_the_filtered_combination(tokenizer, offset):
    model = combined(tokenizer, offset, relative_top=0.01)
    ids = torch.tensor([tokenizer("Tell me about the river")["input_ids"]])
    generated = model.generate(ids, max_new_tokens=6, eos_token_id=[], pad_token_id=tokenizer.pad_token_id)
    assert generated.tolist() == greedy_by_hand(model, ids, 6).tolist()
    # batched and left-padded, through the metrics' generation: the same continuation
    answers = greedy_answers(model, tokenizer, ["Tell me about the river", "Hi"], 6, 2)
    alone = tokenizer.decode(greedy_by_hand(model, ids, 6)[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert answers[0] == alone
    cold = model.generate(ids, max_new_tokens=6, do_sample=True, temperature=1e-4)  # sampling near T = 0 is greedy
    assert cold.tolist() == greedy_by_hand(model, ids, 6).tolist()


def test_lm_eval_scores_and_generates_with_the_combination(tokenizer):
    from lm_eval.api.instance import Instance

    from obliviate.evaluation.lm_eval_model import SharedContextLM

    model = combined(tokenizer, offset=False, relative_top=0.01)
    lm = SharedContextLM(pretrained=model, tokenizer=tokenizer, batch_size=2)
    context, continuation = "Question: Who is Ana?\nAnswer:", " Ana bakes bread."
    request = Instance("loglikelihood", {}, (context, continuation), 0)
    (log_likelihood, _), = lm.loglikelihood([request])
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    assert whole[:len(context_ids)] == context_ids
    with torch.no_grad():
        log_p = model(input_ids=torch.tensor([whole])).logits.log_softmax(-1)[0]
    by_hand = sum(log_p[t - 1, whole[t]].item() for t in range(len(context_ids), len(whole)))
    assert abs(log_likelihood - by_hand) < 1e-3
    options = {"until": ["\n\n"], "max_gen_toks": 5, "do_sample": False}
    generation = Instance("generate_until", {}, (context, options), 0)
    text, = lm.generate_until([generation])
    ids = torch.tensor([context_ids])
    expected = tokenizer.decode(greedy_by_hand(model, ids, 5)[0, ids.shape[1]:], skip_special_tokens=True)
    assert text == expected.split("\n\n")[0]


def test_uld_objective_and_augmentation_as_the_public_data_mode():
    objective = METHODS.get("ULD").build(retain_weight=5.0, retain_divergence="uniform_to_model",
                                         retain_positions="all", num_layers=8, weight=-0.8, relative_top=0.01,
                                         augment=True)
    (w_forget, forget), (w_retain, retain) = objective.terms
    assert (w_forget, type(forget), forget.split) == (1.0, NLL, "forget")
    assert (w_retain, type(retain), retain.split, retain.divergence, retain.positions) == (
        5.0, MaxEntropyForget, "retain", "uniform_to_model", "all")
    data = {"forget": [Example("Q1?", "A1.", "P1?", "PA1.", ("W1.", "W2.", "W3.")), Example("Q2?", "A2.")],
            "retain": [Example(f"R{i}?", f"RA{i}.") for i in range(5)]}
    more = augmented(data)
    assert [(e.question, e.answer) for e in more["forget"]] == [("Q1?", "A1."), ("Q2?", "A2."), ("Q1?", "PA1."),
                                                               ("P1?", "A1.")]
    # forget_more_retain_perturb: the LAST min(400, |forget|) = 2 retain rows, two perturbed answers per question
    assert [(e.question, e.answer) for e in more["retain"]] == [("R3?", "RA3."), ("R4?", "RA4."), ("Q1?", "W1."),
                                                               ("Q1?", "W2.")]
    with pytest.raises(UserError, match="unlearn.ULD.augment"):
        augmented({"forget": [Example("Q?", "A.")]})


def test_the_uniform_term_averages_over_every_position_as_the_public_code_or_over_answers():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 0.0, 0.0]]])  # B=1, T=3, V=3
    labels = torch.tensor([[-100, -100, 1]])  # only the last token is an answer: predicted at position 1
    per_position = [-(torch.log_softmax(row, -1).mean() + math.log(3)).item() for row in logits[0]]
    assert uniform_kl(logits, labels, "uniform_to_model", "all").item() == pytest.approx(sum(per_position) / 3)
    assert uniform_kl(logits, labels, "uniform_to_model", "answer").item() == pytest.approx(per_position[1])
    assert per_position[1] == pytest.approx(0.0, abs=1e-7) and per_position[0] > 0


def cli(*argv):
    return run(run_unlearning, "unlearn_model.py", list(argv))


def evaluate_cli(*argv):
    return run(run_evaluation, "evaluate.py", list(argv))


@pytest.fixture
def tiny(tmp_path, cache_dir):
    return ["--overall.model_name", "tiny-random-llama", "--overall.cache_dir", str(cache_dir),
            "--dataset.data_dir", str(tmp_path / "data"), "--logger.json.root", str(tmp_path / "results"),
            "--unlearn.max_steps", "2", "--finetune.max_steps", "2", "--eval.max_examples", "4",
            "--eval.max_new_tokens", "4", "--eval.metrics", "prob,rouge_l_recall", "--lora.r", "4"]


@pytest.mark.slow
def test_a_uld_run_saves_a_folder_that_evaluate_reloads(tiny, tmp_path, cache_dir):
    assert cli("--config_file", str(ROOT / "configs/synthetic/uld.json"), *tiny, "--unlearn.ULD.num_layers", "1",
               "--unlearn.save_model", "true", "--logger.name", "uld", "--attack.datasets", "relearn",
               "--attack.max_steps", "1") == 0
    folder = tmp_path / "results" / "synthetic" / "ULD" / "uld"
    spec = json.loads((folder / "logit_difference.json").read_text())
    assert spec == {"target": "model", "assistant": "", "num_layers": 1, "weight": -0.8, "relative_top": 0.01,
                    "offset": False}
    assert json.loads((folder / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert json.loads((folder / "env.json").read_text())["trainable_parameters"] > 0
    after = json.loads((folder / "metrics.json").read_text())["after"]
    assert "forget" in json.loads((folder / "attacks.json").read_text())["relearn"][0]
    target = next(f.parent for f in (cache_dir / "finetuned").glob("*/recipe.json")
                  if json.loads(f.read_text())["role"] == "target")
    saved, original = load_file(folder / "model" / "model.safetensors"), load_file(target / "model.safetensors")
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)  # untouched
    assert evaluate_cli("--config_file", str(ROOT / "configs/synthetic/uld.json"), *tiny, "--overall.model_name",
                        str(folder), "--finetune.enabled", "false", "--logger.name", "again") == 0
    again = json.loads((tmp_path / "results" / "synthetic" / "evaluations" / "again" / "metrics.json").read_text())
    assert again["evaluated"]["forget"] == after["forget"]
    assert again["evaluated"]["retain"] == after["retain"]


@pytest.mark.slow
def test_an_offset_run_with_its_own_assistant_model(tiny, tmp_path):
    assert cli("--config_file", str(ROOT / "configs/synthetic/offset_npo.json"), *tiny, "--unlearn.Offset.assistant",
               "tiny-random-llama", "--logger.name", "offset") == 0
    folder = tmp_path / "results" / "synthetic" / "Offset" / "offset"
    spec = json.loads((folder / "logit_difference.json").read_text())
    assert spec["assistant"] == "tiny-random-llama" and spec["offset"] is True
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["after"]["forget"]["prob"] != metrics["before"]["forget"]["prob"]


def other_tokenizer_model(tokenizer, folder: Path) -> Path:
    changed = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    changed.add_tokens(["<a-token-the-target-lacks>"])
    model = tiny_random_llama(changed)
    model.save_pretrained(folder)
    changed.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("argv, message", [
    (["--unlearn.ULD.num_layers", "3"], "unlearn.ULD.num_layers is 3 but the target has 2 layers; use 1 to 2"),
    (["--unlearn.mask_path", "mask.safetensors"], "ULD trains an assistant"),
    (["--lora.merge", "true"], "lora.merge: ULD's assistant shares the target's weights"),
    (["--lora.target_modules", "c_attn"], "lora.target_modules: the model has no module 'c_attn'"),
])
def test_bad_logit_difference_settings_fail_in_setup(tiny, tmp_path, capsys, argv, message):
    assert cli("--config_file", str(ROOT / "configs/synthetic/uld.json"), *tiny, *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # nothing written


def test_an_assistant_with_another_tokenizer_is_refused(tiny, tmp_path, capsys, tokenizer):
    folder = other_tokenizer_model(tokenizer, tmp_path / "other")
    assert cli("--config_file", str(ROOT / "configs/synthetic/offset_npo.json"), *tiny, "--unlearn.Offset.assistant",
               str(folder)) == 2
    assert "has a different tokenizer from the target" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
