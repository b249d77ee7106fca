"""Human-readable views of one run's results: the metrics table printed at the end and the run's summary.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.evaluation.results import NOT_COMPUTED, Evaluation
from obliviate.evaluation.splits import Role, Split
from obliviate.io import write_text_atomic
from obliviate.layer_curves import plot_layer_curves
from obliviate.loggers import RunFolder

EXAMPLES_SHOWN = 3
EXAMPLE_ROLES = (Role.FORGET, Role.RETAIN)


@dataclass(frozen=True, kw_only=True)
class RunDescription:
    """What a run's summary says ran: its title, the model, whether it was fine-tuned first, the seed, the
    metrics and the evaluated splits."""

    title: str
    model_name: str
    finetuned: bool
    seed: int
    metrics: list[str]
    splits: list[Split]


def metrics_table(metrics: dict[str, dict]) -> str:
    """A markdown table: one row per (split, metric), one column per stage (before / after)."""
    stages = list(metrics)
    rows = []
    for split in dict.fromkeys(s for stage in stages for s in metrics[stage] if s != NOT_COMPUTED):
        for metric in dict.fromkeys(m for stage in stages for m in metrics[stage].get(split, {})):
            values = [metrics[stage].get(split, {}).get(metric) for stage in stages]
            cells = " | ".join("-" if v is None else f"{v:.4g}" for v in values)
            rows.append(f"| {split} | {metric} | {cells} |")
    header = "| split | metric | " + " | ".join(stages) + " |\n|---|---|" + "---|" * len(stages)
    return "\n".join([header, *rows])


def not_computed_lines(results: dict[str, Evaluation]) -> list[str]:
    """One line per metric that was asked for and could not be computed, with the missing input."""
    reasons: dict[str, str] = {}
    for evaluation in results.values():
        reasons.update(evaluation.not_computed)
    return [f"- `{name}`: {reason}" for name, reason in sorted(reasons.items())]


def example_lines(splits: list[Split], results: dict[str, Evaluation]) -> list[str]:
    """The first generations of each forget and retain split, stage by stage: what forgetting looks like."""
    lines = []
    for split in (s for s in splits if s.role in EXAMPLE_ROLES):
        per_stage = {stage: next(iter(e.generations.get(split.name, {}).values()), None)
                     for stage, e in results.items()}
        shown = next((texts for texts in per_stage.values() if texts), None)
        if not shown:
            continue
        lines += [f"### {split.name} ({split.role.value})", ""]
        for index, text in enumerate(shown[:EXAMPLES_SHOWN]):
            lines += [f"{index + 1}. prompt: `{_one_line(text['prompt'])}`",
                      f"   - truth: {_one_line(text['ground_truth'])}"]
            lines += [f"   - {stage}: {_one_line(texts[index]['generation'])}"
                      for stage, texts in per_stage.items() if texts and index < len(texts)]
        lines.append("")
    return lines


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def run_summary(run: RunDescription, results: dict[str, Evaluation], seconds: dict[str, float],
                warnings: list[str]) -> str:
    """The run's one-page markdown summary: what ran, what to know, every metric, examples, where the time went."""
    metrics = {stage: evaluation.metrics_record() for stage, evaluation in results.items()}
    data = [f"{split.name} ({split.role.value}, {len(split.examples)} examples)" for split in run.splits]
    missing = not_computed_lines(results)
    examples = example_lines(run.splits, results)
    lines = [f"# {run.title}", "",
             f"- model: `{run.model_name}` (fine-tuned target: {run.finetuned}), seed {run.seed}",
             f"- evaluated splits: {', '.join(data)}",
             f"- metrics: {', '.join(run.metrics)}", "",
             *(["## Warnings", "", *(f"- {line}" for line in warnings), ""] if warnings else []),
             "## Metrics", "",
             "Higher = more knowledge, except forget_quality and model.forget_quality_log10 (higher = closer to "
             "the retain model) and the truth ratio on forget/holdout (closer to 1 = cannot tell true from "
             "false). Membership AUCs: forget is the positive class; 0.5 = indistinguishable from unseen data.", "",
             metrics_table(metrics) if metrics else "(no evaluation)", "",
             *(["## Not computed", "", *missing, ""] if missing else []),
             *(["## Examples (greedy generations)", "", *examples] if examples else []),
             "## Wall time (seconds)", "",
             "| stage | seconds |", "|---|---|",
             *(f"| {stage} | {value:.1f} |" for stage, value in seconds.items()), ""]
    return "\n".join(lines)


def write_results(folder: RunFolder, run: RunDescription, results: dict[str, Evaluation], seconds: dict[str, float],
                  environment: dict[str, Any], warnings: list[str]) -> Path:
    """metrics.json (each stage's metrics, and the run's ``warnings`` when there are any), per_example.json,
    env.json, summary.md and, with white-box metrics, layer_curves.png; then the run folder is finished (renamed to
    its final name) and the metrics table printed."""
    folder.write_json("metrics.json", {**{stage: e.metrics_record() for stage, e in results.items()},
                                       **({"warnings": warnings} if warnings else {})})
    folder.write_json("per_example.json", {stage: e.per_example_record() for stage, e in results.items()})
    folder.write_json("env.json", {**environment, "wall_time_seconds": seconds})
    write_text_atomic(folder.path("summary.md"), run_summary(run, results, seconds, warnings))
    plot_layer_curves(results, folder.path("layer_curves.png"))
    finished = folder.finish()
    if results:
        print(metrics_table({stage: e.metrics_record() for stage, e in results.items()}))
    print(f"results: {finished.resolve()}")
    return finished
