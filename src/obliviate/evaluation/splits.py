"""Evaluated splits and their roles: what a split IS decides which metrics apply and how they aggregate,
never its name.

Roles:

* ``forget``: the data to unlearn (TOFU's forget set, MUSE's forget texts or forget QA);
* ``retain``: data the model must keep;
* ``holdout``: data of the forget set's kind that was never trained on (the non-members of membership
  inference, MUSE's holdout texts);
* ``knowledge``: real-world knowledge the base model has (TOFU's real_authors and world_facts);
* ``task``: a downstream task's test data (the accuracy of a fine-tune attack's own task).

Each split also has a kind, read off its examples: question/answer pairs or plain texts. The splits named
by ``dataset.*_dataset_name`` are the primary split of their role (``forget``, ``retain``, ``holdout``,
and the two knowledge splits ``real_authors`` and ``world_facts``); model-level metrics (membership AUC,
model utility, PrivLeak) read the primary splits. ``eval.extra_splits`` adds splits that declare their role.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from obliviate.data.examples import Example
from obliviate.errors import UserError


class Role(StrEnum):
    FORGET = "forget"
    RETAIN = "retain"
    HOLDOUT = "holdout"
    KNOWLEDGE = "knowledge"
    TASK = "task"


ALL_ROLES = frozenset(Role)
PRIMARY_SPLITS = {"forget": Role.FORGET, "retain": Role.RETAIN, "holdout": Role.HOLDOUT,
                  "real_authors": Role.KNOWLEDGE, "world_facts": Role.KNOWLEDGE}
RESERVED_NAMES = frozenset({"model", "lm_eval", "not_computed", "generations"})  # keys of results files


@dataclass(frozen=True)
class Split:
    """A named, role-carrying list of evaluation examples."""

    name: str
    role: Role
    examples: tuple[Example, ...]
    primary: bool = False

    @property
    def questions(self) -> list[Example]:
        """The question/answer examples (texts have no question)."""
        return [e for e in self.examples if not e.is_text]

    @property
    def texts(self) -> list[Example]:
        return [e for e in self.examples if e.is_text]

    def limited(self, count: int) -> "Split":
        """The first ``count`` examples (0 = all)."""
        return Split(self.name, self.role, self.examples[:count or None], self.primary)


def base_answer(example: Example, role: Role) -> str:
    """The answer the perturbed answers are compared with (truth ratio, multiple choice).

    TOFU (``config/eval_everything.yaml``, ``base_answer_key``): the paraphrased answer on the forget and
    retain splits, the answer itself on the real-world knowledge splits. A record without a paraphrased
    answer uses its answer.
    """
    if role is Role.KNOWLEDGE:
        return example.answer
    return example.paraphrased_answer or example.answer


def parse_extra_split(entry: str) -> tuple[str, Role, str]:
    """An ``eval.extra_splits`` entry ``name:role=dataset`` as (name, role, dataset)."""
    head, _, dataset = (part.strip() for part in entry.partition("="))
    name, _, role = (part.strip() for part in head.partition(":"))
    roles = ", ".join(r.value for r in Role)
    if not name.isidentifier() or not dataset or not role:
        raise UserError(f"eval.extra_splits entry {entry!r} must read 'name:role=dataset' with a role among {roles}, "
                        "e.g. 'forget_qa:forget=synthetic:forget10'")
    if role not in {r.value for r in Role}:
        raise UserError(f"eval.extra_splits entry {entry!r}: unknown role '{role}'; roles: {roles}")
    if name in RESERVED_NAMES or name in PRIMARY_SPLITS:
        raise UserError(f"eval.extra_splits: split name '{name}' is already used; choose another name")
    return name, Role(role), dataset
