"""What another model's metrics need from the retain model's evaluation (the model never trained on the
forget set): its per-example forget truth ratios (for ``forget_quality``), its Min-K% membership AUC
(for ``privleak``) and its per-example answer probabilities on forget and holdout (the reference model
of ``mia_reference``). Computed from the retain model (and cached), or read once from a saved evaluation
run (``eval.retain_logs_path``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from obliviate.errors import UserError

PRIVLEAK_SCORE = "mia_min_k"  # MUSE's Min-40 % attack
REFERENCE_ATTACK = "mia_reference"
REFERENCE_SPLITS = ("forget", "holdout")


@dataclass(frozen=True)
class RetainReference:
    truth_ratios: list[float] | None = None
    min_k_auc: float | None = None  # forget (positive) vs holdout, as in model.mia_min_k_auc
    answer_probs: dict[str, list[float]] = field(default_factory=dict)  # split -> per-example prob

    @classmethod
    def from_evaluation(cls, metrics: dict[str, dict[str, float]],
                        per_example: dict[str, dict[str, list[float]]]) -> "RetainReference":
        return cls(per_example.get("forget", {}).get("truth_ratio"),
                   metrics.get("model", {}).get(f"{PRIVLEAK_SCORE}_auc"),
                   {split: per_example[split]["prob"] for split in REFERENCE_SPLITS
                    if "prob" in per_example.get(split, {})})

    @classmethod
    def from_run_folder(cls, folder: Path) -> "RetainReference":
        """Read an evaluate.py run of the retain model (its metrics.json and per_example.json)."""
        files = [folder / "metrics.json", folder / "per_example.json"]
        if not all(file.is_file() for file in files):
            raise UserError(f"eval.retain_logs_path '{folder}' is not a finished evaluate.py run folder (needs "
                            "metrics.json and per_example.json); run src/exec/evaluate.py on the retain model first")
        metrics, per_example = (json.loads(file.read_text()) for file in files)
        if "evaluated" not in metrics:
            raise UserError(f"eval.retain_logs_path '{folder}' holds an unlearning run, not an evaluate.py run of "
                            "the retain model")
        reference = cls.from_evaluation(metrics["evaluated"], per_example["evaluated"])
        if reference.truth_ratios is None and reference.min_k_auc is None and not reference.answer_probs:
            raise UserError(f"eval.retain_logs_path '{folder}' has neither forget truth ratios nor a "
                            f"{PRIVLEAK_SCORE} AUC; evaluate the retain model with truth_ratio and {PRIVLEAK_SCORE}")
        return reference
