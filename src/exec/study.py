"""Run a study: methods × attacks × seeds from one study file, each (method, seed) a normal experiment.

    python src/exec/study.py --config_file configs/studies/robustness.json [--section.key value ...]

Overrides after the study file apply to every cell. Finished cells are skipped, so an interrupted study
is resumed by running the same command again. Results: files/results/studies/<name>/ (study.csv,
study.md, forget_vs_attack_steps.png, tradeoff.png, study.json and runs/).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.cli import guarded  # noqa: E402
from obliviate.config.loader import CONFIG_FILE_FLAGS, HELP_FLAGS  # noqa: E402
from obliviate.errors import UserError  # noqa: E402
from obliviate.study import spec  # noqa: E402
from obliviate.study.runner import run_study  # noqa: E402


def study(argv: list[str]) -> None:
    if any(flag in argv for flag in HELP_FLAGS):
        print(__doc__.strip() + "\n\nStudy file format:\n" + spec.__doc__.split("Study file (JSON", 1)[1])
        return
    if len(argv) < 2 or argv[0] not in CONFIG_FILE_FLAGS:
        raise UserError("usage: study.py --config_file <study.json> [--section.key value ...]")
    print(f"study results: {run_study(Path(argv[1]), argv[2:])}")


if __name__ == "__main__":
    sys.exit(guarded(lambda: study(sys.argv[1:])))
