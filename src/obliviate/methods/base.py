"""The method registry, and what a registered method is: its config section, how its values build the objective
(:mod:`obliviate.methods.objective`), and the hooks through which it says what else it reads, checks and changes
about the model. A method never sees the rest of the config: it gets its own section's values, and the methods it
wraps through a resolver (the composition of a run happens in :mod:`obliviate.plan`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from fastargs import Param

from obliviate.config.sections import Lora
from obliviate.data.examples import Example
from obliviate.methods.objective import Objective
from obliviate.models import adapters
from obliviate.models.assembly import AdaptedModel, Assembly, WholeModel
from obliviate.registry import Registry


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """What a method may check before any weights load (:meth:`Method.check`): the starting model's name, depth
    and parameter names, whether a weight mask, LoRA or sharded weights are used, and whether another model (an
    assistant) shares its tokenizer."""

    model_name: str
    depth: int
    parameter_names: list[str]
    masked: bool
    lora: Lora
    sharded: bool  # overall.sharding fsdp
    same_tokenizer: Callable[[str], bool]


MethodResolver = Callable[[str], "Method"]


class Method(ABC):
    """A registered unlearning method, configured with the values of its own section ``unlearn.<Name>``.

    ``params`` declare that section; :meth:`build` turns its values (keyword arguments, typed by their checkers)
    into the objective. A method that wraps others (ILU's base method, Offset's objective) gets them from
    ``resolve``, configured by their own sections: no method ever sees the rest of the config. Hooks with
    defaults say what else the method reads (:meth:`datasets`, :meth:`training_data`), checks (:meth:`check`)
    and changes about the model (:meth:`assemble`).
    """

    params: ClassVar[dict[str, Param]] = {}
    trains_target_weights: ClassVar[bool] = True  # False: the unlearned model is not the target's own weights

    def __init__(self, name: str, values: Mapping[str, Any], resolve: MethodResolver) -> None:
        self.name, self.values, self.resolve = name, dict(values), resolve

    @staticmethod
    @abstractmethod
    def build(**values: Any) -> Objective:
        """The objective for these hyper-parameter values."""

    def objective(self) -> Objective:
        """The objective of this method's configured values."""
        return self.build(**self.values)

    def datasets(self) -> dict[str, str]:
        """Extra splits the objective reads (split → dataset name), beyond forget and retain."""
        return {}

    def sections(self) -> set[str]:
        """The method sections the run reads: its own, and a wrapped method's (ILU's base, Offset's objective)."""
        return {self.name}

    def check(self, model: ModelFacts) -> None:
        """Raise a UserError if this method cannot run on ``model`` as set up (e.g. a layer beyond its depth), before
        any weights load (default: nothing to check)."""

    def training_data(self, data: dict[str, list[Example]]) -> dict[str, list[Example]]:
        """The examples the method trains on, by split, from the loaded ones (default: as loaded; ULD adds
        paraphrases). Evaluation always uses the data as loaded."""
        return data

    def assemble(self, target: torch.nn.Module, *, name: str, lora: Lora,
                 load: Callable[[str], torch.nn.Module]) -> Assembly:
        """The run's model from the loaded ``target`` (called ``name``): by default its own weights train, or LoRA
        adapters on it with ``lora.enabled``; ``load`` loads another model by name (an assistant)."""
        return AdaptedModel(adapters.attach(target, lora)) if lora.enabled else WholeModel(target)


METHODS: Registry[type[Method]] = Registry("unlearning method")
