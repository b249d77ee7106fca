"""Run one unlearning experiment.

    python src/exec/unlearn_model.py --config_file configs/synthetic/npo.json [--section.key value ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.cli import run  # noqa: E402
from obliviate.experiment import run_unlearning  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(run_unlearning, "unlearn_model.py"))
