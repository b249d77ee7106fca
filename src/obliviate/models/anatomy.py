"""The parts of a causal LM that methods reach into: its decoder layer stack, a shallower model made of its first
layers (the assistant of ULD and Offset unlearning), and which parameters are biases and norms."""

from __future__ import annotations

import copy

import torch
from accelerate.utils import extract_model_from_parallel

from obliviate.errors import UserError

LAYER_STACKS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


def without_weight_decay(name: str, parameter: torch.nn.Parameter) -> bool:
    """Biases and normalisation weights (1-D tensors, or named norm) get no weight decay, as in HF Trainer's
    default: the optimiser's parameter groups and a mask's decoupled decay both follow this."""
    return parameter.ndim < 2 or "norm" in name.lower()


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layer stack of a causal LM (Llama/Mistral/Qwen: model.model.layers; GPT-2: transformer.h),
    inside a peft wrapper and accelerate's DDP wrapper too."""
    model = extract_model_from_parallel(model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    for path in LAYER_STACKS:
        module = model
        for attribute in path.split("."):
            module = getattr(module, attribute, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise UserError(f"cannot find the decoder layers of {type(model).__name__}; use a Llama-style model "
                    "(layers at model.layers)")


def first_layers(model: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """A model of the same class made of ``model``'s embeddings, first ``num_layers`` decoder layers, final
    norm and output head (the "logit lens" at layer ``num_layers``).

    Its parameters and buffers ARE ``model``'s (the same tensors, no copy): training must leave them
    frozen, e.g. by training adapters on top. Its modules are its own, so adapters attached to it never
    appear in ``model``."""
    depth = len(decoder_layers(model))
    if not 1 <= num_layers <= depth:
        raise UserError(f"the assistant needs 1 to {depth} layers of the target, not {num_layers}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:num_layers]
    with torch.device("meta"):
        shallow = type(model)(config)
    for kind, own in (("_parameters", dict(model.named_parameters(remove_duplicate=False))),
                      ("_buffers", dict(model.named_buffers(remove_duplicate=False)))):
        entries = (shallow.named_parameters if kind == "_parameters" else shallow.named_buffers)(remove_duplicate=False)
        for name, _ in list(entries):
            module_name, _, leaf = name.rpartition(".")
            getattr(shallow.get_submodule(module_name), kind)[leaf] = own[name]
    shallow.generation_config = model.generation_config
    return shallow.eval()
