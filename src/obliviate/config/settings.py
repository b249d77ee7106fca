"""The resolved, validated configuration of one experiment, as typed sections."""

from __future__ import annotations

from typing import Any

from obliviate.config.sections import (
    SECTIONS,
    Attack,
    Dataset,
    Eval,
    Finetune,
    JsonLogger,
    Judge,
    Logger,
    Lora,
    Mask,
    Overall,
    Unlearn,
)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


class Settings:
    """Every key's final value: ``settings.unlearn.lr`` (typed sections), ``settings.method("NPO")`` (a
    method's section as keyword arguments), ``settings["unlearn.NPO.beta"]`` (any dotted key)."""

    overall: Overall
    unlearn: Unlearn
    dataset: Dataset
    finetune: Finetune
    eval: Eval
    eval_judge: Judge
    mask: Mask
    lora: Lora
    attack: Attack
    logger: Logger
    logger_json: JsonLogger

    def __init__(self, flat: dict[str, Any], given: frozenset[str] = frozenset()) -> None:
        self._flat = dict(flat)
        self.given = given  # the keys a config file or the command line set (the rest are defaults)
        for name, section in SECTIONS.items():
            values = {field: flat[f"{name}.{field}"] for field in section.__dataclass_fields__}
            setattr(self, name.replace(".", "_"), section(**values))  # logger.json -> settings.logger_json

    def __getitem__(self, dotted: str) -> Any:
        return self._flat[dotted]

    def method(self, name: str) -> dict[str, Any]:
        """The keys of the method section ``unlearn.<name>`` (empty for a method without parameters)."""
        head = f"unlearn.{name}."
        return {k[len(head):]: v for k, v in self._flat.items() if k.startswith(head) and "." not in k[len(head):]}

    def given_method_sections(self) -> set[str]:
        """The methods whose section ``unlearn.<Name>`` has a key set by a config file or the command line."""
        return {key.split(".")[1] for key in self.given if key.startswith("unlearn.") and key.count(".") == 2}

    def to_dict(self) -> dict[str, Any]:
        """Nested dict of all values: saved as config.json, and valid input for ``--config_file``."""
        return nest(self._flat)
