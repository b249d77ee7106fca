"""Target and retain ("oracle") models made by fine-tuning a base model, cached by content.

As in TOFU, the target model is the base model fine-tuned on forget ∪ retain, and the retain model is
the base model fine-tuned on retain only: the model unlearning should ideally become. With
``finetune.target_from retain`` the target instead starts from the retain model (its ``start`` recipe, built
first) and trains on forget plus as many replayed retain examples: the retain model's training is not done
twice. The cache key hashes the base model's identity, the SET of training examples (so forget01 ∪ retain99 and
forget10 ∪ retain90 share one target), the fine-tuning keys, finetune.seed and the prompt format; a second
run with the same recipe loads the saved folder instead of training.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from obliviate.config.sections import Finetune
from obliviate.data.examples import Example, content_hash
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.errors import UserError
from obliviate.io import exclusive_lock, write_json_atomic
from obliviate.methods.terms import NLL
from obliviate.models.loading import ModelSource, load_model, save_model
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig

RECIPE_VERSION = 1


def canonical_examples(examples: list[Example]) -> list[Example]:
    """Deduplicated and sorted, so that the same set of examples always trains the same model."""
    unique = {json.dumps(e.record(), sort_keys=True): e for e in examples}
    return [unique[key] for key in sorted(unique)]


class FinetuneRecipe:
    """How to make one fine-tuned model; ``source`` names it before (and whether or not) it is built."""

    def __init__(self, base: ModelSource, examples: list[Example], finetune: Finetune, fmt: PromptFormat,
                 max_length: int, cache_dir: Path, start: FinetuneRecipe | None = None) -> None:
        self.start = start  # a recipe whose model this one continues from (built first), or None for ``base``
        if start is not None:
            base = start.source
        self.base, self.examples = base, canonical_examples(examples)
        self.training = TrainingConfig.of(finetune, batch_size=finetune.batch_size)
        self.seed, self.fmt, self.max_length = finetune.seed, fmt, max_length
        training = {key: value for key, value in asdict(finetune).items()
                    if key not in ("enabled", "seed", "target_from")}  # target_from shows in the base
        self.description = {
            "version": RECIPE_VERSION, "base": base.identity, "data": content_hash(self.examples),
            "num_examples": len(self.examples), "training": training, "seed": self.seed,
            "prompt_format": asdict(fmt), "max_length": max_length,
        }
        key = hashlib.sha256(json.dumps(self.description, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = cache_dir / "finetuned" / key
        self.source = ModelSource(str(self.folder), "folder", f"finetuned:{key}")

    @property
    def is_built(self) -> bool:
        return (self.folder / "config.json").is_file()

    def check_buildable(self, num_processes: int, role: str) -> None:
        """Fine-tuning runs on one process: the cached model must not depend on how many processes made it."""
        if self.is_built:
            return
        if self.start is not None:
            self.start.check_buildable(num_processes, "retain")
        if num_processes > 1:
            raise UserError(f"the {role} model is not fine-tuned yet, and fine-tuning runs on one process; prepare it "
                            "first with one process: python src/exec/finetune.py --config_file <this config>")

    def build(self, cache_dir: Path, device: torch.device, dtype: torch.dtype, accelerator: Accelerator,
              role: str) -> ModelSource:
        """Fine-tune and save (atomically) unless already cached; return the model's source. Two runs that need
        the same uncached model at once: one fine-tunes it, the other waits for it and reuses it."""
        if self.is_built:
            return self.source
        self.check_buildable(accelerator.num_processes, role)
        if self.start is not None:
            self.start.build(cache_dir, device, dtype, accelerator, "retain")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        lock = self.folder.with_name(self.folder.name + ".lock")
        with exclusive_lock(lock, f"waiting for another run that fine-tunes the same {role} model ({lock})"):
            if not self.is_built:  # built by another run while this one waited
                self._build(device, dtype, accelerator, role, cache_dir)
        return self.source

    def _build(self, device: torch.device, dtype: torch.dtype, accelerator: Accelerator, role: str,
               cache_dir: Path) -> None:
        set_seed(self.seed)
        model, tokenizer = load_model(self.base, cache_dir, device, dtype)
        dataset = encode_dataset(tokenizer, self.examples, self.fmt, self.max_length)
        log: list[dict[str, float]] = []
        train(model, NLL("train") * 1.0, {"train": dataset}, "train", self.training, accelerator, self.seed,
              on_log=log.append, description=f"fine-tune {role} model")
        work = self.folder.with_name(self.folder.name + ".incomplete")
        shutil.rmtree(work, ignore_errors=True)
        save_model(accelerator.unwrap_model(model), tokenizer, work)
        accelerator.free_memory()  # drop accelerate's references to this model and its optimiser
        write_json_atomic(work / "recipe.json", {"role": role, **self.description})
        (work / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        work.rename(self.folder)
