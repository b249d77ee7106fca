"""Run a study: methods × attacks × seeds from one study file, each (method, seed) a normal experiment.

    python src/exec/study.py --config_file configs/studies/robustness.json [--section.key value ...]

Overrides after the study file apply to every cell. Finished cells are skipped, so an interrupted study
is resumed by running the same command again. Results: files/results/studies/<name>/ (study.csv,
study.md, forget_vs_attack_steps.png, tradeoff.png, study.json and runs/).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.cli import USER_ERROR_EXIT, configure_process  # noqa: E402
from obliviate.config.loader import CONFIG_FILE_FLAGS, HELP_FLAGS  # noqa: E402
from obliviate.errors import UserError  # noqa: E402
from obliviate.study import spec  # noqa: E402
from obliviate.study.runner import run_study  # noqa: E402


def main(argv: list[str]) -> int:
    configure_process()
    if any(flag in argv for flag in HELP_FLAGS):
        print(__doc__.strip() + "\n\nStudy file format:\n" + spec.__doc__.split("Study file (JSON", 1)[1])
        return 0
    try:
        if len(argv) < 2 or argv[0] not in CONFIG_FILE_FLAGS:
            raise UserError("usage: study.py --config_file <study.json> [--section.key value ...]")
        folder = run_study(Path(argv[1]), argv[2:])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    print(f"study results: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
