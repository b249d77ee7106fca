"""Logit-difference methods: ULD and Offset unlearning. The unlearned model is a
:class:`~obliviate.models.logit_difference.LogitDifferenceModel` (target + assistant); the target's weights
never change.

* ULD (Ji et al., NeurIPS 2024, arXiv 2406.08607; seed 000; UCSB-NLP-Chang/ULD): the assistant is the
  target's first K layers (``num_layers``, 8 in the paper) with its final norm and head, plus LoRA adapters
  (the ``lora`` section's r, α, dropout and modules: r 16, α 32, dropout 0.05, all linear layers, as the
  paper). Only the assistant trains, with the REVERSED objectives (``configs/unlearn_loss/remember+uniform``):

      L = NLL_A(forget) + λ · KL(U ‖ p_A)(retain),     λ = 5

  so the assistant knows the forget set and nothing else; subtracting its logits (w < 0) removes exactly
  that knowledge. The public ``UniformLossFunc`` (``uld/model/forget_losses.py``) is KL(U ‖ p_A) averaged over
  every position of the padded batch (prompt, answer and padding; ``batchmean`` over B·T rows), and λ = 5
  (``configs/unlearn_loss/remember+uniform.yaml``) was set for that averaging: ``retain_positions all``, our
  default, averages the same way (over our batch's padded length, the longest sequence in it, where the public
  code pads every sequence to 256 tokens); ``answer`` averages over answer tokens as the engine's other terms,
  which pushes each answer token several times harder at the same λ. ``retain_divergence model_to_uniform``
  gives KL(p_A ‖ U), the form the reference notes gave. With ``augment`` (the public
  ``forget_more_retain_perturb`` data mode, ``uld/data/tofu.py``) the forget set also holds each question with
  its paraphrased answer and its paraphrased question with the answer (the public code takes two LLM-written
  paraphrase pairs per question; TOFU records carry one paraphrased question and one paraphrased answer), and
  the retain set is the LAST min(400, |forget|) retain rows plus each forget question with its first two
  perturbed (wrong) answers, to be uniform on.
  Setting: lr 1e-3 for the adapters (``uld_train.sh``), w −0.8 and τ 1e-2 (its TOFU evaluation).
* Offset unlearning (Huang et al. 2024, arXiv 2404.11045): any registered forget objective
  (``objective``, configured by its own section) is minimised on the COMBINED model's logits
  z_T + w·(z_A − z_A⁰), only the assistant's adapters training (the unofficial implementation in the ULD
  repository, ``uld/model/offsetllm.py``, does the same). Its assistant is the target's first ``num_layers``
  layers as for ULD, or another model with the target's tokenizer (``assistant``). z_A⁰ is the assistant
  with its adapters off, so the model starts as the target and NPO's S_ref is the target's. The paper
  fine-tunes a whole smaller model of the same family (Llama-2-7B for 13B); adapters on a truncated target
  are our default because that needs no second model family and no copy of any weights.

Both save ``adapter/`` (the assistant's LoRA) and ``logit_difference.json`` in the run folder; evaluate.py
loads such a folder as a model (:mod:`obliviate.models.loading`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from fastargs import Param

from obliviate.config.checkers import BoolValue, ChoiceValue, FloatValue, IntValue, StrValue
from obliviate.config.sections import Lora
from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.methods.base import METHODS, Method, ModelFacts
from obliviate.methods.entropy import MaxEntropyForget
from obliviate.methods.objective import Objective
from obliviate.methods.terms import NLL
from obliviate.models import adapters
from obliviate.models.adapters import check_target_modules
from obliviate.models.anatomy import first_layers
from obliviate.models.assembly import CombinedModel
from obliviate.models.logit_difference import LogitDifferenceModel, LogitDifferenceSpec

# Offset's objective acts on the combined logits: not another logit-difference method, and not RMU, which
# misdirects the target's own hidden states (they never change here).
NOT_OFFSET_OBJECTIVES = ("ULD", "Offset", "RMU")


RETAIN_ROWS, PERTURBED_PER_QUESTION = 400, 2  # forget_more_retain_perturb: retain_num 400, expand_qanum 2


def augmented(data: dict[str, list[Example]]) -> dict[str, list[Example]]:
    """ULD's data augmentation: paraphrases of the forget examples join the forget set; the retain set is the last
    min(400, |forget|) retain rows and two perturbed answers to each forget question (module docstring)."""
    forget = data["forget"]
    paraphrases = [Example(e.question, e.paraphrased_answer) for e in forget if e.paraphrased_answer] + \
                  [Example(e.paraphrased_question, e.answer) for e in forget if e.paraphrased_question]
    wrong = [Example(e.question, wrong) for e in forget for wrong in e.perturbed_answers[:PERTURBED_PER_QUESTION]]
    if not paraphrases and not wrong:
        raise UserError("unlearn.ULD.augment: the forget data has no paraphrased_question, paraphrased_answer or "
                        "perturbed_answer to augment with; set --unlearn.ULD.augment false")
    retain = data.get("retain", [])
    kept = retain[len(retain) - min(RETAIN_ROWS, len(forget), len(retain)):]
    return {**data, "forget": forget + paraphrases, "retain": kept + wrong}


class LogitDifferenceMethod(Method):
    """A method whose unlearned model is the target combined with a trained assistant."""

    subtracts_initial: ClassVar[bool]
    trains_target_weights = False

    def check(self, model: ModelFacts) -> None:
        """The assistant fits the target (tokenizer, or depth), and no option asks to train the target."""
        name = self.name
        if model.sharded:
            raise UserError(f"{name} combines the target with an assistant model, and overall.sharding fsdp shards "
                            "one model; its assistant is small: use --overall.sharding none (one model per process)")
        if model.masked:
            raise UserError(f"{name} trains an assistant, never the target's weights that unlearn.mask_path selects; "
                            "drop the mask")
        if model.lora.merge:
            raise UserError(f"lora.merge: {name}'s assistant shares the target's weights, so its adapter stays "
                            "separate; set --lora.merge false")
        check_target_modules(model.lora, model.parameter_names)
        if assistant := self.values.get("assistant"):
            if not model.same_tokenizer(assistant):
                raise UserError(f"unlearn.{name}.assistant '{assistant}' has a different tokenizer from the target "
                                f"'{model.model_name}'; the logits must index the same tokens: use a model of the "
                                "same family, or '' (the target's first layers)")
            return
        if self.values["num_layers"] > model.depth:
            raise UserError(f"unlearn.{name}.num_layers is {self.values['num_layers']} but the target has "
                            f"{model.depth} layers; use 1 to {model.depth}")

    def spec(self, target: str) -> LogitDifferenceSpec:
        """Everything but weights of the combined model over ``target`` (a model name or folder)."""
        def located(model: str) -> str:  # folders by absolute path, so that the spec can be read from anywhere
            return str(Path(model).resolve()) if model and Path(model).exists() else model

        return LogitDifferenceSpec(located(target), located(self.values.get("assistant", "")),
                                   self.values["num_layers"], self.values["weight"], self.values["relative_top"],
                                   self.subtracts_initial)

    def assemble(self, target: torch.nn.Module, *, name: str, lora: Lora,
                 load: Callable[[str], torch.nn.Module]) -> CombinedModel:
        """The target (frozen) combined with a fresh adapter on the assistant: the target's first layers, or the
        model named by ``assistant``."""
        spec = self.spec(name)
        target.requires_grad_(False)
        base = load(spec.assistant) if spec.assistant else first_layers(target, spec.num_layers)
        combined = LogitDifferenceModel(target, adapters.attach(base, lora), spec)
        return CombinedModel(combined, self.trained(combined))

    def trained(self, model: LogitDifferenceModel) -> torch.nn.Module:
        """What the objective is computed on: the assistant alone (ULD) or the combined model (Offset)."""
        return model


@METHODS.register("ULD")
class ULD(LogitDifferenceMethod):
    """ULD: assistant trained to know the forget set and be uniform on the retain set; logits z_T + w·m⊙z_A."""

    subtracts_initial = False
    params = {
        "num_layers": Param(IntValue(low=1), "K: the assistant is the target's first K layers + norm + head",
                            default=8),
        "weight": Param(FloatValue(), "w in z_T + w·z_A (negative: subtract the assistant)", default=-0.8),
        "relative_top": Param(FloatValue(low=0.0, high=1.0), "τ of the relative-top filter (0 = no filter)",
                              default=0.01),
        "retain_weight": Param(FloatValue(low=0.0), "λ: weight of the assistant's uniform term on retain",
                               default=5.0),
        "retain_divergence": Param(ChoiceValue(["uniform_to_model", "model_to_uniform"]), "KL(U‖p) as the "
                                   "public code, or KL(p‖U)", default="uniform_to_model"),
        "retain_positions": Param(ChoiceValue(["all", "answer"]), "the uniform term's mean: every position of the "
                                  "padded batch as the public code (λ = 5 was set for it), or answer tokens",
                                  default="all"),
        "augment": Param(BoolValue(), "add paraphrased forget QA to forget and perturbed answers to retain",
                         default=True),
    }

    @staticmethod
    def build(retain_weight: float, retain_divergence: str, retain_positions: str, **combination: object
              ) -> Objective:
        uniform = MaxEntropyForget(retain_divergence, "retain", "retain_uniform", retain_positions)
        return NLL("forget") * 1.0 + uniform * retain_weight

    def training_data(self, data: dict[str, list[Example]]) -> dict[str, list[Example]]:
        return augmented(data) if self.values["augment"] else data

    def trained(self, model: LogitDifferenceModel) -> torch.nn.Module:
        return model.assistant


@METHODS.register("Offset")
class Offset(LogitDifferenceMethod):
    """Offset unlearning: a registered forget objective on z_T + w·(z_A − z_A⁰), only the assistant training."""

    subtracts_initial = True
    params = {
        "objective": Param(ChoiceValue(lambda: [n for n in METHODS.names() if n not in NOT_OFFSET_OBJECTIVES]),
                           "the forget objective (its own section unlearn.<name> configures it)", default="NPO"),
        "assistant": Param(StrValue(), "'' = the target's first num_layers layers; else a model (embedded name, "
                           "folder or hub id) with the target's tokenizer", default=""),
        "num_layers": Param(IntValue(low=1), "layers of the target kept in the assistant (when assistant is '')",
                            default=8),
        "weight": Param(FloatValue(), "w in z_T + w·(z_A − z_A⁰)", default=1.0),
        "relative_top": Param(FloatValue(low=0.0, high=1.0), "τ of the relative-top filter (0 = none, the paper)",
                              default=0.0),
    }

    @staticmethod
    def build(base: Objective, **combination: object) -> Objective:
        return base

    @property
    def base(self) -> Method:
        """The forget objective's method, configured by its own section."""
        return self.resolve(self.values["objective"])

    def objective(self) -> Objective:
        return self.base.objective()

    def sections(self) -> set[str]:
        return {self.name} | self.base.sections()

    def check(self, model: ModelFacts) -> None:
        super().check(model)
        self.base.check(model)

    def datasets(self) -> dict[str, str]:
        return self.base.datasets()

    def training_data(self, data: dict[str, list[Example]]) -> dict[str, list[Example]]:
        return self.base.training_data(data)
