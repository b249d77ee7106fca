"""Human-readable views of results."""

from __future__ import annotations

from obliviate.config.settings import Settings


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


def run_summary(title: str, settings: Settings, metrics: dict[str, dict[str, dict[str, float]]],
                seconds: dict[str, float]) -> str:
    """The run's one-page markdown summary: what ran, every metric, and where the time went."""
    s = settings
    data = [f"{split}: `{name}`" for split, name in (
        ("forget", s.dataset.forget_dataset_name), ("retain", s.dataset.retain_dataset_name),
        ("holdout", s.dataset.holdout_dataset_name), ("real_authors", s.dataset.real_authors_dataset_name),
        ("world_facts", s.dataset.world_facts_dataset_name)) if name]
    lines = [f"# {title}", "",
             f"- model: `{s.overall.model_name}` (fine-tuned target: {s.finetune.enabled}), seed {s.overall.seed}",
             f"- data: {', '.join(data)}",
             f"- metrics: {', '.join(s.eval.metrics)} (at most {s.eval.max_examples or 'all'} examples per split)", "",
             "## Metrics", "",
             "Higher = more knowledge, except forget_quality and model.forget_quality_log10 (higher = closer to "
             "the retain model) and the truth ratio on forget/holdout (closer to 1 = cannot tell true from "
             "false). Membership AUCs: forget is the positive class; 0.5 = indistinguishable from unseen data.", "",
             metrics_table(metrics) if metrics else "(no evaluation)", "",
             "## Wall time (seconds)", "",
             "| stage | seconds |", "|---|---|", *(f"| {stage} | {value:.1f} |" for stage, value in seconds.items()), ""]
    return "\n".join(lines)
