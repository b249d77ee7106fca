"""Build an experiment's fine-tuned target and retain models (cached by content; a rerun reuses them).

    python src/exec/finetune.py --config_file configs/synthetic/npo.json [--finetune.lr 1e-4 ...]

The target model is overall.model_name fine-tuned on forget + retain data, the retain model the same
fine-tuned on retain data only (see the ``finetune`` section of ``--help``). unlearn_model.py builds them
itself when needed; this entry point prepares them ahead of time and prints where they are.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator  # noqa: E402

from obliviate.cli import run  # noqa: E402
from obliviate.config.settings import Settings  # noqa: E402
from obliviate.errors import UserError  # noqa: E402
from obliviate.plan import plan  # noqa: E402


def finetune(settings: Settings) -> None:
    models = plan(settings).models
    if models.target is None:
        raise UserError("finetune.enabled is false in this experiment, so there is nothing to fine-tune; "
                        "pass --finetune.enabled true")
    accelerator = Accelerator(cpu=models.device.type == "cpu")
    for role, recipe in (("target", models.target), ("retain", models.retain)):
        print(f"{role} model: {models.build(recipe, role, accelerator).name}")


if __name__ == "__main__":
    sys.exit(run(finetune, "finetune.py"))
