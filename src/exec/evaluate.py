"""Evaluate a model without training: every split and metric of an experiment config.

    python src/exec/evaluate.py --config_file configs/synthetic/npo.json [--eval.model target|retain]
    python src/exec/evaluate.py --config_file configs/synthetic/npo.json --overall.model_name <saved model folder>

Results: files/results/<task>/evaluations/<run>/ (metrics.json, per_example.json, summary.md, env.json).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.cli import run  # noqa: E402
from obliviate.experiment import run_evaluation  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(run_evaluation, "evaluate.py"))
