"""Compare finished runs: one row per run (after-unlearning metrics per split, wall time), as CSV,
markdown and a bar chart of the forget and retain metrics that are fractions and whose declarations say
higher = more knowledge on both roles."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.evaluation.reference import EVALUATED
from obliviate.evaluation.results import NOT_COMPUTED
from obliviate.evaluation.splits import Role
from obliviate.io import write_text_atomic
from obliviate.plotting import pyplot

PLOTTED_SPLITS = {"forget": Role.FORGET, "retain": Role.RETAIN}


def plotted_columns(rows: list[dict]) -> list[str]:
    """``<split>.<metric>`` columns of the forget and retain splits whose metric means more knowledge when
    higher on both roles and whose values are all fractions (one 0–1 axis)."""
    columns = []
    for split in PLOTTED_SPLITS:
        for name in METRICS.names():
            column = f"{split}.{name}"
            values = [row[column] for row in rows if isinstance(row.get(column), (int, float))]
            if values and all(0.0 <= v <= 1.0 for v in values) and all(
                    METRICS.get(name).higher_means_knowledge(r) for r in PLOTTED_SPLITS.values()):
                columns.append(column)
    return columns


def load_run(folder: Path) -> dict:
    """A run's label, its metrics (after unlearning, or of an evaluate.py run) and its wall times."""
    files = {name: folder / f"{name}.json" for name in ("config", "metrics", "env")}
    if missing := [str(path) for path in files.values() if not path.is_file()]:
        raise UserError(f"'{folder}' is not a finished run folder (missing {', '.join(missing)})")
    config, metrics, env = (json.loads(path.read_text()) for path in files.values())
    if EVALUATED in metrics:  # evaluate.py: one model, no training
        label = f"{config['eval']['model']}: {config['overall']['model_name']}"
    else:
        mask = config["unlearn"].get("mask_path") or ""
        label = config["unlearn"]["unlearn_method"] + (f" + mask {Path(mask).stem}" if mask else "")
    row = {"run": folder.name, "label": label}
    for split, values in metrics.get("after", metrics.get(EVALUATED, {})).items():
        if split == NOT_COMPUTED:
            continue
        row.update({f"{split}.{metric}": value for metric, value in values.items()})
    row.update({f"seconds.{stage}": value for stage, value in env["wall_time_seconds"].items()})
    return row


def comparison_rows(folders: list[Path]) -> tuple[list[str], list[dict]]:
    rows = [load_run(folder) for folder in folders]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return columns, rows


def to_csv(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(columns: list[str], rows: list[dict]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value if value is not None else "-")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    metrics = plotted_columns(rows)
    figure, axis = plt.subplots(figsize=(max(8, len(metrics) * 1.2), 4.5))
    width = 0.8 / len(rows)
    for position, row in enumerate(rows):
        axis.bar([i + position * width for i in range(len(metrics))], [row.get(m, 0.0) for m in metrics], width,
                 label=f"{row['label']} ({row.get('seconds.unlearn', 0):.0f} s unlearning)")
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(metrics))], metrics, rotation=30, ha="right")
    axis.set(ylabel="value after unlearning", ylim=(0, 1),
             title="forget (lower = more forgotten) vs retain (higher = kept)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_comparison(folders: list[Path], out: Path) -> None:
    """``out``.csv, ``out``.md and ``out``.png."""
    columns, rows = comparison_rows(folders)
    write_text_atomic(out.with_suffix(".csv"), to_csv(columns, rows))
    write_text_atomic(out.with_suffix(".md"), to_markdown(columns, rows))
    plot(rows, out.with_suffix(".png"))
