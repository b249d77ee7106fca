"""Issue 11's methods on a tiny model: cached references line up with the batch rows, the objectives start
where their formulas say, PDU's dual variable moves as stated, every method runs from its config."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from obliviate.data.examples import Example
from obliviate.data.tokenize import IGNORE_INDEX, PromptFormat, encode_dataset
from obliviate.likelihood import forward_logits, mean_nll, shifted, token_nll
from obliviate.methods import METHODS
from obliviate.methods.labels import random_targets, runner_up_targets, sequence_mean_nll
from obliviate.methods.objective import PrepareContext
from obliviate.models.embedded import tiny_random_llama

ROOT = Path(__file__).resolve().parents[1]


def shipped_configs() -> dict[str, Path]:
    """Each registered method's synthetic config: the first (by file name) that names it and sets its own section
    (for a method without parameters, the first that names it). Discovered: a new method needs no entry here."""
    found: dict[str, tuple[bool, Path]] = {}
    for path in sorted((ROOT / "configs" / "synthetic").glob("*.json")):
        config = json.loads(path.read_text())
        name = config.get("unlearn", {}).get("unlearn_method")
        own_section = f"unlearn.{name}" in config
        if name in METHODS and (name not in found or own_section and not found[name][0]):
            found[name] = (own_section, path)
    return {METHODS.canonical(name): path for name, (_, path) in found.items()}


CONFIGS = shipped_configs()


@pytest.fixture
def setup(tokenizer):
    model = tiny_random_llama(tokenizer)
    forget = [Example(f"Who is person {i}?", f"Person {i} is a baker.",
                      perturbed_answers=(f"Person {i} is a pilot.",))
              for i in range(4)]
    retain = [Example(f"Where is town {i}?", f"Town {i} lies north.") for i in range(5)]
    refusals = [Example("", "I don't know."), Example("", "No idea, sorry.")]

    def encode(examples):
        return encode_dataset(tokenizer, examples, PromptFormat(), 32)

    datasets = {"forget": encode(forget), "retain": encode(retain)}
    context = PrepareContext(model, datasets, 3, torch.device("cpu"),
                             {"forget": forget, "retain": retain, "refusals": refusals}, encode)
    batch = {"forget": datasets["forget"].collate([datasets["forget"][i] for i in (2, 0)]),
             "retain": datasets["retain"].collate([datasets["retain"][i] for i in (4, 1)])}
    return model, context, batch


def build(name, context, **overrides):
    values = {key: param.default for key, param in METHODS.get(name).params.items()} | overrides
    objective = METHODS.get(name).build(**values)
    objective.prepare(context)
    return objective


@pytest.mark.parametrize("name", ["DPO", "IdkDPO"])
def test_dpo_starts_at_2_over_beta_log_2_with_cached_references(setup, name):
    model, context, batch = setup
    objective = build(name, context, alpha=0.0)
    assert objective(model, batch).loss.item() == pytest.approx(20 * math.log(2), rel=1e-5)


def test_tnpo_starts_as_gradient_ascent_and_wtnpo_as_wga(setup):
    model, context, batch = setup
    nll = mean_nll(*token_nll(forward_logits(model, batch["forget"]), batch["forget"].labels)).item()
    assert build("TNPO", context)(model, batch).loss.item() == pytest.approx(-nll, rel=1e-3)
    wtnpo = build("WTNPO", context, power=1.0)(model, batch).loss.item()
    wga = build("WGA", context, beta=1.0, alpha=0.0)(model, batch).loss.item()
    assert wtnpo == pytest.approx(wga, rel=1e-3)  # p_ref = p at the start: 2p^(β+1)/(2p^β) = p


def test_undial_with_beta_0_is_the_entropy_at_the_start_and_its_reference_stays_frozen(setup):
    model, context, batch = setup
    objective = build("UNDIAL", context, beta=0.0)
    logits, _, mask = shifted(forward_logits(model, batch["forget"]), batch["forget"].labels)
    log_p = torch.log_softmax(logits, dim=-1)
    entropy = (-(log_p.exp() * log_p).sum(-1) * mask).sum() / mask.sum()
    assert objective(model, batch).loss.item() == pytest.approx(entropy.item(), rel=1e-5)
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    assert objective(model, batch).loss.item() != pytest.approx(entropy.item(), rel=1e-3)


def test_adversarial_targets_are_cached_from_the_starting_model(setup):
    model, context, batch = setup
    objective = build("AdversarialLabel", context)
    term = objective.terms[0][1]
    data = batch["forget"]
    expected = runner_up_targets(forward_logits(model, data), data.labels)
    cached = term.targets.for_batch(data)
    answer = expected != IGNORE_INDEX
    assert torch.equal(cached[answer], expected[answer])
    assert not (cached[answer] == data.labels[:, 1:][answer]).any()
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight))
    assert torch.equal(term.targets.for_batch(data)[answer], expected[answer])


def test_random_targets_replace_answer_tokens_only_and_are_seeded(setup, tokenizer):
    _, context, _ = setup
    data = context.datasets["forget"]
    eos = tokenizer.eos_token_id
    first, again, other = (random_targets(data, 100, {eos}, seed) for seed in (0, 0, 1))
    for row, item in enumerate(data.encoded):
        labels = torch.tensor(item.labels[1:])
        targets = first.rows[row]
        assert torch.equal(targets[labels == IGNORE_INDEX], labels[labels == IGNORE_INDEX])
        assert torch.equal(targets[labels == eos], labels[labels == eos])
        ordinary = (labels != IGNORE_INDEX) & (labels != eos)
        assert ((targets[ordinary] >= 0) & (targets[ordinary] < 100) & (targets[ordinary] != eos)).all()
        assert torch.equal(targets, again.rows[row])
    assert any(not torch.equal(a, b) for a, b in zip(first.rows, other.rows))


def test_ascent_descent_is_the_mixed_batch_mean_of_signed_sequence_means(setup):
    model, context, batch = setup
    value = build("AscentDescent", context)(model, batch).loss.item()
    forget = sequence_mean_nll(*token_nll(forward_logits(model, batch["forget"]), batch["forget"].labels)).item()
    retain = sequence_mean_nll(*token_nll(forward_logits(model, batch["retain"]), batch["retain"].labels)).item()
    # fp32: the terms (about 10 each) nearly cancel, so the margin is absolute, at float rounding of the terms
    assert value == pytest.approx((-2 * forget + 2 * retain) / 4, rel=1e-5, abs=1e-5)


def test_pdu_eps_and_dual_variable(setup):
    model, context, batch = setup
    objective = build("PDU", replace(context, steps_per_epoch=2), alpha=2.0, dual_step_size=0.5,
                      dual_warmup_epochs=0.5, eps_ratio=1.1)
    constraint = objective.terms[1][1]
    assert constraint.warmup_steps == 1  # half an epoch of two steps
    retain = context.datasets["retain"]
    everything = retain.collate([retain[i] for i in range(len(retain))])
    expected = mean_nll(*token_nll(forward_logits(model, everything), everything.labels)).item()
    assert constraint.eps == pytest.approx(1.1 * expected, rel=1e-5)
    output = objective(model, batch)
    assert output.logs["dual"] == 2.0
    assert output.logs["retain_constraint"] == pytest.approx(2.0 * (output.logs["retain_nll"] - constraint.eps),
                                                             rel=1e-5)
    objective.after_step(output.logs)  # warm-up step: λ stays
    assert constraint.dual == 2.0
    objective.after_step({**output.logs, "retain_nll": constraint.eps + 0.3})  # the step's mean retain NLL
    assert constraint.dual == pytest.approx(2.0 + 0.5 * 0.3, rel=1e-6)
    objective.after_step({**output.logs, "retain_nll": constraint.eps - 10.0})  # λ never falls below 0
    assert constraint.dual == 0.0
    assert objective.artifacts()["pdu_dual"].item() == pytest.approx(constraint.dual)


def test_sam_npo_restores_the_weights_and_differs_from_npo_only_by_the_perturbation(setup):
    model, context, batch = setup
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    npo = build("NPO", context, alpha=0.0)
    npo(model, batch).loss.backward()
    npo_grad = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    for rho, close in ((0.0, True), (1.0, False)):
        sam = build("SAM_NPO", context, alpha=0.0, rho=rho)
        sam(model, batch).loss.backward()
        assert all(torch.equal(p, start[name]) for name, p in model.named_parameters())
        same = all(torch.allclose(p.grad, npo_grad[name], atol=1e-6) for name, p in model.named_parameters())
        assert same == close
        model.zero_grad()


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_a_config_with_all_its_keys(name):
    assert name in CONFIGS, f"no configs/synthetic/*.json runs {name}; ship one"
    config = json.loads(CONFIGS[name].read_text())
    assert set(config.get(f"unlearn.{name}", {})) == set(METHODS.get(name).params)


@pytest.mark.parametrize("name", [name if name == "NPO" else pytest.param(name, marks=pytest.mark.slow)
                                  for name in METHODS.names()])  # the fast tier runs the default method's
def test_every_method_runs_from_its_config_on_a_tiny_model(name, tmp_path, cache_dir):
    from obliviate.cli import run
    from obliviate.experiment import run_unlearning

    depth = ["--unlearn.RMU.layer", "1", "--unlearn.RMU.trained_layers", "1"] if name in ("RMU", "ILU") else []
    layers = [f"--unlearn.{name}.num_layers", "1"] if name in ("ULD", "Offset") else []
    argv = ["--config_file", str(CONFIGS[name]), "--overall.model_name", "tiny-random-llama",
            "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--unlearn.max_steps", "2", "--finetune.enabled", "false",
            "--eval.before", "false", "--eval.max_examples", "2", "--eval.metrics", "prob", "--logger.name", "run",
            *depth, *layers]
    assert run(run_unlearning, "unlearn_model.py", argv) == 0
    run_folder = next((tmp_path / "results").rglob("run/train_log.jsonl")).parent
    log = [json.loads(line) for line in (run_folder / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(math.isfinite(record["loss"]) for record in log)
    assert json.loads((run_folder / "metrics.json").read_text())


def answer_logits(model, data):
    """(logits predicting each answer token, those tokens, mask), by hand: position t predicts token t+1."""
    logits = model(input_ids=data.input_ids, attention_mask=data.attention_mask).logits[:, :-1].float()
    targets = data.labels[:, 1:]
    return logits, targets, targets != IGNORE_INDEX


def answer_nll(model, data) -> float:
    logits, targets, mask = answer_logits(model, data)
    nll = -logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return float(nll[mask].mean().detach())


def test_satimp_builds_minus_gamma_weighted_nll_plus_alpha_retain(setup):
    model, context, batch = setup
    value = build("SatImp", context, beta1=2.0, beta2=1.0, gamma=2.0, alpha=0.5)(model, batch).loss.item()
    logits, targets, mask = answer_logits(model, batch["forget"])
    log_p = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    p = log_p.exp()
    weighted = (p.pow(2.0) * (1 - p) * -log_p)[mask].mean().item()
    assert value == pytest.approx(-2.0 * weighted + 0.5 * answer_nll(model, batch["retain"]), rel=1e-5)


def test_random_label_builds_gamma_nll_of_the_random_targets_plus_alpha_retain(setup):
    model, context, batch = setup
    objective = build("RandomLabel", context, gamma=2.0, alpha=0.5, seed=7)
    value = objective(model, batch).loss.item()
    config = model.config
    kept = {config.bos_token_id, config.eos_token_id, config.pad_token_id} - {None}
    targets_by_row = random_targets(context.datasets["forget"], config.vocab_size, kept, 7).rows
    logits, _, mask = answer_logits(model, batch["forget"])
    targets = torch.stack([targets_by_row[row] for row in batch["forget"].index.tolist()])[:, :logits.shape[1]]
    nll = -logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    assert value == pytest.approx(2.0 * nll[mask].mean().item() + 0.5 * answer_nll(model, batch["retain"]), rel=1e-5)


def test_ceu_builds_gamma_cross_entropy_to_the_distribution_without_the_truth_plus_alpha_retain(setup):
    model, context, batch = setup
    value = build("CEU", context, ignore_first_n=1, gamma=2.0, alpha=0.5)(model, batch).loss.item()
    logits, targets, mask = answer_logits(model, batch["forget"])
    mask = mask & (mask.long().cumsum(-1) > 1)  # the first answer token of each row is skipped
    without_truth = logits.scatter(-1, targets.clamp(min=0)[..., None], float("-inf")).softmax(-1)
    cross_entropy = -(without_truth * logits.log_softmax(-1)).sum(-1)
    expected = 2.0 * cross_entropy[mask].mean().item() + 0.5 * answer_nll(model, batch["retain"])
    assert value == pytest.approx(expected, rel=1e-5)


@pytest.fixture
def one_refusal(setup, tokenizer):
    """The setup with a single refusal, so that every forget question's refusal partner is known."""
    model, context, batch = setup

    def encode(examples):
        return encode_dataset(tokenizer, examples, PromptFormat(), 32)

    examples = {**context.examples, "refusals": [Example("", "I don't know.")]}
    forget = [context.examples["forget"][row] for row in batch["forget"].index.tolist()]
    partners = encode([Example(e.question, "I don't know.") for e in forget])
    return model, replace(context, examples=examples), batch, partners.collate([partners[0], partners[1]])


def test_idk_is_tofus_one_token_mean_over_refusals_and_retain_answers(one_refusal):
    model, context, batch, refusals = one_refusal
    value = build("IDK", context, gamma=2.0, refusals="x")(model, batch).loss.item()
    pooled = []
    for data in (refusals, batch["retain"]):
        logits, targets, mask = answer_logits(model, data)
        pooled.append(-logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0][mask])
    assert value == pytest.approx(2.0 * torch.cat(pooled).mean().item(), rel=1e-5)
    separate = build("IDK", context, gamma=2.0, alpha=0.5, pooled=False, refusals="x")(model, batch).loss.item()
    assert separate == pytest.approx(2.0 * answer_nll(model, refusals) + 0.5 * answer_nll(model, batch["retain"]),
                                     rel=1e-5)


def test_idk_ap_builds_gamma_refusal_nll_on_the_forget_questions(one_refusal):
    model, context, batch, refusals = one_refusal
    objective = build("IDK_AP", context, gamma=2.0, delta=0.0, alpha=0.5, refusals="x")
    assert objective(model, batch).loss.item() == pytest.approx(
        2.0 * answer_nll(model, refusals) + 0.5 * answer_nll(model, batch["retain"]), rel=1e-5)


def test_pooled_idk_refuses_a_separate_retain_weight():
    from obliviate.config.loader import parse_config
    from obliviate.errors import UserError
    from obliviate.experiment import experiment_schema
    from obliviate.plan import configured_method

    settings = parse_config(["--unlearn.unlearn_method", "IDK", "--unlearn.IDK.alpha", "3"], experiment_schema())
    with pytest.raises(UserError, match="unlearn.IDK.pooled"):
        configured_method(settings, "IDK").objective()
