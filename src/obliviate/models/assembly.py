"""The model of an unlearning run in its roles: what the metrics see, what the optimiser updates, what is saved.

Every process of a run calls every method (weights sharded over the processes are gathered for saving, which
needs them all); only the main process writes, and the others get ``folder`` None.

A method assembles it from the target (:meth:`obliviate.methods.base.Method.assemble`); the Unlearner then only
speaks to this interface, whatever the method changes about the model:

* :class:`WholeModel`: the target's own weights train and are evaluated (most methods);
* :class:`AdaptedModel`: LoRA adapters on the target train (``lora.enabled``); ``adapter/`` is saved, and the
  adapters are merged into the weights when asked (``lora.merge``), for attacks and for a saved model;
* :class:`CombinedModel`: ULD and Offset unlearning, the target combined with a trained assistant
  (:class:`~obliviate.models.logit_difference.LogitDifferenceModel`): the assistant's adapter and
  ``logit_difference.json`` are saved, and the saved model is the (unchanged) target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from obliviate.io import write_json_atomic
from obliviate.models import adapters
from obliviate.models.loading import save_model
from obliviate.models.logit_difference import SPEC_FILE, LogitDifferenceModel
from obliviate.models.sharding import full_state, is_sharded, shard

ADAPTER, ADAPTER_BEST, MODEL, MODEL_BEST = "adapter", "adapter_best", "model", "model_best"


class Assembly(ABC):
    """The run's model: ``evaluated`` is what the metrics see, ``trained`` what the optimiser updates."""

    evaluated: torch.nn.Module
    trained: torch.nn.Module

    @property
    def starting(self) -> torch.nn.Module:
        """What computes the starting model before training (evaluated "before"): by default the evaluated
        model, which starts as the target (a fresh LoRA adapter adds exact zeros)."""
        return self.evaluated

    def shard(self) -> None:
        """Shard the model's weights over the processes (``overall.sharding fsdp``)."""
        shard(self.evaluated)

    def finish_unlearning(self, folder: Path | None, merge: bool) -> None:
        """After unlearning: save what only this form has (an adapter) into the run ``folder`` (None on the
        processes that write nothing); merge adapters into the weights when ``merge`` (default: nothing to do)."""

    def attacked(self) -> torch.nn.Module:
        """The module fine-tune attacks train: full weights, adapters merged (default: the evaluated model)."""
        return self.evaluated

    @abstractmethod
    def save(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the unlearned model into the run ``folder`` as ``model/`` (a save_pretrained folder)."""

    def write_record(self, folder: Path | None, saved: bool) -> None:
        """Write what is needed to load the unlearned model again from the run ``folder`` (``saved``: whether
        :meth:`save` wrote ``model/``); default: nothing beyond ``model/`` itself."""

    @abstractmethod
    def save_best(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the best checkpoint's weights (now loaded) into the run ``folder``, if this form can."""


def save_whole(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path | None) -> None:
    """``model`` as a save_pretrained ``folder``, its weights gathered whole first when they are sharded."""
    state = full_state(model) if is_sharded(model) else None
    if folder is not None:
        save_model(model, tokenizer, folder, state)


class WholeModel(Assembly):
    def __init__(self, model: torch.nn.Module) -> None:
        self.evaluated = self.trained = model

    def save(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        save_whole(self.evaluated, tokenizer, folder and folder / MODEL)

    def save_best(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        save_whole(self.evaluated, tokenizer, folder and folder / MODEL_BEST)


class AdaptedModel(Assembly):
    """A peft model: only its LoRA adapters train."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.evaluated = self.trained = model

    def _save_adapter(self, folder: Path | None) -> None:
        """peft's adapter folder (safetensors + adapter config), its weights gathered first when sharded."""
        state = full_state(self.evaluated) if is_sharded(self.evaluated) else None
        if folder is not None:
            self.evaluated.save_pretrained(folder, state_dict=state)

    def finish_unlearning(self, folder: Path | None, merge: bool) -> None:
        self._save_adapter(folder and folder / ADAPTER)
        if merge:
            self.evaluated = self.trained = adapters.merged(self.evaluated)

    def attacked(self) -> torch.nn.Module:
        self.evaluated = self.trained = adapters.merged(self.evaluated)
        return self.evaluated

    def save(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        save_whole(adapters.merged(self.evaluated), tokenizer, folder and folder / MODEL)

    def save_best(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        self._save_adapter(folder and folder / ADAPTER_BEST)


class CombinedModel(Assembly):
    """ULD/Offset: the evaluated model is the combination; ``trained`` is the part the objective is computed on."""

    def __init__(self, model: LogitDifferenceModel, trained: torch.nn.Module) -> None:
        self.evaluated: LogitDifferenceModel = model
        self.trained = trained

    @property
    def starting(self) -> torch.nn.Module:
        return self.evaluated.target

    def shard(self) -> None:
        raise RuntimeError("a logit-difference model is not sharded (refused when the experiment is planned)")

    def finish_unlearning(self, folder: Path | None, merge: bool) -> None:
        if folder is not None:
            self.evaluated.assistant.save_pretrained(folder / ADAPTER)

    def save(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        """The (unchanged) target as ``model/``."""
        if folder is not None:
            save_model(self.evaluated.target, tokenizer, folder / MODEL)

    def write_record(self, folder: Path | None, saved: bool) -> None:
        """The spec beside the assistant's adapter, naming the target: the saved ``model/``, or where it came
        from."""
        spec = replace(self.evaluated.spec, target=MODEL if saved else self.evaluated.spec.target)
        if folder is not None:
            write_json_atomic(folder / SPEC_FILE, spec.record())

    def save_best(self, folder: Path | None, tokenizer: PreTrainedTokenizerBase) -> None:
        """Only the assistant's adapter trains; a best checkpoint of it is kept in the evaluation, not saved."""
