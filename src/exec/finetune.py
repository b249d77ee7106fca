"""Build an experiment's fine-tuned target and retain models (cached by content; a rerun reuses them).

    python src/exec/finetune.py --config_file configs/synthetic/npo.json [--finetune.lr 1e-4 ...]

The target model is overall.model_name fine-tuned on forget + retain data, the retain model the same
fine-tuned on retain data only (see the ``finetune`` section of ``--help``). unlearn_model.py builds them
itself when needed; this entry point prepares them ahead of time and prints where they are.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.cli import run  # noqa: E402
from obliviate.unlearner import Unlearner  # noqa: E402


def finetune(settings) -> None:
    unlearner = Unlearner(settings)
    unlearner.setup()
    for role, source in unlearner.finetune_models().items():
        print(f"{role} model: {source.name}")


if __name__ == "__main__":
    sys.exit(run(finetune, "finetune.py"))
