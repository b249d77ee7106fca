"""The curves of a sequential unlearning run: each metric over the stages, one line per forget set and retain split.

Stage 0 is the starting model (when evaluated before), stage k the model after the k-th forget set (the last one is
the run's ``after``). A forget set's
line should drop at its own stage and stay down after it; the retain line shows what the sequence wears away.
"""

from __future__ import annotations

from pathlib import Path

from obliviate.evaluation.results import CURVE_MARK, Evaluation
from obliviate.evaluation.splits import Role, Split
from obliviate.plotting import pyplot

PLOTTED_ROLES = (Role.FORGET, Role.RETAIN)


def plot_sequence(results: dict[str, Evaluation], splits: list[Split], metrics: list[str], path: Path,
                  title: str) -> bool:
    """One panel per metric with a value on a forget or retain split at some stage; False when none has."""
    stages = [name for name in results if name == "before" or name.startswith("stage_") or name == "after"]
    lines = [split.name for split in splits if split.role in PLOTTED_ROLES and (
        split.primary or split.name.startswith("forget_stage"))]
    panels = [name for name in metrics if CURVE_MARK not in name and any(
        isinstance(results[stage].splits.get(split, {}).get(name), (int, float)) for stage in stages
        for split in lines)]
    if not panels:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    positions = list(range(len(stages)))
    for axis, name in zip(axes[0], panels):
        for colour, split in enumerate(lines):  # one colour per split in every panel
            values = [results[stage].splits.get(split, {}).get(name) for stage in stages]
            if any(isinstance(value, (int, float)) for value in values):
                axis.plot(positions, [float("nan") if value is None else value for value in values], marker="o",
                          label=split, color=f"C{colour}", linestyle="--" if split == "forget" else "-")
        axis.set(title=name, xlabel="stage")
        first = 0 if "before" in stages else 1
        axis.set_xticks(positions, [str(first + position) for position in positions])
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
