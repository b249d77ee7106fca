"""A study's table and plots, from its finished cells' results (:func:`~obliviate.study.results.finished_cells`).

``study.csv`` has one row per (method, seed, attack): the forget metrics before unlearning (the target
model), right after unlearning and at the end of the attack, their worst point along the attack (the
most knowledge back: the maximum, or the minimum for a metric whose declaration says that on the forget
role higher means less knowledge, such as ``forget_quality``), the share of the forgotten
amount that came back::

    recovered = (forget_attacked − forget_after) / (forget_before − forget_after)

(0 = nothing came back, 1 = back to the target model; for the first of ``forget_metrics``); with a
``control`` (the target attacked without unlearning) also the share of the gap between the unlearned model and
the equally attacked target that the attack closed::

    recovered_vs_control = (forget_attacked − forget_after) / (control_attacked − forget_after)

(1 = knows what the attacked target knows; negative when the attack lowered the metric; undefined where the
attack leaves the control with no more knowledge than the unlearned model had, and unstable when barely more),
the retain
(and holdout) utility after unlearning, the model-level metrics (e.g. ``model_utility``) before and after, the
attack task's own accuracy at its start and end, wall times and the unlearning seconds per step; for a
relearning attack on a slice, the forget metrics of the examples outside the slice (``forget_unseen``)
right after unlearning and at the attack's end.
Each row also gives the number of forget examples evaluated (``forget.n``: forget quality is a KS p-value
over them, so on a small forget set it takes few distinct values) and, for each forget metric with
per-example values, its 95 % bootstrap interval over those examples after unlearning (``…after.ci95``).
``study.md`` holds the same rows averaged over seeds (the mean and its 95 % bootstrap interval over seeds),
then the paired comparisons the study file asks for (``compare``: the per-seed difference of two methods
over their shared seeds, its mean and interval), then every row, then the wall time of each stage per cell.
With a grid, rows carry their ``setting``; with a selection rule, the first table holds each method's
selected setting (:func:`~obliviate.study.results.selected_settings`) under the rule, and the table of every
setting follows only with ``show_all_settings``. Plots: ``forget_vs_attack_steps.png`` (forget metric along
each attack, one line per method, the band spanning the seeds; below it the task's accuracy, or for
relearning on a slice the forget metric of the examples not relearned) and ``tradeoff.png`` (forget metric
vs retain utility after unlearning, with the forget value each attack brought back drawn above each point).

Table rows are dicts: column name -> value, in column order, with names built from the study's metrics and
attacks (``forget.prob.after``, ``recovered_vs_control.prob``); they become the CSV and markdown tables as they
are.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from obliviate.comparison import to_csv, to_markdown
from obliviate.evaluation import METRICS
from obliviate.evaluation.results import CURVE_MARK, LM_EVAL, MODEL
from obliviate.evaluation.session import TASK_METRIC
from obliviate.evaluation.splits import Role
from obliviate.io import write_text_atomic
from obliviate.plotting import pyplot
from obliviate.study.cells import Study
from obliviate.study.intervals import bootstrap_interval, paired_differences, paired_ratio, with_interval
from obliviate.study.results import SELECTION_START, FinishedCell, finished_cells, selected_settings


def more_knowledge_is_higher(metric: str) -> bool:
    """On the forget split, does a higher value of ``metric`` mean more knowledge? (lm-eval task accuracies,
    e.g. wmdp_bio, do.)"""
    name = metric.partition(CURVE_MARK)[0]  # a curve's point (leak_at_k@4) reads as its metric
    return METRICS.get(name).higher_means_knowledge(Role.FORGET) if name in METRICS else True


def _recovered(before: float | None, after: float | None, attacked: float | None) -> float | None:
    if None in (before, after, attacked) or before == after:
        return None
    return (attacked - after) / (before - after)


def with_control(study: Study, rows: list[dict]) -> list[dict]:
    """``rows`` with ``recovered_vs_control.<metric>`` (the first forget metric) right after each attack's
    recovered share, read against the control's cell of the same seed and attack (none without a control; the
    control's own rows have neither: it unlearned nothing)."""
    if study.control is None:
        return rows
    metric = study.forget_metrics[0]
    attacked = {(row["seed"], row["attack"]): row[f"forget.{metric}.attacked"] for row in rows
                if row["method"] == study.control}
    sign = 1 if more_knowledge_is_higher(metric) else -1
    recovered = f"recovered.{metric}"
    extended = []
    for row in rows:
        control, after = attacked.get((row["seed"], row["attack"])), row[f"forget.{metric}.after"]
        ours, is_control = row[f"forget.{metric}.attacked"], row["method"] == study.control
        defined = not is_control and None not in (control, after, ours) and sign * (control - after) > 0
        placed: dict = {}
        for name, entry in row.items():
            placed[name] = None if is_control and name == recovered else entry
            if name == recovered:
                placed[f"recovered_vs_control.{metric}"] = _recovered(control, after, ours) if defined else None
        extended.append(placed)
    return extended


def cell_rows(study: Study, cell: FinishedCell) -> list[dict]:
    """The table rows of one finished cell: one per attack (one with attack '-' without attacks)."""
    before, after = cell.metrics.get("before", {}), cell.metrics.get("after", {})
    head = {"method": cell.method, **({"setting": cell.setting} if study.has_grid else {}), "seed": cell.seed}
    utility = study.utility_metric
    common = {f"retain.{utility}.after": after.get("retain", {}).get(utility)}
    if "holdout" in after:
        common[f"holdout.{utility}.after"] = after["holdout"].get(utility)
    common.update({f"{metric}.{stage}": value for stage, source in (("before", before), ("after", after))
                   for metric, value in source.get(MODEL, {}).items()})
    seconds = cell.wall_time_seconds
    common.update({"seconds.unlearn": seconds.get("unlearn"), "seconds.attacks": seconds.get("attacks"),
                   "seconds_per_step": cell.seconds_per_step})
    # lm-eval task accuracies (e.g. wmdp_bio) count as forget metrics: attacks record them with the forget split
    forget_before = {**before.get("forget", {}), **before.get(LM_EVAL, {})}
    forget_after = {**after.get("forget", {}), **after.get(LM_EVAL, {})}
    common.update(example_intervals(study, cell))
    if not study.attacks:
        values = {f"forget.{m}.{stage}": source.get(m) for m in study.forget_metrics
                  for stage, source in (("before", forget_before), ("after", forget_after))}
        return [{**head, "attack": "-", **values, **common}]
    rows = []
    for label, dataset in study.attacks.items():
        curve = cell.attacks.get(dataset, [])
        row = {**head, "attack": label, "attack_steps": curve[-1]["step"] if curve else None}
        for m in study.forget_metrics:
            along = [point["forget"].get(m) for point in curve]
            most_known = max if more_knowledge_is_higher(m) else min
            row.update({f"forget.{m}.before": forget_before.get(m), f"forget.{m}.after": forget_after.get(m),
                        f"forget.{m}.attacked": along[-1] if along else None,
                        f"forget.{m}.worst": most_known(along) if along else None})
            unseen = [point["forget_unseen"].get(m) for point in curve if "forget_unseen" in point]
            if unseen:  # relearning on a slice: the forget examples it did not train on
                row.update({f"forget_unseen.{m}.after": unseen[0], f"forget_unseen.{m}.attacked": unseen[-1]})
        first = study.forget_metrics[0]
        row[f"recovered.{first}"] = _recovered(row[f"forget.{first}.before"], row[f"forget.{first}.after"],
                                               row[f"forget.{first}.attacked"])
        task = [point["task"][TASK_METRIC] for point in curve if "task" in point]
        row.update({f"task.{TASK_METRIC}.start": task[0] if task else None,
                    f"task.{TASK_METRIC}.end": task[-1] if task else None})
        rows.append({**row, **common})
    return rows


def example_intervals(study: Study, cell: FinishedCell) -> dict:
    """The number of forget examples, and each forget metric's 95 % bootstrap interval over them after
    unlearning ('low–high'; metrics without per-example values, such as forget quality, have none)."""
    forget = cell.per_example.get("after", {}).get("forget", {})
    counts = [len(values) for values in forget.values() if isinstance(values, list)]
    intervals: dict = {"forget.n": max(counts) if counts else None}
    for metric in study.forget_metrics:
        values = [v for v in forget.get(metric, []) if isinstance(v, (int, float))] if metric in forget else []
        if values:
            low, high = bootstrap_interval(values)
            intervals[f"forget.{metric}.after.ci95"] = f"{low:.4g}–{high:.4g}"
    return intervals


def mean_rows(rows: list[dict]) -> list[dict]:
    """Rows averaged over seeds per (method, setting, attack); 'mean [low, high]' (95 % bootstrap interval over
    seeds) when there are several seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row.get("setting"), row["attack"])].append(row)
    averaged = []
    for (method, setting, attack), members in groups.items():
        row: dict = {"method": method, **({"setting": setting} if setting is not None else {}), "attack": attack,
                     "seeds": len(members)}
        for key in members[0]:
            values = [m[key] for m in members if isinstance(m.get(key), (int, float)) and key != "seed"]
            if len(values) == len(members) and key not in row:
                row[key] = with_interval(values) if len(values) > 1 else values[0]
        averaged.append(row)
    return averaged


def selection_section(study: Study, chosen: dict[str, str | None], averaged: list[dict]) -> list[str]:
    """The study.md lines of the selected setting per method (``chosen``: :func:`selected_settings`)."""
    rows = [row for row in averaged if chosen.get(row["method"]) is not None
            and row.get("setting", "") == chosen[row["method"]]]
    lines = ["## Selected setting per method", "",
             f"Rule: {study.selection.describe(SELECTION_START)} (seed means after unlearning).", ""]
    if none := [method for method, setting in chosen.items() if setting is None]:
        lines += [f"No setting meets the rule for: {', '.join(none)}.", ""]
    return lines + [to_markdown(_columns(rows), rows) if rows else "", ""]


def paired_rows(study: Study, rows: list[dict], chosen: dict[str, str | None]) -> list[dict]:
    """For each pair (A, B) in the study's ``compare``: A − B per seed, for the first forget metric after
    unlearning, after each attack and its recovered share (also against the control, with one), and the retain
    utility; mean and 95 % interval. For the recovered shares also A's mean ÷ B's ("does A recover at most half
    of what B recovers?"), with its interval."""
    first = study.forget_metrics[0]
    keys = [f"forget.{first}.after", f"forget.{first}.attacked", f"recovered.{first}",
            *([f"recovered_vs_control.{first}"] if study.control else []), f"retain.{study.utility_metric}.after"]
    compared = []
    for a, b in study.compare:
        for attack in dict.fromkeys(row["attack"] for row in rows):
            for key in keys:
                per_seed = [{row["seed"]: row[key] for row in rows if row["method"] == method
                             and row["attack"] == attack and isinstance(row.get(key), (int, float))
                             and row.get("setting", "") == (chosen.get(method) or "")} for method in (a, b)]
                differences = paired_differences(*per_seed)
                if not differences:
                    continue
                compared.append({"comparison": f"{a} − {b}", "attack": attack, "metric": key,
                                 "seeds": len(differences), "difference": with_interval(differences),
                                 "ratio": _ratio_text(*per_seed, b) if key.startswith("recovered") else ""})
    return compared


def _ratio_text(first: dict[int, float], second: dict[int, float], second_label: str) -> str:
    """A's mean ÷ B's with its paired interval ('mean [low, high]'; the value alone from one shared seed)."""
    ratio = paired_ratio(first, second)
    if ratio is None:
        return f"undefined: {second_label} recovered ≤ 0 in a resample"
    if len(first.keys() & second.keys()) == 1:
        return f"{ratio[0]:.3g}"
    return f"{ratio[0]:.3g} [{ratio[1]:.3g}, {ratio[2]:.3g}]"


def timing_rows(cells: list[FinishedCell]) -> list[dict]:
    """One row per finished cell: its label, seed and the wall time of each stage."""
    return [{"method": c.label, "seed": c.seed, **c.wall_time_seconds} for c in cells]


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _second_panel(curves: list[list[dict]], metric: str) -> tuple[str, Callable[[dict], float]] | None:
    """What the lower panel of an attack shows: the task's accuracy, or (relearning on a slice) the forget
    metric on the examples it did not train on."""
    points = [p for curve in curves for p in curve]
    if points and all("task" in p for p in points):
        return f"task {TASK_METRIC}", lambda p: p["task"][TASK_METRIC]
    if points and all("forget_unseen" in p for p in points):
        return f"forget {metric} (not relearned)", lambda p: p["forget_unseen"][metric]
    return None


def plot_attack_curves(study: Study, cells: list[FinishedCell], path: Path) -> None:
    plt = pyplot()
    metric = study.forget_metrics[0]
    figure, axes = plt.subplots(2, len(study.attacks), figsize=(5 * len(study.attacks), 7.2), squeeze=False)
    methods = list(dict.fromkeys(c.label for c in cells))
    for column, (label, dataset) in enumerate(study.attacks.items()):
        top, bottom = axes[0][column], axes[1][column]
        lower = _second_panel([c.attacks[dataset] for c in cells if dataset in c.attacks], metric)
        for method in methods:
            curves = [c.attacks[dataset] for c in cells if c.label == method and dataset in c.attacks]
            if not curves:
                continue
            steps = [p["step"] for p in curves[0]]
            panels = [(top, lambda p: p["forget"][metric])] + ([(bottom, lower[1])] if lower else [])
            for axis, read in panels:
                values = [[read(p) for p in curve] for curve in curves]
                line, = axis.plot(steps, [statistics.fmean(v) for v in zip(*values)], marker="o", label=method)
                if len(values) > 1:
                    axis.fill_between(steps, [min(v) for v in zip(*values)], [max(v) for v in zip(*values)],
                                      color=line.get_color(), alpha=0.2)
        before = [c.metrics["before"]["forget"][metric] for c in cells if "before" in c.metrics]
        if before:
            top.axhline(statistics.fmean(before), color="grey", linestyle=":", label="before unlearning")
        top.set(title=f"attack: {label}", xlabel="attack step", ylabel=f"forget {metric}")
        top.legend(fontsize=8)
        if lower:
            bottom.set(xlabel="attack step", ylabel=lower[0])
        else:
            bottom.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_tradeoff(study: Study, rows: list[dict], path: Path) -> None:
    """Forget metric against retain utility: a circle per (method, seed) after unlearning and, joined to it, a
    marker per attack at the attack's end; colour names the method, marker shape the point (two legends)."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    metric, utility = study.forget_metrics[0], f"retain.{study.utility_metric}.after"
    figure, axis = plt.subplots(figsize=(6.5, 5))
    markers = dict(zip(study.attacks, "^sDvP*X"))
    colours: dict[str, str] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method and r.get(utility) is not None]
        if not mine:
            continue
        points = {(r["seed"], r[utility], r[f"forget.{metric}.after"]) for r in mine}
        line, = axis.plot([p[1] for p in points], [p[2] for p in points], "o")
        colours[method] = line.get_color()
        for r in mine:
            if r["attack"] in markers and r.get(f"forget.{metric}.attacked") is not None:
                axis.plot([r[utility]] * 2, [r[f"forget.{metric}.after"], r[f"forget.{metric}.attacked"]],
                          color=colours[method], alpha=0.4)
                axis.plot(r[utility], r[f"forget.{metric}.attacked"], markers[r["attack"]], color=colours[method])
    point = {"linestyle": "", "color": "grey"}
    stages = [Line2D([], [], marker="o", label="after unlearning", **point)]
    stages += [Line2D([], [], marker=shape, label=f"after the {attack} attack", **point)
               for attack, shape in markers.items()]
    befores = [r for r in rows if r.get(f"forget.{metric}.before") is not None]
    if befores:
        stages.append(axis.axhline(befores[0][f"forget.{metric}.before"], color="grey", linestyle=":",
                                   label="before unlearning"))
    methods = [Line2D([], [], marker="o", linestyle="", color=colour, label=name) for name, colour in colours.items()]
    axis.add_artist(axis.legend(handles=methods, title="method", loc="upper left", bbox_to_anchor=(1.02, 1),
                                fontsize=7))
    axis.legend(handles=stages, title="point", loc="lower left", bbox_to_anchor=(1.02, 0), fontsize=7)
    axis.set(xlabel=f"retain {study.utility_metric} after unlearning (utility, higher = better)",
             ylabel=f"forget {metric} (lower = more forgotten)", title=f"study {study.name}: forget vs utility")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def write_report(study: Study) -> None:
    """study.csv, study.md and the two plots, from whatever cells have finished."""
    cells = finished_cells(study)
    if not cells:
        return
    rows = with_control(study, [row for cell in cells for row in cell_rows(study, cell)])
    write_text_atomic(study.folder / "study.csv", to_csv(_columns(rows), rows))
    averaged, timings = mean_rows(rows), timing_rows(cells)
    chosen = selected_settings(study, cells) if study.selection is not None else {}
    lines = [f"# Study {study.name}: {len(cells)} of {len(study.cells)} cells finished", ""]
    if study.selection is not None:
        lines += selection_section(study, chosen, averaged)
    if study.selection is None or study.show_all_settings:
        lines += ["## Mean over seeds", "", to_markdown(_columns(averaged), averaged)]
    if study.compare:
        compared = paired_rows(study, rows, chosen)
        lines += ["## Paired comparisons (A − B over shared seeds, mean [95 % bootstrap interval]; ratio: A's mean "
                  "recovered share ÷ B's, defined when B's mean is positive in every resample)", "",
                  to_markdown(_columns(compared), compared) if compared else "no shared seeds finished yet", ""]
    lines += ["## Every cell", "", to_markdown(_columns(rows), rows),
              "## Wall time per stage (seconds)", "", to_markdown(_columns(timings), timings)]
    write_text_atomic(study.folder / "study.md", "\n".join(lines))
    if study.attacks:
        if study.selection is not None:  # the attack curves of each method's selected setting
            cells = [c for c in cells if chosen.get(c.method) == c.setting] or cells
        plot_attack_curves(study, cells, study.folder / "forget_vs_attack_steps.png")
    plot_tradeoff(study, rows, study.folder / "tradeoff.png")
