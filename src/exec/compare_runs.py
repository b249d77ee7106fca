"""Compare finished runs in one table (CSV + markdown) and one plot.

    python src/exec/compare_runs.py files/results/synthetic/NPO/npo_baseline \\
        files/results/synthetic/NPO/npo_wagle_0.8 \\
        --out files/results/synthetic/comparison_npo_wagle
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.comparison import write_comparison  # noqa: E402
from obliviate.errors import UserError  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.csv, .md, .png added)")
    arguments = parser.parse_args()
    try:
        write_comparison(arguments.runs, arguments.out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {arguments.out}.csv, .md, .png")
