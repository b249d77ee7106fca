"""Build a mask from a config's ``mask`` section: select parameters, score them, keep the top ratio."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from obliviate.config.sections import Mask
from obliviate.data.tokenize import EncodedDataset
from obliviate.errors import UserError
from obliviate.masks.mask import ParameterMask
from obliviate.masks.plots import plot_mask_statistics
from obliviate.masks.scores import MASK_SCORES, ScoringInputs
from obliviate.masks.selection import top_fraction, top_fraction_per_row
from obliviate.models.loading import shapes_of


def select_names(names: list[str], include: list[str], exclude: list[str]) -> list[str]:
    """Names matching any ``include`` regex (all when empty) and no ``exclude`` regex."""
    for key, patterns in (("mask.include", include), ("mask.exclude", exclude)):
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise UserError(f"{key} '{pattern}' is not a valid regular expression ({error}); fix it") from None
    chosen = [n for n in names if (not include or any(re.search(p, n) for p in include))
              and not any(re.search(p, n) for p in exclude)]
    if not chosen:
        raise UserError(f"mask.include {include} / mask.exclude {exclude} select no parameter; "
                        f"names look like {names[len(names) // 2]}")
    return chosen


def build_mask(model: torch.nn.Module, forget: EncodedDataset, retain: EncodedDataset | None,
               options: Mask, batch_size: int, seed: int, description: dict[str, str]) -> ParameterMask:
    """Score the selected parameters of ``model`` and keep the top ``options.ratio`` of them."""
    names = select_names([n for n, _ in model.named_parameters()], options.include, options.exclude)
    parameters = dict(model.named_parameters())
    inputs = ScoringInputs(model, {n: parameters[n] for n in names}, forget, retain, batch_size, options.mu, seed)
    try:
        scores = MASK_SCORES.get(options.score)(inputs)
    except ValueError as error:
        raise UserError(f"mask.score {options.score}: {error}") from None
    ratio, granularity = options.ratio, options.granularity
    if granularity == "global":
        kept = dict(zip(names, top_fraction([scores[n] for n in names], ratio)))
    elif granularity == "tensor":
        kept = {n: top_fraction([scores[n]], ratio)[0] for n in names}
    else:  # row: per output row for matrices, per tensor otherwise
        kept = {n: top_fraction_per_row(scores[n], ratio) if scores[n].ndim == 2
                else top_fraction([scores[n]], ratio)[0] for n in names}
    metadata = {"score": options.score, "ratio": str(ratio), "granularity": granularity,
                "include": str(options.include), "exclude": str(options.exclude),
                "created": datetime.now(UTC).isoformat(timespec="seconds"), **description}
    return ParameterMask({n: m.cpu() for n, m in kept.items()}, metadata)


@dataclass(frozen=True, kw_only=True)
class MaskRecipe:
    """How an experiment builds a mask: the mask section, the scoring batch size and seed, and what the mask is
    of (the model and the data, recorded in its metadata)."""

    options: Mask
    batch_size: int
    seed: int
    description: dict[str, str]

    def make(self, model: torch.nn.Module, forget: EncodedDataset, retain: EncodedDataset | None,
             path: Path) -> ParameterMask:
        """Build the mask for ``model``, save it at ``path`` with a statistics plot beside it."""
        mask = build_mask(model, forget, retain, self.options, self.batch_size, self.seed, self.description)
        mask.save(path)
        o = self.options
        plot_mask_statistics(mask.statistics(shapes_of(model)), path.with_suffix(".png"),
                             f"{path.name}: {o.score} ratio {o.ratio} ({o.granularity})")
        return mask
