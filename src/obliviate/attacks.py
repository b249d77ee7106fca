"""Fine-tune attacks: does forgotten knowledge come back when the unlearned model is fine-tuned?

Each entry of ``attack.datasets`` is fine-tuned on, starting from the unlearned weights every time:
a downstream task unrelated to the forget set (``synthetic:math_train`` offline; a hub id such as
``openai/gsm8k:main`` on a GPU machine), or ``relearn``: the first ``attack.num_examples`` forget
examples. ``attack.lr``, ``attack.max_steps``, ``attack.batch_size`` and ``attack.num_examples`` hold one
value for every attack or one per attack. At step 0 and every ``attack.eval_every`` steps the forget
split is evaluated with ``eval.metrics`` (for ``relearn`` on a slice, also the forget examples outside
the slice, as ``forget_unseen``) and, when the attack names a test set (``attack.test_datasets``, same
order), the task's own accuracy (``exact_match`` of greedy answers), so curves can be drawn.
Results go to ``attacks.json`` (keyed by the attack's data set name); training logs to
``attack_train_log.jsonl``.

``quantize:8`` and ``quantize:4`` are attacks without training (Zhang et al., "Does your LLM truly unlearn? An
embarrassingly simple approach to recover unlearned knowledge", ICLR 2025, arXiv 2410.16454: 4-bit
quantization brings back much of what GA and NPO removed, because their small updates round away): every
linear layer's weight is rounded by optimum-quanto's weight quantization, round-to-nearest without
calibration data: ``qint8`` symmetric with one scale per output channel (w ≈ s·round(w/s), s = max|w|/127),
``qint4`` affine in groups of up to 128 inputs (a scale and a shift per group, 16 levels), and the dequantized
values are evaluated like any attack point (step 1; step 0 is the unlearned model). optimum-quanto is
Hugging Face's quantization library for transformers models; it runs on CPU and is imported only by this
attack (torchao, the alternative we tried, also rounds on CPU, but once installed transformers imports it at
every model load, which adds most of a second and several warnings to every run). Output heads stay in full
precision (as GPTQ and AWQ leave them; with tied embeddings the head is also the input embedding).
Quantizing one layer at a time in place needs no second model; the next attack restarts from the unlearned
weights as every attack does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.config.sections import Attack as AttackSettings
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.errors import UserError
from obliviate.evaluation.session import EvaluationSession
from obliviate.methods.terms import NLL
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig

RELEARN = "relearn"
QUANTIZE = "quantize:"  # quantize:<bits>
QUANTIZATION_WIDTHS = (4, 8)


@dataclass
class Attack:
    name: str
    train: list[Example]
    test: list[Example]
    lr: float
    max_steps: int
    batch_size: int

    @property
    def quantization_bits(self) -> int | None:
        """The width of a quantization attack (``quantize:4`` -> 4), None for a fine-tune attack."""
        return int(self.name.removeprefix(QUANTIZE)) if self.name.startswith(QUANTIZE) else None


@dataclass(frozen=True, kw_only=True)
class AttackPlan:
    """Every attack of the experiment, and what they share: evaluation every ``eval_every`` steps, the prompt
    format and length of the encoding, the seed of their batches."""

    attacks: list[Attack]
    eval_every: int
    fmt: PromptFormat
    max_length: int
    seed: int


def quantization_width(name: str) -> int:
    """The width of ``quantize:<bits>``; a one-line error for any other width."""
    width = name.removeprefix(QUANTIZE)
    if not width.isdigit() or int(width) not in QUANTIZATION_WIDTHS:
        raise UserError(f"attack '{name}': quantization width '{width}' is not one of "
                        f"{', '.join(map(str, QUANTIZATION_WIDTHS))}; use quantize:8 or quantize:4")
    return int(width)


def quantize_weights(model: torch.nn.Module, bits: int) -> None:
    """Round each linear layer's weight (output heads aside) to ``bits``-bit integers with optimum-quanto, in
    place (written back dequantized), one layer at a time."""
    from optimum.quanto import freeze, qint4, qint8, quantize

    width = {8: qint8, 4: qint4}[bits]
    heads = {id(part.get_output_embeddings()) for part in model.modules() if isinstance(part, PreTrainedModel)}
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, torch.nn.Linear) or id(module) in heads:
                continue
            holder = torch.nn.Sequential(torch.nn.Linear(module.in_features, module.out_features, bias=False,
                                                         device=module.weight.device, dtype=module.weight.dtype))
            holder[0].weight.copy_(module.weight)
            quantize(holder, weights=width)
            freeze(holder)
            module.weight.copy_(holder[0].qweight.dequantize().to(module.weight.dtype))


def per_attack(values: list, key: str, count: int) -> list:
    """Broadcast one value to every attack, or check there is one value per attack."""
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise UserError(f"attack.{key} has {len(values)} values for {count} attack.datasets; "
                        "give one value for all attacks or one per attack")
    return values


def plan_attacks(section: AttackSettings, forget: list[Example], load: Callable[[str], list[Example]], *,
                 fmt: PromptFormat, max_length: int, seed: int) -> AttackPlan:
    """Load every attack's data and check its settings up front (so bad input fails before any long work)."""
    names = section.datasets
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise UserError(f"attack.datasets lists {duplicates[0]!r} more than once; each attack needs its own data")
    count = len(names)
    tests = per_attack(section.test_datasets, "test_datasets", count) if section.test_datasets else [""] * count
    sizes, lrs, steps, batches = (per_attack(getattr(section, key), key, count)
                                  for key in ("num_examples", "lr", "max_steps", "batch_size"))
    attacks = []
    for name, test, size, lr, max_steps, batch_size in zip(names, tests, sizes, lrs, steps, batches):
        if name.startswith(QUANTIZE):
            quantization_width(name)
            attacks.append(Attack(name, [], [], lr, 1, batch_size))
            continue
        examples = forget if name == RELEARN else load(name)
        attacks.append(Attack(name, examples[:size or None], load(test) if test else [], lr, max_steps, batch_size))
    return AttackPlan(attacks=attacks, eval_every=section.eval_every, fmt=fmt, max_length=max_length, seed=seed)


class AttackPoints:
    """What each point of an attack curve evaluates: the forget metrics (and lm-eval's tasks); for a relearning
    attack on a slice, also the forget examples outside it (``forget_unseen``: knowledge that comes back there was
    not simply trained in again); and the attack task's own accuracy. Every attack starts from the same unlearned
    weights (step 0), so their forget metrics are computed once and reused."""

    def __init__(self, session: EvaluationSession, tokenizer: PreTrainedTokenizerBase) -> None:
        self.session, self.tokenizer = session, tokenizer
        self._unlearned: dict | None = None

    def __call__(self, model: torch.nn.Module, attack: Attack, step: int) -> dict:
        session, tokenizer = self.session, self.tokenizer
        if step > 0:
            metrics = session.forget_metrics(model, tokenizer, with_tasks=True)
        else:
            if self._unlearned is None:
                self._unlearned = session.forget_metrics(model, tokenizer, with_tasks=True)
            metrics = self._unlearned
        point = {"forget": dict(metrics)}
        forget = session.plan.split("forget").examples
        trained = set(attack.train)
        unseen = tuple(e for e in forget if e not in trained)
        if attack.name == RELEARN and 0 < len(unseen) < len(forget):
            point["forget_unseen"] = session.forget_metrics(model, tokenizer, unseen)
        if attack.test:
            point["task"] = session.task_accuracy(model, tokenizer, attack.test)
        return point


def run_attacks(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, plan: AttackPlan,
                accelerator: Accelerator, *, evaluate_point: Callable[[Attack, int], dict],
                log_step: Callable[[dict], None]) -> dict:
    """Fine-tune a fresh copy of the unlearned weights on each attack; return its evaluation curve.
    ``evaluate_point(attack, step)`` evaluates one point; step 0 is always the unlearned weights."""
    unlearned = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    results = {}
    eval_every = plan.eval_every
    for attack in plan.attacks:
        model.load_state_dict(unlearned)
        if attack.quantization_bits is not None:
            curve = [{"step": 0, **evaluate_point(attack, 0)}]
            quantize_weights(model, attack.quantization_bits)
            results[attack.name] = curve + [{"step": 1, **evaluate_point(attack, 1)}]
            continue
        model.requires_grad_(True)  # downstream fine-tuning updates every weight
        data = encode_dataset(tokenizer, attack.train, plan.fmt, plan.max_length)
        config = TrainingConfig(lr=attack.lr, num_epochs=1, max_steps=attack.max_steps, gradient_accumulation_steps=1,
                                weight_decay=0.0, warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0,
                                logging_steps=1, batch_size=attack.batch_size)
        curve = [{"step": 0, **evaluate_point(attack, 0)}]

        def evaluate_at(step: int, attack: Attack = attack, curve: list = curve) -> None:
            if step % eval_every == 0 or step == attack.max_steps:
                curve.append({"step": step, **evaluate_point(attack, step)})

        train(model, NLL("train") * 1.0, {"train": data}, "train", config, accelerator, plan.seed,
              on_log=lambda record, name=attack.name: log_step({"attack": name, **record}),
              after_step=evaluate_at, description=f"attack {attack.name}")
        results[attack.name] = curve
    model.load_state_dict(unlearned)
    return results
