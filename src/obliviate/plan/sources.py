"""What an experiment reads, resolved and checked: its data (forget, retain and the method's own), where its
models come from, what a method may check of the model before any weights load, and its weight mask."""

from __future__ import annotations

import random
from pathlib import Path

from obliviate.attacks import AttackPlan
from obliviate.config.settings import Settings
from obliviate.data.examples import Example
from obliviate.data.sources import load_examples
from obliviate.data.tokenize import PromptFormat
from obliviate.errors import UserError
from obliviate.masks.build import MaskRecipe, select_names
from obliviate.masks.mask import ParameterMask
from obliviate.methods.base import Method, ModelFacts
from obliviate.methods.objective import Objective
from obliviate.models.adapters import check_target_modules
from obliviate.models.loading import (
    ModelSource,
    model_depth,
    parameter_shapes,
    resolve_device,
    resolve_dtype,
    resolve_model,
    tokenizers_match,
)
from obliviate.plan.records import MaskPlan, ModelPlan
from obliviate.training.finetune import FinetuneRecipe


def training_data(s: Settings, method: Method | None, data_dir: Path) -> dict[str, list[Example]]:
    """Forget and retain data, and the data the method reads besides (none for ``method`` None)."""
    d = s.dataset
    if not d.forget_dataset_name:
        raise UserError("dataset.forget_dataset_name is empty; name the data to forget")
    names = {"forget": d.forget_dataset_name, "retain": d.retain_dataset_name,
             **(method.datasets() if method else {})}
    return {split: load_examples(name, data_dir) for split, name in names.items() if name}


def replayed(retain: list[Example], count: int, seed: int) -> list[Example]:
    """``count`` retain examples (all when fewer), drawn with ``seed``: what a target fine-tuned from the retain
    model trains on beside the forget set, so that learning the forget facts does not wear its retain facts."""
    return random.Random(seed).sample(retain, min(count, len(retain)))


def model_plan(s: Settings, fmt: PromptFormat, data: dict[str, list[Example]]) -> ModelPlan:
    base = resolve_model(s.overall.model_name)
    device = resolve_device(s.overall.device)
    cache_dir = Path(s.overall.cache_dir)

    def recipe(examples: list[Example], start: FinetuneRecipe | None = None) -> FinetuneRecipe:
        return FinetuneRecipe(base, examples, s.finetune, fmt, s.dataset.max_length, cache_dir, start)

    if s.eval.model != "model_name" and not s.finetune.enabled:
        raise UserError(f"eval.model {s.eval.model} needs the fine-tuned models: pass --finetune.enabled true, or "
                        "evaluate a model by name with --eval.model model_name")
    target: FinetuneRecipe | None = None
    retain: FinetuneRecipe | ModelSource | None = None
    if s.finetune.enabled:
        retain = recipe(data["retain"])
        if s.finetune.target_from == "retain":
            target = recipe(data["forget"] + replayed(data["retain"], len(data["forget"]), s.finetune.seed), retain)
        else:
            target = recipe(data["forget"] + data.get("retain", []))
    elif s.eval.retain_model_name:
        retain = resolve_model(s.eval.retain_model_name)
    sharded = s.overall.sharding == "fsdp"
    # sharded weights keep fp32 master weights; on CUDA they compute in bf16 (models.sharding)
    dtype = resolve_dtype("float32" if sharded and s.overall.dtype == "auto" else s.overall.dtype, device)
    return ModelPlan(base, target, retain, device, dtype, cache_dir, sharded)


def model_facts(s: Settings, models: ModelPlan) -> ModelFacts:
    return ModelFacts(model_name=models.base.name, depth=model_depth(models.base, models.cache_dir),
                      parameter_names=list(parameter_shapes(models.base, models.cache_dir)),
                      masked=bool(s.unlearn.mask_path), lora=s.lora, sharded=models.sharded,
                      same_tokenizer=lambda name: tokenizers_match(resolve_model(name), models.base, models.cache_dir))


def check_lora(s: Settings, models: ModelPlan) -> None:
    """LoRA's target modules exist in the model (no weights loaded); a mask and LoRA are not combined."""
    if not s.lora.enabled:
        return
    if s.unlearn.mask_path:
        raise UserError("unlearn.mask_path selects base weights, which LoRA freezes (only adapters train); drop the "
                        "mask or set --lora.enabled false")
    check_target_modules(s.lora, list(parameter_shapes(models.base, models.cache_dir)))


def mask_plan(s: Settings, models: ModelPlan, data: dict[str, list[Example]]) -> MaskPlan | None:
    """Load an existing mask and check it against the model's parameters (no weights loaded), or check that
    the mask section can build one."""
    if not s.unlearn.mask_path:
        return None
    path = Path(s.unlearn.mask_path)
    if path.is_dir():
        raise UserError(f"unlearn.mask_path '{path}' is a folder; name a mask file (.safetensors) in it")
    shapes = parameter_shapes(models.base, models.cache_dir)
    if path.exists():
        mask = ParameterMask.load(path)
        mask.check(shapes, f"'{path}'")
        return MaskPlan(path, mask)
    select_names(list(shapes), s.mask.include, s.mask.exclude)
    if s.mask.score == "wagle" and "retain" not in data:
        raise UserError("mask.score wagle needs retain data; set dataset.retain_dataset_name")
    return MaskPlan(path, None)


def mask_recipe(s: Settings, models: ModelPlan) -> MaskRecipe:
    description = {"model": models.target_source.identity, "forget": s.dataset.forget_dataset_name,
                   "retain": s.dataset.retain_dataset_name}
    return MaskRecipe(options=s.mask, batch_size=s.dataset.batch_size, seed=s.overall.seed, description=description)


def check_sharding(s: Settings, objective: Objective, attacks: AttackPlan) -> None:
    """With overall.sharding fsdp: refuse, in one line each, what does not train sharded weights."""
    if s.overall.sharding != "fsdp":
        return
    if limits := objective.sharding_limits(s.lora.enabled):
        raise UserError(f"overall.sharding fsdp: {s.unlearn.unlearn_method}'s term {limits[0]}")
    if s.unlearn.g_effect_every:
        raise UserError("unlearn.g_effect_every takes gradients with torch.autograd.grad, which crashes under FSDP2; "
                        "set it to 0, or use --overall.sharding none")
    if s.lora.enabled and (s.lora.merge or attacks.attacks):
        raise UserError("lora.merge and attacks merge the adapters into sharded weights, which is not supported; "
                        "merge the saved adapter/ afterwards, or use --overall.sharding none")
    if quantized := [a.name for a in attacks.attacks if a.quantization_bits is not None]:
        raise UserError(f"attack {quantized[0]} rounds whole weight matrices, which sharded weights are not; run it "
                        "with --overall.sharding none on the saved model")
