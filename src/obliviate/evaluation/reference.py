"""The retain model's evaluation as the reference of other models' metrics (the model never trained on the
forget set): what each metric needs from it is declared with the metric (``reference``), e.g. the
per-example forget truth ratios of ``forget_quality``, the Min-K% AUC of ``privleak``, the answer
probabilities of ``mia_reference``. It is computed from the retain model (and cached), or read once from a
saved evaluate.py run (``eval.retain_logs_path``)."""

from __future__ import annotations

import json
from pathlib import Path

from obliviate.errors import UserError
from obliviate.evaluation.declarations import Requirements
from obliviate.evaluation.results import Evaluation

EVALUATED = "evaluated"  # the stage name of an evaluate.py run


def read_reference_run(folder: Path, needs: Requirements) -> Evaluation:
    """Read an evaluate.py run of the retain model (metrics.json and per_example.json) and check that it holds
    every per-example value ``needs`` lists."""
    files = [folder / "metrics.json", folder / "per_example.json"]
    if not all(file.is_file() for file in files):
        raise UserError(f"eval.retain_logs_path '{folder}' is not a finished evaluate.py run folder (needs "
                        "metrics.json and per_example.json); run src/exec/evaluate.py on the retain model first")
    metrics, per_example = (json.loads(file.read_text()) for file in files)
    if EVALUATED not in metrics:
        raise UserError(f"eval.retain_logs_path '{folder}' holds an unlearning run, not an evaluate.py run of "
                        "the retain model")
    reference = Evaluation.from_records(metrics[EVALUATED], per_example.get(EVALUATED, {}))
    for split, names in sorted(needs.by_split.items()):
        for name in sorted(names):
            if name not in reference.per_example.get(split, {}):
                raise UserError(f"eval.retain_logs_path '{folder}' has no {name} on the {split} split, which this "
                                f"evaluation needs; evaluate the retain model with {name} on {split}")
    return reference
