"""A study file: methods × settings × attacks × seeds, each (method, setting, seed) cell a normal experiment.

Study file (JSON; keys starting with ``_`` are comments)::

    {
      "name": "robustness",                            # results under <results_root>/<name>/
      "results_root": "files/results/studies",         # optional (this default)
      "base_config": "configs/synthetic/npo.json",     # optional: config used by methods without their own
      "overrides": {"eval.max_examples": 20},          # dotted experiment keys, applied to every cell
      "methods": {                                      # label -> overrides ("config_file" picks its config)
        "NPO": {"config_file": "configs/synthetic/npo.json", "unlearn.lr": [1e-5, 3e-5, 1e-4]},
        "ILU(NPO)": {"config_file": "configs/synthetic/ilu_npo.json", "unlearn.ILU.lam": 1.0}
      },
      "selection": {"metric": "forget.forget_quality", "goal": "max",   # optional: one setting per method
                    "constraint": "model.model_utility>=0.95"},
      "selected_in": "configs/studies/selection.json", # optional: methods take the setting chosen there
      "show_all_settings": false,                      # optional: the table of every setting too
      "compare": [["ILU(NPO)", "NPO"]],                # optional: paired differences over the shared seeds
      "control": "Target",                             # optional: a method left unlearned, attacked like the rest
      "attacks": {                                      # label -> attack settings (keys of the attack section)
        "math": {"datasets": "synthetic:math_train", "test_datasets": "synthetic:math_test", "lr": 3e-4},
        "relearn": {"datasets": "relearn", "num_examples": 20}
      },
      "seeds": [0, 1],
      "forget_metrics": ["prob", "rouge_l_recall"],    # forget-split metrics or lm-eval tasks (wmdp_bio); first plotted
      "utility_metric": "prob"                         # on the retain split: the trade-off plot's x axis
    }

Grids: a method override whose value is a list, for a key that takes one value (or a list of lists, for a key
that takes a list, such as ``unlearn.RMU.trained_layers``), is a grid axis; a method's settings are the
Cartesian product of its axes, each a normal cell, cached and resumable like any other. ``selection`` picks
one setting per method by :class:`~obliviate.evaluation.during_training.BestRule` on the seed-mean of each
setting's metrics after unlearning (``<split>.<metric>``, ``model.<metric>`` for model-level metrics such as
model_utility): ``goal`` max or min, or ``closest`` with ``value`` (matched forgetting); ``constraint``
bounds a metric relative to the target model before unlearning (``model.model_utility>=0.95``: utility
within 5 % of the target's). The rule is written in the table.

Selection in a cheaper study first: ``selected_in`` names another study file with a grid and a ``selection``
rule (typically one seed, no attacks). Each method of this study that is also a method there takes the
setting the rule chose there (its grid values are added to the method's overrides); every cell of those
methods there must have finished (run that study first, as its file defines it), or this one stops in one
line before its first cell.

The control for recovery: an attack can lower the forget metric of any model (a fine-tune on short
classification answers lowers the probability of every short answer), so "how much came back" is also read
against the target attacked the same way. ``control`` names a method of the study that does not unlearn: a
method that trains the model's own weights, with ``unlearn.lr`` 0 and ``unlearn.max_steps`` 1 (one step
that changes no weight; e.g. ``"Target": {"config_file": "configs/synthetic/npo.json", "unlearn.lr": 0,
"unlearn.max_steps": 1}``); its cells run the same attacks on the same seeds, and the table adds, per (seed,
attack), ``recovered_vs_control = (attacked − after) / (control attacked − after)``: the share of the gap
between the unlearned model and the equally attacked target that the attack closed (1 = knows what the
attacked target knows; still negative when the attack lowered the unlearned model's metric).

All attacks of a cell run inside its one experiment, each from the same unlearned weights (they differ
only after unlearning, so unlearning once per (method, seed) is exact, not an approximation). Keys an
attack leaves out take the cell config's value; ``attack.eval_every`` is common to all attacks (set it
in ``overrides``). Precedence inside a cell: config file < study overrides < method overrides < seed and
attacks < the study command line's own ``--section.key value`` overrides.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

from obliviate.config.checkers import ListValue, folder_name_problem
from obliviate.config.loader import dotted_params, resolve_config, split_argv
from obliviate.config.settings import Settings
from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.evaluation.during_training import BestRule, constraint_metric
from obliviate.experiment import experiment_schema
from obliviate.io import read_json_object
from obliviate.methods import METHODS
from obliviate.study.cells import Cell, Study, as_argument
from obliviate.study.results import SELECTION_START, finished_cells, selected_settings

ROOT_KEY = "logger.json.root"
STUDY_KEYS = {"name", "results_root", "base_config", "overrides", "methods", "attacks", "seeds", "forget_metrics",
              "utility_metric", "selection", "show_all_settings", "compare", "selected_in", "control"}
SELECTION_KEYS = {"metric", "goal", "constraint", "value"}
PER_ATTACK_KEYS = ("datasets", "test_datasets", "num_examples", "max_steps", "lr", "batch_size")


def config_key(settings: Settings) -> str:
    """8 hex digits of the hash of a cell's resolved config (its run name aside): a cell whose config
    changes (another --unlearn.lr on the study command line) gets a new folder and runs again."""
    content = {k: v for k, v in settings.to_dict().items() if k != "logger"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:8]


def slug(label: str) -> str:
    """A label as a folder name: 'ILU(NPO)' -> 'ILU_NPO'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_") or "method"


def checked_overrides(overrides: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(overrides, dict):
        raise UserError(f"{where} must be an object of dotted experiment keys, e.g. {{\"unlearn.lr\": 1e-5}}")
    return {key: value for key, value in overrides.items() if not key.startswith("_")}


def grid_axes(overrides: dict[str, Any], where: str) -> dict[str, list]:
    """The grid axes among ``overrides``: a list for a key that takes one value, a list of lists for a key that
    takes a list (unknown keys are left to the config check, which names them)."""
    params = dotted_params(experiment_schema())
    axes = {}
    for key, value in overrides.items():
        if key not in params or not isinstance(value, list):
            continue
        if isinstance(params[key].checker, ListValue) and not (value and all(isinstance(v, list) for v in value)):
            continue  # one list value of a list key
        if not value:
            raise UserError(f"{where}: the grid of '{key}' is an empty list; give it at least one value")
        axes[key] = value
    return axes


def grid_settings(overrides: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """Each setting of the grid in ``overrides``: its label and its grid values (one, unlabelled and empty,
    without a grid)."""
    axes = grid_axes(overrides, where)
    settings = []
    for values in itertools.product(*axes.values()):
        chosen = dict(zip(axes, values))
        settings.append((", ".join(f"{key}={as_argument(value)}" for key, value in chosen.items()), chosen))
    return settings


def selected_grid_values(where: Any, labels: list[str]) -> dict[str, dict[str, Any]]:
    """For each of ``labels`` that is a method of the study file ``where``: the grid values of the setting that
    study's rule selected, once every cell of that method there has finished."""
    if not isinstance(where, str) or not Path(where).is_file():
        raise UserError(f"study 'selected_in' must name an existing study file with a 'selection' rule, not "
                        f"{where!r}; fix the path")
    content = _read(Path(where))
    if not content.get("selection"):
        raise UserError(f"study 'selected_in' names {where}, which has no 'selection' rule; add one there")
    if "selected_in" in content:
        raise UserError(f"study 'selected_in' names {where}, which takes its own settings from another study; "
                        "name the study whose grid made the selection")
    stage = load_study(Path(where), [])
    shared = [label for label in labels if label in {cell.method for cell in stage.cells}]
    if unfinished := sorted({c.method for c in stage.cells if c.method in shared and not c.folder.is_dir()}):
        raise UserError(f"study 'selected_in': {where} has unfinished cells of {', '.join(unfinished)}; run it first "
                        f"(as its file defines it): python src/exec/study.py --config_file {where}")
    chosen = selected_settings(stage, finished_cells(stage))
    if missing := [label for label in shared if chosen.get(label) is None]:
        raise UserError(f"study 'selected_in': in {where} no setting of {', '.join(missing)} meets the rule "
                        f"({stage.selection.describe(SELECTION_START)}); widen its grid or relax the rule")
    grids = {(cell.method, cell.setting): cell.grid for cell in stage.cells}
    return {label: grids[(label, chosen[label])] for label in shared}


def selection_rule(spec: Any) -> BestRule | None:
    """The study's ``selection``, checked for its form (the metrics are checked against the cells later)."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec.get("metric"):
        raise UserError("study 'selection' must be an object with 'metric' (<split>.<metric>), 'goal' (max, min "
                        "or closest), and optionally 'constraint' and 'value'")
    if unknown := sorted(set(spec) - SELECTION_KEYS - {k for k in spec if k.startswith("_")}):
        raise UserError(f"study 'selection' has unknown key '{unknown[0]}'; its keys are "
                        f"{', '.join(sorted(SELECTION_KEYS))}")
    goal = spec.get("goal", "max")
    if goal not in ("max", "min", "closest"):
        raise UserError(f"study 'selection' goal '{goal}' is not max, min or closest")
    if (goal == "closest") != ("value" in spec) or not isinstance(spec.get("value", 0.0), (int, float)):
        raise UserError("study 'selection': goal 'closest' needs a numeric 'value' (the metric to match), and "
                        "only it takes one")
    constraint = str(spec.get("constraint", ""))
    constraint_metric(constraint, "study 'selection' constraint")
    return BestRule(str(spec["metric"]), goal, constraint, float(spec.get("value", 0.0)))


def _read(path: Path) -> dict[str, Any]:
    content = read_json_object(path, "study file", "pass an existing JSON file to --config_file")
    content = {k: v for k, v in content.items() if not k.startswith("_")}
    for key in content:
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(key, sorted(STUDY_KEYS), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(STUDY_KEYS))}"
            raise UserError(f"unknown key '{key}' in study file '{path}'; {hint}")
    for key in ("name", "methods"):
        if not content.get(key):
            raise UserError(f"study file '{path}' needs '{key}'")
    return content


def _attack_lists(attacks: dict[str, dict], defaults: Settings) -> tuple[dict[str, str], dict[str, list]]:
    """The attack section's per-attack lists as overrides; and each attack label's data set name."""
    if not isinstance(attacks, dict):
        raise UserError("study 'attacks' must be an object: label -> attack settings")
    columns: dict[str, list] = {key: [] for key in PER_ATTACK_KEYS}
    names = {}
    for label, spec in attacks.items():
        if not isinstance(spec, dict) or not spec.get("datasets"):
            raise UserError(f"study attack '{label}' needs 'datasets' (a data set name or 'relearn')")
        if unknown := sorted(set(spec) - set(PER_ATTACK_KEYS)):
            raise UserError(f"study attack '{label}' has unknown key '{unknown[0]}'; per-attack keys are "
                            f"{', '.join(PER_ATTACK_KEYS)} (attack.eval_every goes in 'overrides')")
        names[label] = str(spec["datasets"])
        for key in PER_ATTACK_KEYS:
            default = defaults[f"attack.{key}"][0] if defaults[f"attack.{key}"] else ""
            columns[key].append(spec.get(key, default))
    if not names:
        return {}, {}
    return names, {f"attack.{key}": values for key, values in columns.items()}


def load_study(path: Path, extra_argv: list[str]) -> Study:
    """Read and check the study file and every cell's experiment config (no long work); ``extra_argv`` holds
    the study command line's own ``--section.key value`` overrides."""
    content = _read(path)
    extra = command_line_overrides(extra_argv)
    name = slug(str(content["name"]))
    folder = Path(content.get("results_root", "files/results/studies")) / name
    seeds = content.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise UserError(f"study 'seeds' must be a non-empty list of non-negative integers, not {seeds!r}")
    if repeated := sorted({seed for seed in seeds if seeds.count(seed) > 1}):
        raise UserError(f"study 'seeds' repeats {repeated}; each seed is one independent run, list it once")
    if ROOT_KEY in extra:
        raise UserError(f"{ROOT_KEY} is set by the study (its cells live in <results_root>/<name>/runs); set "
                        "'results_root' in the study file instead")
    forget_metrics = content.get("forget_metrics", ["prob", "rouge_l_recall"])
    utility_metric = content.get("utility_metric", "prob")
    METRICS.get(utility_metric)  # unknown names fail here, listing the valid ones
    common = checked_overrides(content.get("overrides", {}), "study 'overrides'")
    selection = selection_rule(content.get("selection"))
    methods = content["methods"]
    if not isinstance(methods, dict):
        raise UserError("study 'methods' must be an object: label -> overrides")
    selected = selected_grid_values(content["selected_in"], list(methods)) if "selected_in" in content else {}
    if len({slug(label) for label in methods}) != len(methods):
        raise UserError("study method labels must differ in their letters and digits (they name run folders)")
    for label in methods:
        if problem := folder_name_problem(slug(label)) or (len(label) > 60 and "is longer than 60 characters"):
            raise UserError(f"study method label {label!r} names its run folders and {problem}; give a short name "
                            "such as NPO or ILU(NPO)")
    cells, attack_names = [], {}
    for label, spec in methods.items():
        spec = dict(spec or {})
        config_file = spec.pop("config_file", content.get("base_config"))
        if not config_file:
            raise UserError(f"study method '{label}' has no config_file and the study has no base_config")
        method_overrides = checked_overrides(spec, f"study method '{label}'")
        if clash := sorted(set(method_overrides) & set(selected.get(label, {}))):
            raise UserError(f"study method '{label}' sets {clash[0]} and also takes it from the setting selected in "
                            f"{content['selected_in']}; remove it from one of them")
        method_overrides.update(selected.get(label, {}))
        for setting, chosen in grid_settings(method_overrides, f"study method '{label}'"):
            head = {**common, **method_overrides, **chosen}
            defaults = _resolve(str(config_file), {**head, **extra}, label)
            attack_names, attack_overrides = _attack_lists(content.get("attacks", {}), defaults)
            for seed in seeds:
                overrides = {**head, "overall.seed": seed, **attack_overrides, **extra,
                             ROOT_KEY: str(folder / "runs")}
                key = config_key(_resolve(str(config_file), overrides, label))
                overrides["logger.name"] = f"{slug(label)}_seed{seed}_{key}"
                cell = Cell(method=label, setting=setting, seed=seed, config_file=str(config_file),
                            overrides=overrides, settings=_resolve(str(config_file), overrides, label), grid=chosen)
                if cell.settings.logger.overwrite:
                    raise UserError("logger.overwrite would redo finished study cells; remove their run folders "
                                    "instead and run the study again")
                cells.append(cell)
    _check_metrics(cells, forget_metrics, utility_metric)
    compare = _comparisons(content.get("compare", []), list(methods), bool(selection), cells)
    control = _control(content.get("control"), cells, bool(attack_names))
    return Study(name=name, folder=folder, attacks=attack_names, cells=cells, forget_metrics=forget_metrics,
                 utility_metric=utility_metric, selection=selection,
                 show_all_settings=bool(content.get("show_all_settings", False)), compare=compare, control=control)


def _control(label: Any, cells: list[Cell], attacked: bool) -> str | None:
    """The study's ``control``: a method with one setting that leaves the target as it is (``unlearn.lr`` 0, one
    step, the model's own weights trained: a logit-difference method at lr 0 is the target plus its assistant)."""
    if label is None:
        return None
    labels = list(dict.fromkeys(cell.method for cell in cells))
    if label not in labels:
        raise UserError(f"study 'control' names {label!r}, which is not a method of the study; use one of "
                        f"{', '.join(labels)}")
    if not attacked:
        raise UserError("study 'control' is the target attacked without unlearning; add 'attacks' to the study")
    mine = [cell for cell in cells if cell.method == label]
    if len({cell.setting for cell in mine}) > 1:
        raise UserError(f"study 'control' method '{label}' has a grid; give it one setting")
    unlearn = mine[0].settings.unlearn
    if not METHODS.get(unlearn.unlearn_method).trains_target_weights:
        raise UserError(f"study 'control' method '{label}' is {unlearn.unlearn_method}, whose output is not the "
                        "target's even untrained; use one that trains the weights, e.g. configs/synthetic/npo.json")
    if unlearn.lr or unlearn.max_steps != 1:
        raise UserError(f"study 'control' method '{label}' unlearns (unlearn.lr {unlearn.lr:g}, unlearn.max_steps "
                        f"{unlearn.max_steps}, after the study command line's overrides); the control is the target "
                        "attacked without unlearning: give it \"unlearn.lr\": 0 and \"unlearn.max_steps\": 1")
    return label


def _comparisons(pairs: Any, labels: list[str], selected: bool, cells: list[Cell]) -> tuple[tuple[str, str], ...]:
    """The study's ``compare`` pairs, each two method labels of the study that have one setting (or a selection)."""
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise UserError("study 'compare' must be a list of [method, method] pairs, e.g. [[\"ILU(NPO)\", \"NPO\"]]")
    for pair in pairs:
        for label in pair:
            if label not in labels:
                raise UserError(f"study 'compare' names '{label}', which is not a method of the study; use one of "
                                f"{', '.join(labels)}")
            if not selected and len({c.setting for c in cells if c.method == label}) > 1:
                raise UserError(f"study 'compare' names '{label}', which has a grid; add a 'selection' rule so one "
                                "setting per method is compared")
    return tuple((str(a), str(b)) for a, b in pairs)


def command_line_overrides(argv: list[str]) -> dict[str, str]:
    """The study command line's ``--section.key value`` overrides (no config files there)."""
    files, overrides, _ = split_argv(argv, experiment_schema())
    if files:
        raise UserError("the study file is the only --config_file of study.py; put experiment config files in the "
                        "study's methods (config_file)")
    return overrides


def _resolve(config_file: str, overrides: dict[str, Any], label: str) -> Settings:
    try:
        return resolve_config([config_file], overrides, experiment_schema())
    except UserError as error:
        raise UserError(f"study method '{label}': {error}") from None


def _check_metrics(cells: list[Cell], forget_metrics: list[str], utility_metric: str) -> None:
    for cell in cells:
        computed = set(cell.settings.eval.metrics) | set(cell.settings.eval.lm_eval_tasks)
        if missing := [m for m in dict.fromkeys([*forget_metrics, utility_metric]) if m not in computed]:
            raise UserError(f"study reports {missing[0]} but method '{cell.method}' does not compute it; add it to "
                            "eval.metrics (e.g. in the study's overrides) or change forget_metrics/utility_metric")

