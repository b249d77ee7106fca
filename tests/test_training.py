"""The training loop: schedule, weight-decay groups, accumulation, seeding."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from obliviate.data.examples import Example
from obliviate.data.tokenize import EncodedDataset, PromptFormat, encode_example
from obliviate.likelihood import forward_logits, mean_nll, token_nll
from obliviate.methods import METHODS
from obliviate.methods.objective import PrepareContext
from obliviate.models.embedded import tiny_random_llama
from obliviate.training.loop import micro_batches, train
from obliviate.training.schedule import TrainingConfig, build_optimizer, lr_factor


def config(**changes):
    values = dict(lr=1e-3, num_epochs=1, max_steps=4, gradient_accumulation_steps=1, weight_decay=0.1,
                  warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0, logging_steps=1, batch_size=2)
    return TrainingConfig(**{**values, **changes})


def test_lr_schedule_values():
    assert [lr_factor(s, 10, 0, "constant") for s in (0, 9)] == [1.0, 1.0]
    assert [lr_factor(s, 10, 0, "linear") for s in (0, 5)] == [1.0, 0.5]
    assert lr_factor(5, 10, 0, "cosine") == pytest.approx(0.5)
    assert [lr_factor(s, 10, 3, "linear") for s in (0, 1, 2, 3)] == [0.25, 0.5, 0.75, 1.0]


def test_total_steps_from_epochs_and_accumulation():
    assert config(max_steps=7).total_steps(100) == 7
    assert config(max_steps=-1, num_epochs=3, batch_size=4, gradient_accumulation_steps=2).total_steps(10) == 5


def test_no_weight_decay_on_norms_and_biases(tokenizer):
    model = tiny_random_llama(tokenizer)
    optimizer, _ = build_optimizer(model, config(), 4)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" in names[id(p)] for p in plain["params"])
    assert all(p.ndim == 2 for p in decayed["params"])


def test_micro_batches_pair_each_forget_batch_with_random_retain_and_reshuffle(tokenizer):
    def dataset(n):
        return EncodedDataset([encode_example(tokenizer, Example(f"q{i}", f"a{i}"), PromptFormat(), 16)
                               for i in range(n)], tokenizer.pad_token_id)

    stream = micro_batches({"forget": dataset(4), "retain": dataset(10)}, "forget", 2, seed=0)
    first_pass = [next(stream) for _ in range(2)]
    assert sorted(i for b in first_pass for i in b["forget"].index.tolist()) == [0, 1, 2, 3]
    assert all(b["retain"].index.shape == (2,) for b in first_pass)
    again = micro_batches({"forget": dataset(4), "retain": dataset(10)}, "forget", 2, seed=0)
    assert [next(again)["retain"].index.tolist() for _ in range(2)] == [b["retain"].index.tolist() for b in first_pass]
    # the draw does not depend on the order the splits arrive in (a set's order changes between processes)
    splits = {"forget": dataset(4), "retain": dataset(10), "env0": dataset(7)}
    one = micro_batches(splits, "forget", 2, seed=0)
    other = micro_batches(dict(reversed(splits.items())), "forget", 2, seed=0)
    for _ in range(3):
        a, b = next(one), next(other)
        assert all(a[name].index.tolist() == b[name].index.tolist() for name in splits)


def encoded(tokenizer, question, answer, n=8):
    return EncodedDataset([encode_example(tokenizer, Example(question.format(i), answer.format(i)), PromptFormat(), 32)
                           for i in range(n)], tokenizer.pad_token_id)


def full_set_nll(model, data):
    with torch.no_grad():
        batch = data.collate([data[i] for i in range(len(data))])
        return mean_nll(*token_nll(forward_logits(model, batch), batch.labels)).item()


def run_graddiff(tokenizer, seed, accumulation=1, scheduler="constant", model=None):
    set_seed(seed)
    model = model or tiny_random_llama(tokenizer)
    forget = encoded(tokenizer, "Who is {}?", "{} is a potter.")
    retain = encoded(tokenizer, "What colour is sky number {}?", "Sky {} is grey today.")
    objective = METHODS.get("GradDiff").build(gamma=1.0, alpha=1.0)
    objective.prepare(PrepareContext(model, {"forget": forget, "retain": retain}, 4, torch.device("cpu")))
    logs = []
    result = train(model, objective, {"forget": forget, "retain": retain}, "forget",
                   config(gradient_accumulation_steps=accumulation, lr_scheduler=scheduler), Accelerator(cpu=True),
                   seed, on_log=logs.append)
    return model, logs, result


def test_same_seed_same_result_and_different_seed_differs(tokenizer):
    first, logs_a, _ = run_graddiff(tokenizer, seed=3)
    second, logs_b, _ = run_graddiff(tokenizer, seed=3)
    third, logs_c, _ = run_graddiff(tokenizer, seed=4)
    assert [r["loss"] for r in logs_a] == [r["loss"] for r in logs_b]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert [r["loss"] for r in logs_a] != [r["loss"] for r in logs_c]


def test_graddiff_raises_forget_nll_more_than_retain_nll_and_logs_each_step(tokenizer):
    model = tiny_random_llama(tokenizer)
    forget = encoded(tokenizer, "Who is {}?", "{} is a potter.")
    retain = encoded(tokenizer, "What colour is sky number {}?", "Sky {} is grey today.")
    before = full_set_nll(model, forget), full_set_nll(model, retain)
    _, logs, result = run_graddiff(tokenizer, seed=0, accumulation=2, scheduler="linear", model=model)
    after = full_set_nll(model, forget), full_set_nll(model, retain)
    assert result.steps == 4 and [r["step"] for r in logs] == [1, 2, 3, 4]
    assert [r["lr"] for r in logs] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert set(logs[0]) == {"step", "loss", "forget_nll", "retain_nll", "lr", "grad_norm", "step_seconds", "seconds"}
    assert after[0] > before[0]  # gradient ascent on the forget set
    assert after[0] - before[0] > after[1] - before[1]  # while descending on retain
