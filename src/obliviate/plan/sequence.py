"""Sequential (continual) unlearning: the forget sets of ``unlearn.sequence``, unlearned one after another.

MUSE's "sustainability" setting (Shi et al. 2024: forget sets of growing size removed in k stages) and the
continual TOFU setting of Yuan et al. ("A closer look at machine unlearning for LLMs", ICLR 2025): stage k starts
from the weights stage k − 1 left and runs the whole method on its own forget set (a method's reference model,
e.g. NPO's, is the stage's starting model, as when each stage is a run of its own), with the same retain data.
After every stage the model is evaluated on every split, the stages' forget sets included (``forget_stage<k>``,
forget role): how each earlier forget set stays forgotten, and how retain and utility wear down.

Every stage's forget set must lie within ``dataset.forget_dataset_name``: the fine-tuned target learnt it and the
retain model (forget quality's reference) never saw it; the primary ``forget`` split is then what is forgotten by
the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from obliviate.config.settings import Settings
from obliviate.data.examples import Example
from obliviate.data.sources import load_examples
from obliviate.errors import UserError
from obliviate.evaluation.splits import Role, Split
from obliviate.methods.base import Method

STAGE_SPLIT = "forget_stage{}"


@dataclass(frozen=True, kw_only=True)
class SequenceStage:
    """One stage: its name (``stage_<k>``), its forget set as evaluated, and what the method trains on."""

    name: str
    forget: Split
    training_data: dict[str, list[Example]]


def sequence_stages(s: Settings, method: Method | None, data: dict[str, list[Example]], data_dir: Path
                    ) -> tuple[SequenceStage, ...]:
    """The stages of ``unlearn.sequence`` (none without it, or when only evaluating), each checked."""
    u = s.unlearn
    if not u.sequence or method is None:
        return ()
    if len(u.sequence) < 2:
        raise UserError("unlearn.sequence names one forget set; a sequence needs two or more (one stage is "
                        "dataset.forget_dataset_name alone)")
    for key, value in (("eval_every", u.eval_every), ("g_effect_every", u.g_effect_every)):
        if value:
            raise UserError(f"unlearn.{key} counts the steps of one run, and unlearn.sequence runs several; the "
                            f"sequence is evaluated after every stage: set --unlearn.{key} 0")
    known = set(data["forget"])
    stages = []
    for index, name in enumerate(u.sequence, 1):
        forget = load_examples(name, data_dir)
        if outside := [e for e in forget if e not in known]:
            raise UserError(f"unlearn.sequence entry '{name}' holds {len(outside)} examples that are not in "
                            f"dataset.forget_dataset_name ({s.dataset.forget_dataset_name}), e.g. "
                            f"{outside[0].question or outside[0].answer[:40]!r}: the target must have learnt what a "
                            "stage forgets; set dataset.forget_dataset_name to the union of the stages")
        split = Split(STAGE_SPLIT.format(index), Role.FORGET, tuple(forget)).limited(s.eval.max_examples)
        stages.append(SequenceStage(name=f"stage_{index}", forget=split,
                                    training_data=method.training_data({**data, "forget": forget})))
    return tuple(stages)
