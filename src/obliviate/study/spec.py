"""A study file: methods × attacks × seeds, each (method, seed) cell a normal experiment with overrides.

Study file (JSON; keys starting with ``_`` are comments)::

    {
      "name": "robustness",                            # results under <results_root>/<name>/
      "results_root": "files/results/studies",         # optional (this default)
      "base_config": "configs/synthetic/npo.json",     # optional: config used by methods without their own
      "overrides": {"eval.max_examples": 20},          # dotted experiment keys, applied to every cell
      "methods": {                                      # label -> overrides ("config_file" picks its config)
        "NPO": {"config_file": "configs/synthetic/npo.json"},
        "ILU(NPO)": {"config_file": "configs/synthetic/ilu_npo.json", "unlearn.ILU.lam": 1.0}
      },
      "attacks": {                                      # label -> attack settings (keys of the attack section)
        "math": {"datasets": "synthetic:math_train", "test_datasets": "synthetic:math_test", "lr": 3e-4},
        "relearn": {"datasets": "relearn", "num_examples": 20}
      },
      "seeds": [0, 1],
      "forget_metrics": ["prob", "rouge_l_recall"],    # forget-split metrics or lm-eval tasks (wmdp_bio); first plotted
      "utility_metric": "prob"                         # on the retain split: the trade-off plot's x axis
    }

All attacks of a cell run inside its one experiment, each from the same unlearned weights (they differ
only after unlearning, so unlearning once per (method, seed) is exact, not an approximation). Keys an
attack leaves out take the cell config's value; ``attack.eval_every`` is common to all attacks (set it
in ``overrides``). Precedence inside a cell: config file < study overrides < method overrides < seed and
attacks < the study command line's own ``--section.key value`` overrides.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.config.loader import resolve_config, split_argv
from obliviate.config.schema import experiment_schema
from obliviate.config.settings import Settings
from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.io import read_json_object
from obliviate.loggers import RunFolder
from obliviate.methods import METHODS

ROOT_KEY = "logger.json.root"
STUDY_KEYS = {"name", "results_root", "base_config", "overrides", "methods", "attacks", "seeds", "forget_metrics",
              "utility_metric"}
PER_ATTACK_KEYS = ("datasets", "test_datasets", "num_examples", "max_steps", "lr", "batch_size")


@dataclass(frozen=True)
class Cell:
    """One experiment of the study: a method at a seed, with every attack."""

    method: str
    seed: int
    config_file: str
    overrides: dict[str, Any]  # dotted key -> value, applied over the config file (typed, or CLI strings)
    settings: Settings

    @property
    def folder(self) -> Path:
        """Where the finished experiment lives (the run folder its logger writes)."""
        s = self.settings
        return RunFolder.location(Path(s.logger_json.root), s.unlearn.task_name,
                                  METHODS.canonical(s.unlearn.unlearn_method), s.logger.name)

    @property
    def command(self) -> list[str]:
        """The unlearn_model.py command line that runs this cell alone."""
        return ["python", "src/exec/unlearn_model.py", "--config_file", self.config_file,
                *(part for key, value in self.overrides.items() for part in (f"--{key}", as_argument(value)))]


@dataclass(frozen=True)
class Study:
    name: str
    folder: Path
    attacks: dict[str, str]  # label -> the attack's data set name (the key in attacks.json)
    cells: list[Cell]
    forget_metrics: list[str]
    utility_metric: str


def config_key(settings: Settings) -> str:
    """8 hex digits of the hash of a cell's resolved config (its run name aside): a cell whose config
    changes (another --unlearn.lr on the study command line) gets a new folder and runs again."""
    content = {k: v for k, v in settings.to_dict().items() if k != "logger"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:8]


def slug(label: str) -> str:
    """A label as a folder name: 'ILU(NPO)' -> 'ILU_NPO'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_") or "method"


def as_argument(value: Any) -> str:
    """A JSON value as the command line writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def checked_overrides(overrides: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(overrides, dict):
        raise UserError(f"{where} must be an object of dotted experiment keys, e.g. {{\"unlearn.lr\": 1e-5}}")
    return {key: value for key, value in overrides.items() if not key.startswith("_")}


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
    methods = content["methods"]
    if not isinstance(methods, dict):
        raise UserError("study 'methods' must be an object: label -> overrides")
    if len({slug(label) for label in methods}) != len(methods):
        raise UserError("study method labels must differ in their letters and digits (they name run folders)")
    cells, attack_names = [], {}
    for label, spec in methods.items():
        spec = dict(spec or {})
        config_file = spec.pop("config_file", content.get("base_config"))
        if not config_file:
            raise UserError(f"study method '{label}' has no config_file and the study has no base_config")
        head = {**common, **checked_overrides(spec, f"study method '{label}'")}
        defaults = _resolve(str(config_file), {**head, **extra}, label)
        attack_names, attack_overrides = _attack_lists(content.get("attacks", {}), defaults)
        for seed in seeds:
            overrides = {**head, "overall.seed": seed, **attack_overrides, **extra, ROOT_KEY: str(folder / "runs")}
            key = config_key(_resolve(str(config_file), overrides, label))
            overrides["logger.name"] = f"{slug(label)}_seed{seed}_{key}"
            cell = Cell(label, seed, str(config_file), overrides, _resolve(str(config_file), overrides, label))
            if cell.settings.logger.overwrite:
                raise UserError("logger.overwrite would redo finished study cells; remove their run folders "
                                "instead and run the study again")
            cells.append(cell)
    _check_metrics(cells, forget_metrics, utility_metric)
    return Study(name, folder, attack_names, cells, forget_metrics, utility_metric)


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
