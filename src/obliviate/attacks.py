"""Fine-tune attacks: does forgotten knowledge come back when the unlearned model is fine-tuned?

Each entry of ``attack.datasets`` is fine-tuned on, starting from the unlearned weights every time:
a downstream task unrelated to the forget set (``synthetic:math_train`` offline; a hub id such as
``openai/gsm8k:main`` on a GPU machine), or ``relearn``: the first ``attack.num_examples`` forget
examples. At step 0 and every ``attack.eval_every`` steps the forget split is evaluated with
``eval.metrics`` and, when the attack names a test set (``attack.test_datasets``, same order), the
task's own accuracy (``exact_match`` of greedy answers), so curves can be drawn. Results go to
``attacks.json``; training logs to ``attack_train_log.jsonl``.

The unlearned weights are kept as one CPU copy to restart each attack from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase

from obliviate.data.examples import Example
from obliviate.data.tokenize import EncodedDataset, PromptFormat, encode_example
from obliviate.errors import UserError
from obliviate.methods.terms import NLL
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig

RELEARN = "relearn"


@dataclass
class Attack:
    name: str
    train: list[Example]
    test: list[Example]


def plan_attacks(names: list[str], test_names: list[str], num_examples: int, forget: list[Example],
                 load: Callable[[str], list[Example]]) -> list[Attack]:
    """Load every attack's data up front (so bad names fail before any long work)."""
    if test_names and len(test_names) != len(names):
        raise UserError(f"attack.test_datasets has {len(test_names)} entries for {len(names)} attack.datasets; "
                        "give one per attack ('' for none) or none at all")
    limit = num_examples or None
    attacks = []
    for position, name in enumerate(names):
        examples = forget if name == RELEARN else load(name)
        test_name = test_names[position] if test_names else ""
        attacks.append(Attack(name, examples[:limit], load(test_name) if test_name else []))
    return attacks


def run_attacks(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, attacks: list[Attack], fmt: PromptFormat,
                max_length: int, config: TrainingConfig, eval_every: int, accelerator: Accelerator, seed: int,
                evaluate_point: Callable[[list[Example]], dict], log_step: Callable[[dict], None]) -> dict:
    """Fine-tune a fresh copy of the unlearned weights on each attack; return its evaluation curve."""
    unlearned = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    results = {}
    for attack in attacks:
        model.load_state_dict(unlearned)
        model.requires_grad_(True)  # downstream fine-tuning updates every weight
        data = EncodedDataset([encode_example(tokenizer, e, fmt, max_length) for e in attack.train],
                              tokenizer.pad_token_id)
        curve = [{"step": 0, **evaluate_point(attack.test)}]

        def evaluate_at(step: int, attack: Attack = attack, curve: list = curve) -> None:
            if step % eval_every == 0 or step == config.max_steps:
                curve.append({"step": step, **evaluate_point(attack.test)})

        train(model, NLL("train") * 1.0, {"train": data}, "train", config, accelerator, seed,
              on_log=lambda record, name=attack.name: log_step({"attack": name, **record}),
              after_step=evaluate_at, description=f"attack {attack.name}")
        results[attack.name] = curve
    model.load_state_dict(unlearned)
    return results
