"""Human-readable views of results."""

from __future__ import annotations


def metrics_table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: one row per (split, metric), one column per stage (before / after)."""
    stages = list(metrics)
    rows = []
    for split in dict.fromkeys(s for stage in stages for s in metrics[stage]):
        for metric in dict.fromkeys(m for stage in stages for m in metrics[stage].get(split, {})):
            values = [metrics[stage].get(split, {}).get(metric) for stage in stages]
            rows.append(f"| {split} | {metric} | " + " | ".join("-" if v is None else f"{v:.4g}" for v in values) + " |")
    header = "| split | metric | " + " | ".join(stages) + " |\n|---|---|" + "---|" * len(stages)
    return "\n".join([header, *rows])
