"""LoRA adapters for any method, through peft (the ``lora`` config section).

With ``lora.enabled`` the model is wrapped by peft after the evaluation before unlearning: only the
adapters train (B starts at 0, so the wrapped model starts as the target itself). What a method needs from
the starting model comes from the same object with its adapters disabled (:func:`without_adapters`), never
from a second copy: NPO's S_ref and RMU's reference activations are computed with the adapters at their
starting value, KL terms with the adapters off.

After unlearning, the adapter is saved in the run folder (``adapter/``: safetensors plus peft's config,
loadable with ``PeftModel.from_pretrained``). With ``lora.merge`` the adapter is merged into the weights
before the evaluation after unlearning, so that evaluation, attacks and the saved model (``model/``) all
use the merged weights; without it the evaluation runs on the adapter model. Fine-tune attacks always fine-
tune full merged weights (an attacker holds the weights, not our adapter split).

A weight mask selects base weights, which LoRA freezes: the two together are refused in setup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from obliviate.errors import UserError

if TYPE_CHECKING:
    from obliviate.config.sections import Lora

ALL_LINEAR = "all-linear"  # peft: every Linear layer but the output head


def is_adapted(model: torch.nn.Module) -> bool:
    """The model has adapters that :func:`without_adapters` can switch off (a peft model, or an Offset model,
    which is then its target)."""
    return callable(getattr(model, "disable_adapter", None))


def check_target_modules(lora: "Lora", parameter_names: list[str]) -> None:
    """Each of ``lora.target_modules`` must name modules of the model (by the last part of their name)."""
    if not lora.target_modules:
        raise UserError("lora.target_modules is empty; name modules such as q_proj,v_proj or use all-linear")
    if lora.target_modules == [ALL_LINEAR]:
        return
    modules = {name.rsplit(".", 2)[-2] for name in parameter_names if name.count(".") >= 1}
    if missing := [target for target in lora.target_modules if target not in modules]:
        examples = ", ".join(sorted(m for m in modules if "proj" in m or "fc" in m)[:6])
        raise UserError(f"lora.target_modules: the model has no module '{missing[0]}'; its modules include "
                        f"{examples} (or use all-linear)")


def attach(model: torch.nn.Module, lora: "Lora") -> torch.nn.Module:
    """The model wrapped with fresh LoRA adapters (only they are trainable)."""
    from peft import LoraConfig, get_peft_model

    targets = ALL_LINEAR if lora.target_modules == [ALL_LINEAR] else list(lora.target_modules)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


@contextlib.contextmanager
def without_adapters(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The starting model, from an adapted model with its adapters switched off."""
    with model.disable_adapter():
        yield model


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with the adapters folded into its weights (a model without peft adapters as it is)."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model
