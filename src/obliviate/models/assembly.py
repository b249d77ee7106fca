"""The model of an unlearning run in its roles: what the metrics see, what the optimiser updates, what is saved.

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

ADAPTER, ADAPTER_BEST, MODEL, MODEL_BEST = "adapter", "adapter_best", "model", "model_best"


class Assembly(ABC):
    """The run's model: ``evaluated`` is what the metrics see, ``trained`` what the optimiser updates."""

    evaluated: torch.nn.Module
    trained: torch.nn.Module

    def finish_unlearning(self, folder: Path | None, merge: bool) -> None:
        """After unlearning: save what only this form has (an adapter) into the run ``folder`` (None on the
        processes that write nothing); merge adapters into the weights when ``merge`` (default: nothing to do)."""

    def attacked(self) -> torch.nn.Module:
        """The module fine-tune attacks train: full weights, adapters merged (default: the evaluated model)."""
        return self.evaluated

    @abstractmethod
    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the unlearned model into the run ``folder`` as ``model/`` (a save_pretrained folder)."""

    def write_record(self, folder: Path, saved: bool) -> None:
        """Write what is needed to load the unlearned model again from the run ``folder`` (``saved``: whether
        :meth:`save` wrote ``model/``); default: nothing beyond ``model/`` itself."""

    @abstractmethod
    def save_best(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the best checkpoint's weights (now loaded) into the run ``folder``, if this form can."""


class WholeModel(Assembly):
    def __init__(self, model: torch.nn.Module) -> None:
        self.evaluated = self.trained = model

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        save_model(self.evaluated, tokenizer, folder / MODEL)

    def save_best(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        save_model(self.evaluated, tokenizer, folder / MODEL_BEST)


class AdaptedModel(Assembly):
    """A peft model: only its LoRA adapters train."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.evaluated = self.trained = model

    def finish_unlearning(self, folder: Path | None, merge: bool) -> None:
        if folder is not None:
            self.evaluated.save_pretrained(folder / ADAPTER)  # safetensors + peft's adapter config
        if merge:
            self.evaluated = self.trained = adapters.merged(self.evaluated)

    def attacked(self) -> torch.nn.Module:
        self.evaluated = self.trained = adapters.merged(self.evaluated)
        return self.evaluated

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        save_model(adapters.merged(self.evaluated), tokenizer, folder / MODEL)

    def save_best(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        self.evaluated.save_pretrained(folder / ADAPTER_BEST)


class CombinedModel(Assembly):
    """ULD/Offset: the evaluated model is the combination; ``trained`` is the part the objective is computed on."""

    def __init__(self, model: LogitDifferenceModel, trained: torch.nn.Module) -> None:
        self.evaluated: LogitDifferenceModel = model
        self.trained = trained

    def finish_unlearning(self, folder: Path | None, merge: bool) -> None:
        if folder is not None:
            self.evaluated.assistant.save_pretrained(folder / ADAPTER)

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """The (unchanged) target as ``model/``."""
        save_model(self.evaluated.target, tokenizer, folder / MODEL)

    def write_record(self, folder: Path, saved: bool) -> None:
        """The spec beside the assistant's adapter, naming the target: the saved ``model/``, or where it came
        from."""
        spec = replace(self.evaluated.spec, target=MODEL if saved else self.evaluated.spec.target)
        write_json_atomic(folder / SPEC_FILE, spec.record())

    def save_best(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Only the assistant's adapter trains; a best checkpoint of it is kept in the evaluation, not saved."""
