"""A parameter mask: for each selected parameter, which of its elements may change.

Files: our format is safetensors with one bool tensor per parameter name and string metadata (score,
ratio, granularity, model, data, created). WAGLE's ``.pt`` files (a dict name → bool tensor) are read
with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. Parameters absent from
the file are frozen entirely.

Application (the only place masks act, see :meth:`ParameterMask.before_step`): after gradient clipping
and before the optimiser step, gradients are multiplied by the mask and AdamW's decoupled weight decay
is applied here to trainable elements only (the optimiser's own decay is off for masked parameters),
and only to tensors the optimiser would decay (not biases or norms: the same no-decay rule as its groups).
Masked elements therefore get zero gradient, zero Adam moments, zero update and no decay: they stay
bit-identical. (Public WAGLE code lets AdamW's decay shrink masked weights; this does not.)
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from obliviate.errors import UserError
from obliviate.models.anatomy import without_weight_decay
from obliviate.models.sharding import local_like

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def boolean_masks(masks: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The masks as bool tensors; a UserError for values other than True/False or 0/1 (e.g. saliency scores,
    which ``.bool()`` would silently turn into "every non-zero trains")."""
    for name, mask in masks.items():
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise UserError(f"mask {where} holds values other than 0/1 in '{name}' (dtype {mask.dtype}; scores?); "
                            "a mask must be boolean: select the top elements with src/exec/make_mask.py")
    return {name: mask.bool() for name, mask in masks.items()}


class ParameterMask:
    def __init__(self, masks: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        self.masks = {name: mask.bool() for name, mask in masks.items()}
        self.metadata = dict(metadata or {})
        self._attached: list[tuple[torch.nn.Parameter, torch.Tensor, bool]] = []  # (parameter, mask, decays)

    # ------------------------------------------------------------------ files
    def save(self, path: Path) -> None:
        """Write atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        save_file({n: m.contiguous().cpu() for n, m in self.masks.items()}, str(temporary), metadata=self.metadata)
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ParameterMask":
        if not path.is_file():
            raise UserError(f"mask file '{path}' does not exist; build it with src/exec/make_mask.py or fix the path")
        if path.suffix == ".pt":
            try:
                content = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # unpickling refused or corrupt
                raise UserError(f"mask file '{path}' is not a plain dict of tensors ({error}); "
                                "re-save it as {name: bool tensor}") from None
            if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
                raise UserError(f"mask file '{path}' must hold a dict of parameter name -> bool tensor")
            return cls(boolean_masks(content, f"'{path}'"), {"source": str(path)})
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors, metadata = {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata()
        except Exception as error:
            raise UserError(f"mask file '{path}' is not a readable safetensors file ({error})") from None
        return cls(boolean_masks(tensors, f"'{path}'"), metadata or {})

    # ------------------------------------------------------------------ checks
    def check(self, shapes: dict[str, tuple[int, ...]], where: str) -> None:
        """UserError listing every name and shape that does not fit the model's parameters."""
        unknown = sorted(set(self.masks) - set(shapes))
        wrong = [f"{n} {tuple(m.shape)} vs {shapes[n]}" for n, m in sorted(self.masks.items())
                 if n in shapes and tuple(m.shape) != tuple(shapes[n])]
        if unknown or wrong:
            parts = ([f"{len(unknown)} names not in the model (e.g. {', '.join(unknown[:3])})"] if unknown else []) + \
                    ([f"{len(wrong)} shapes differ ({'; '.join(wrong[:3])})"] if wrong else [])
            raise UserError(f"mask {where} does not fit the model: {', '.join(parts)}; build a mask for this model "
                            "(src/exec/make_mask.py)")
        if not any(mask.any() for mask in self.masks.values()):
            raise UserError(f"mask {where} selects no element (all False): nothing would train; build it with a "
                            "larger mask.ratio or fix the file")

    # ------------------------------------------------------------------ training
    def attach(self, model: torch.nn.Module) -> None:
        """Freeze parameters with no trainable element; remember the others with their masks on device (with
        sharded weights, each process keeps the mask's shard of its own part of the parameter)."""
        self._attached = []
        for name, parameter in model.named_parameters():
            mask = self.masks.get(name)
            if mask is None or not mask.any():
                parameter.requires_grad_(False)
            elif not mask.all():
                self._attached.append((parameter, local_like(mask, parameter),
                                       not without_weight_decay(name, parameter)))

    def partially_masked(self) -> set[int]:
        """ids of parameters whose weight decay the mask applies itself."""
        return {id(parameter) for parameter, _, _ in self._attached}

    @torch.no_grad()
    def before_step(self, lr: float, weight_decay: float) -> None:
        """grad ← grad ⊙ mask; θ ← θ − lr·wd·θ ⊙ mask (AdamW's decoupled decay, trainable elements of tensors
        that take decay only)."""
        for parameter, mask, decays in self._attached:
            if parameter.grad is not None:
                parameter.grad.mul_(mask)
            if weight_decay and decays:
                parameter.sub_(parameter * mask * (lr * weight_decay))

    # ------------------------------------------------------------------ reporting
    def record(self, path: Path, shapes: dict[str, tuple[int, ...]]) -> dict:
        """A run's ``mask_stats.json``: where the mask is, what made it, and its :meth:`statistics`."""
        return {"path": str(path), "metadata": self.metadata, **self.statistics(shapes)}

    def statistics(self, shapes: dict[str, tuple[int, ...]]) -> dict:
        """Trainable fraction overall, per layer and per module type (over all model parameters)."""
        totals: dict[str, dict[str, list[int]]] = {"layer": defaultdict(lambda: [0, 0]),
                                                    "module": defaultdict(lambda: [0, 0])}
        kept_all = size_all = 0
        for name, shape in shapes.items():
            size = int(torch.Size(shape).numel())
            kept = int(self.masks[name].sum()) if name in self.masks else 0
            layer = _LAYER.search(name)
            keys = {"layer": layer.group(1) if layer else "other",
                    "module": re.sub(r"^.*?\.layers\.\d+\.", "", name) if layer else name}
            for kind, key in keys.items():
                totals[kind][key][0] += kept
                totals[kind][key][1] += size
            kept_all, size_all = kept_all + kept, size_all + size
        return {"trainable_fraction": kept_all / size_all,
                **{f"per_{kind}": {k: kept / size for k, (kept, size) in table.items()}
                   for kind, table in totals.items()}}
