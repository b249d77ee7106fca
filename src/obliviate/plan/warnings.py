"""What a user should know before a run starts, though nothing is wrong enough to refuse it: answers that do not
fit ``dataset.max_length`` (they are cut), a mask made for another model, relative paths read from another
working directory than the project's. Each is logged when the plan is made and written to summary.md and
metrics.json (``warnings``)."""

from __future__ import annotations

import logging
from pathlib import Path

from obliviate.config.settings import Settings
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, truncated_answers
from obliviate.masks.mask import ParameterMask
from obliviate.models.loading import source_tokenizer
from obliviate.plan.records import ModelPlan

logger = logging.getLogger(__name__)
PROJECT = Path(__file__).resolve().parents[3]  # the checkout: src/obliviate/plan/ is three levels down


def truncation(models: ModelPlan, fmt: PromptFormat, max_length: int, splits: dict[str, list[Example]]) -> list[str]:
    """One line per split with answers longer than ``max_length`` tokens (with their prompt)."""
    tokenizer = source_tokenizer(models.base, models.cache_dir)
    lines = []
    for name, examples in splits.items():
        if cut := truncated_answers(tokenizer, examples, fmt, max_length):
            lines.append(f"{cut} of {len(examples)} examples of '{name}' are longer than dataset.max_length "
                         f"{max_length} tokens and are cut (their answers are trained on and scored in part); "
                         "raise dataset.max_length")
    return lines


def foreign_mask(mask: ParameterMask | None, models: ModelPlan, path: Path) -> list[str]:
    """A line when an existing mask's metadata names another model than the one it is applied to."""
    made_for = mask.metadata.get("model") if mask is not None else None
    if made_for is None or made_for == models.target_source.identity:
        return []
    return [f"the mask '{path}' was made for the model {made_for}, and this run unlearns "
            f"{models.target_source.identity}; rebuild it for this model (src/exec/make_mask.py) unless that is meant"]


def working_directory(s: Settings) -> list[str]:
    """A line when relative folders are read from a working directory other than the project's."""
    folders = (("logger.json.root", s.logger_json.root), ("overall.cache_dir", s.overall.cache_dir),
               ("dataset.data_dir", s.dataset.data_dir))
    relative = {key: value for key, value in folders if not Path(value).is_absolute()}
    if not relative or Path.cwd().resolve() == PROJECT:
        return []
    where = ", ".join(f"{key} → {Path(value).resolve()}" for key, value in relative.items())
    return [f"relative paths are relative to the working directory {Path.cwd()}, not to the project {PROJECT}: "
            f"{where} (a new cache there prepares models again); run from the project or give absolute paths"]


def announced(lines: list[str]) -> list[str]:
    for line in lines:
        logger.warning("%s", line)
    return lines
