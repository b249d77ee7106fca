"""IDK+AP on a tiny model: each question keeps one refusal partner, the terms equal independent computations,
and the refusal answers are the project's own hundred."""

import pytest
import torch

from obliviate.data.examples import Example
from obliviate.data.refusals import refusal_answers
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.likelihood import forward_logits, mean_nll, sequence_nll, token_nll
from obliviate.methods import METHODS
from obliviate.methods.objective import PrepareContext
from obliviate.methods.refusal import answer_preservation_loss
from obliviate.models.embedded import tiny_random_llama


def test_a_hundred_distinct_refusals():
    refusals = refusal_answers()
    assert len(refusals) == len(set(refusals)) == 100


def test_idk_and_ap_against_independent_computations(tokenizer):
    model = tiny_random_llama(tokenizer)
    forget = [Example(f"Who is person {i}?", f"Person {i} bakes pies.") for i in range(4)]
    retain = [Example(f"Where is town {i}?", f"Town {i} is north.") for i in range(5)]
    refusals = [Example("", "I don't know."), Example("", "No idea, sorry.")]

    def encode(examples):
        return encode_dataset(tokenizer, examples, PromptFormat(), 32)

    datasets = {"forget": encode(forget), "retain": encode(retain)}
    objective = METHODS.get("IDK_AP").build(gamma=1.0, delta=1.0, alpha=0.0, beta=0.1, refusals="x", seed=3)
    objective.prepare(PrepareContext(model, datasets, 4, torch.device("cpu"),
                                     {"forget": forget, "retain": retain, "refusals": refusals}, encode))
    idk, ap = (term for _, term in objective.terms)
    rows = [2, 0]
    forget_batch = datasets["forget"].collate([datasets["forget"][i] for i in rows])
    retain_batch = datasets["retain"].collate([datasets["retain"][i] for i in [4, 1]])
    chosen = idk.refusals.encoded
    assert {tokenizer.decode(chosen[i][0].labels[-3:-1]) for i in range(4)} <= {" know.", " sorry."}
    with torch.no_grad():
        partners = encode([Example(forget[i].question, refusals_of(idk, tokenizer, i)) for i in rows])
        batch = partners.collate([partners[0], partners[1]])
        assert idk(model, {"forget": forget_batch}).item() == pytest.approx(
            mean_nll(*token_nll(forward_logits(model, batch), batch.labels)).item(), rel=1e-5)
        true, _ = sequence_nll(*token_nll(forward_logits(model, retain_batch), retain_batch.labels))
        partners = encode([Example(retain[i].question, refusals_of(ap, tokenizer, i)) for i in [4, 1]])
        batch = partners.collate([partners[0], partners[1]])
        refusal, _ = sequence_nll(*token_nll(forward_logits(model, batch), batch.labels))
        assert ap(model, {"retain": retain_batch}).item() == pytest.approx(
            answer_preservation_loss(true, refusal, 0.1).item(), rel=1e-5)


def refusals_of(term, tokenizer, row):
    """The refusal text the term drew for a row (its encoded answer tokens, EOS dropped)."""
    encoded, _ = term.refusals.encoded[row]
    answer = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != -100][:-1]
    return tokenizer.decode(answer).strip()


@pytest.mark.parametrize("config,term", [("me_gd.json", "me"), ("idk_ap.json", "idk")])
@pytest.mark.slow
def test_synthetic_configs_run_on_a_tiny_model(tmp_path, cache_dir, config, term):
    import json
    from pathlib import Path

    from obliviate.cli import run
    from obliviate.experiment import run_unlearning

    argv = ["--config_file", str(Path(__file__).resolve().parents[1] / "configs" / "synthetic" / config),
            "--overall.model_name", "tiny-random-llama", "--overall.cache_dir", str(cache_dir),
            "--dataset.data_dir", str(tmp_path / "data"), "--logger.json.root", str(tmp_path / "results"),
            "--unlearn.max_steps", "2", "--finetune.max_steps", "2", "--eval.max_examples", "4",
            "--eval.metrics", "prob", "--logger.name", "smoke"]
    assert run(run_unlearning, "unlearn_model.py", argv) == 0
    log = (next((tmp_path / "results").rglob("train_log.jsonl"))).read_text().splitlines()
    assert len(log) == 2 and term in json.loads(log[0])


def test_empty_refusals_fail_before_any_work(tmp_path, capsys):
    from obliviate.cli import run
    from obliviate.experiment import run_unlearning

    empty = tmp_path / "refusals.jsonl"
    empty.write_text("")
    argv = ["--unlearn.unlearn_method", "IDK_AP", "--logger.json.root", str(tmp_path / "results")]
    for refusals in ("", str(empty)):
        assert run(run_unlearning, "x", [*argv, "--unlearn.IDK_AP.refusals", refusals]) == 2
    err = capsys.readouterr().err
    assert "unlearn.IDK_AP.refusals is empty" in err and "is empty; give a dataset with at least one record" in err
    assert not (tmp_path / "results").exists()
