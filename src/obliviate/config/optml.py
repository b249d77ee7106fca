"""Experiment files of the OPTML code line (WAGLE, SOUL, Unlearn-Simple, Unlearn-Smooth, Unlearn-ILU) as ours.

Every key of that code line's ``unlearn_model.py`` (``../shared/reference/config.md``, appendix A) is mapped
or refused with one line naming it; what cannot be expressed here is never dropped silently. A key is
dropped only where it has no effect in that code either (``unlearn.p``/``q`` only parse mask folder names;
a false ``sophia``/``use_lora``/``swa``, a null ``resume_path`` or ``perturb_dataset_name``; the sections of
methods other than the one run). Meanings that differ:

* ``gamma`` of ``GA+FT``, ``GA+KL``, ``NPO+FT`` and ``SimNPO+FT`` is the RETAIN weight there: ours is
  ``unlearn.<Method>.alpha`` (the forget weight ``gamma`` stays 1). Missing, it takes that code's default 0.
* ``NPO+FT``'s β is fixed at 0.1 in WAGLE; Unlearn-Simple/-Smooth read ``beta`` from the method section.
* ``GA+KL``'s retain term there is the cross-entropy of the current against the frozen model's distribution
  over every position; ours is KL(π_ref ‖ π_θ) over answer tokens (TOFU's form).
* ``unlearn.mu`` is ``mask.mu``; masks (``.pt``) load as they are.
* ``use_lora`` true is our ``lora`` section with their LoraConfig (r 8, α 32, dropout 0.05, q_proj and
  v_proj), merged as they merge at save.
* ``logger.name`` is the run folder's name and ``overall.logger`` the logger kind in both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from obliviate.errors import UserError
from obliviate.io import flatten

TOFU_FORGET_SIZES = {"forget01": 40, "forget05": 200, "forget10": 400}
TOFU_HOLDOUT = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
TOFU_RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
WMDP_CORPORA = {"WMDPCyber": ("cais/wmdp-corpora:cyber-forget-corpus", "cais/wmdp-corpora:cyber-retain-corpus"),
                "WMDPBio": ("cais/wmdp-bio-forget-corpus", "cais/wmdp-corpora:bio-retain-corpus")}
DOWNSTREAM = {"GSM8K": ("openai/gsm8k:main", "openai/gsm8k:main@test"),
              "SST2": ("stanfordnlp/sst2", "stanfordnlp/sst2@validation"),
              "AGNews": ("fancyzhx/ag_news", "fancyzhx/ag_news@test")}
TOFU_METRICS = ["prob", "rouge_l_recall", "truth_ratio", "mcq_acc"]
OPTML_LORA = {"lora.enabled": True, "lora.r": 8, "lora.alpha": 32.0, "lora.dropout": 0.05,  # their LoraConfig
              "lora.target_modules": ["q_proj", "v_proj"], "lora.merge": True}

# their method -> (ours, {their key: our key}, our values when their file leaves a key out)
METHODS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "GA": ("GA", {}, {}),
    "GA+FT": ("GradDiff", {"gamma": "alpha"}, {"gamma": 1.0, "alpha": 0.0}),
    "GA+KL": ("GA_KL", {"gamma": "alpha"}, {"gamma": 1.0, "alpha": 0.0}),
    "NPO+FT": ("NPO", {"gamma": "alpha", "beta": "beta"},
               {"gamma": 1.0, "alpha": 0.0, "beta": 0.1, "retain_loss": "nll"}),
    "SimNPO+FT": ("SimNPO", {"gamma": "alpha", "beta": "beta"},
                  {"gamma": 1.0, "alpha": 0.0, "delta": 0.0, "retain_loss": "nll"}),
}
REFUSED_METHODS = {
    "origin": "evaluates without training: run src/exec/evaluate.py on the model instead",
    "FT": "fine-tunes on the retain set, which is not unlearning: use finetune or an attack",
    "l1_sparse": "(retain NLL + L1 sparsity) is not a registered method",
    "KL": "(gradient ascent on a forget KL) is not a registered method",
    "CL": "(refusal answers) is not a registered method yet", "CL+FT": "is not a registered method yet",
    "CL+KL": "is not a registered method yet", "RL": "(random labels) is not a registered method yet",
    "GA+FT+SAM": "is not a registered method yet", "NPO+FT+SAM": "is not a registered method yet",
    "NPO+FT+RS": "is not a registered method", "NPO+FT+GNR": "is not a registered method",
    "NPO+FT+CR": "is not a registered method", "Relearn": "is a relearning attack here: use attack.datasets relearn",
}
DIRECT = {"overall.model_name": "overall.model_name", "overall.seed": "overall.seed",
          "overall.cache_dir": "overall.cache_dir", "unlearn.num_epochs": "unlearn.num_epochs",
          "unlearn.lr": "unlearn.lr", "unlearn.weight_decay": "unlearn.weight_decay",
          "unlearn.gradient_accumulation_steps": "unlearn.gradient_accumulation_steps",
          "unlearn.max_steps": "unlearn.max_steps", "unlearn.task_name": "unlearn.task_name",
          "unlearn.mask_path": "unlearn.mask_path", "unlearn.mu": "mask.mu", "dataset.batch_size": "dataset.batch_size",
          "logger.name": "logger.name", "logger.json.root": "logger.json.root"}
NO_EFFECT = {"unlearn.p": "only parses mask folder names", "unlearn.q": "only parses mask folder names"}
OFF_VALUES = {"unlearn.sophia": (False, 0, None), "unlearn.use_lora": (False, 0, None), "unlearn.swa": (False, 0, None),
              "unlearn.resume_path": (None, ""), "dataset.self_retain": (False, 0, None),
              "dataset.perturb_dataset_name": (None, "")}
REFUSED_WHEN_ON = {"unlearn.sophia": "SophiaG is not supported (AdamW only)",
                   "unlearn.swa": "stochastic weight averaging is not supported",
                   "unlearn.resume_path": "evaluating a saved checkpoint: run src/exec/evaluate.py "
                                          "--overall.model_name <that folder>"}


def refuse(key: str, why: str) -> UserError:
    return UserError(f"cannot import {key}: {why}")


def import_optml(content: dict[str, Any]) -> dict[str, Any]:
    """Our experiment (dotted keys) for an OPTML experiment file's content; UserError naming the first key that
    cannot be mapped."""
    theirs = flatten(content)
    ours: dict[str, Any] = {"overall.logger": "json"}
    handlers: list[Callable[[dict[str, Any], dict[str, Any]], set[str]]] = [
        _overall, _method, _datasets, _switches]
    handled = set().union(*(handler(theirs, ours) for handler in handlers))
    for key in sorted(theirs):
        if key in DIRECT:
            if theirs[key] is not None:
                ours[DIRECT[key]] = theirs[key]
        elif key not in handled and key not in NO_EFFECT:
            raise refuse(key, "no key of Obliviate means this; see the README's import table")
    return ours


def their_names(content: dict[str, Any]) -> dict[str, str]:
    """Our dotted key -> theirs, for the values copied from their file (so that an error can name their key)."""
    theirs = flatten(content)
    names = {ours: key for key, ours in DIRECT.items() if key in theirs}
    if (name := theirs.get("unlearn.unlearn_method")) in METHODS:
        method, renamed, _ = METHODS[name]
        names.update({f"unlearn.{method}.{ours}": f"unlearn.{name}.{param}" for param, ours in renamed.items()})
    return names


def _overall(theirs: dict[str, Any], ours: dict[str, Any]) -> set[str]:
    kind = theirs.get("overall.logger", "json")
    if kind != "json":
        raise refuse("overall.logger", f"'{kind}': Obliviate always writes its results; use json")
    return {"overall.logger"}


def _method(theirs: dict[str, Any], ours: dict[str, Any]) -> set[str]:
    name = theirs.get("unlearn.unlearn_method")
    if name is None:
        raise refuse("unlearn.unlearn_method", "the file names no method (their default 'origin' only evaluates)")
    if name in REFUSED_METHODS:
        raise refuse("unlearn.unlearn_method", f"'{name}' {REFUSED_METHODS[name]}")
    if name not in METHODS:
        raise refuse("unlearn.unlearn_method", f"'{name}' is not a method of the OPTML code line")
    method, renamed, values = METHODS[name]
    ours["unlearn.unlearn_method"] = method
    ours.update({f"unlearn.{method}.{key}": value for key, value in values.items()})
    handled = {"unlearn.unlearn_method"}
    sections = {key for key in theirs if re.match(r"unlearn\.[^.]+\.[^.]+$", key)} - set(DIRECT) - set(NO_EFFECT)
    for key in sections:
        section, param = key.split(".")[1:]
        if section == "sophia_params":
            handled.add(key)  # read only when sophia is on, which is refused
        elif section != name:
            handled.add(key)  # another method's section: no effect on this run
        elif param in renamed:
            ours[f"unlearn.{method}.{renamed[param]}"] = theirs[key]
            handled.add(key)
        else:
            raise refuse(key, f"{name} here has no '{param}' (its keys: {', '.join(sorted(renamed)) or 'none'})")
    return handled


def _switches(theirs: dict[str, Any], ours: dict[str, Any]) -> set[str]:
    if theirs.get("unlearn.use_lora") not in OFF_VALUES["unlearn.use_lora"]:
        ours.update(OPTML_LORA)
    handled = set()
    for key, off in OFF_VALUES.items():
        if key in theirs and theirs[key] not in off and key in REFUSED_WHEN_ON:
            raise refuse(key, REFUSED_WHEN_ON[key])
        handled.add(key)
    return handled


def _dataset(key: str, name: str) -> tuple[str, str | None]:
    """(our forget or retain data, the TOFU subset when it is one)."""
    if match := re.fullmatch(r"Tofu_(\w+)", name):
        subset = match.group(1)
        return f"locuslab/TOFU:{subset}_perturbed" if subset in TOFU_FORGET_SIZES else f"locuslab/TOFU:{subset}", subset
    if name == "wikitext":
        return "Salesforce/wikitext:wikitext-2-raw-v1", None
    refusals = {"WMDPALL": "combines the bio and cyber corpora; import WMDPBio or WMDPCyber (or use RMU's "
                           "extra_topics)",
                "SafePku": "PKU-SafeRLHF's layout (a prompt with safe and unsafe responses) is not a data layout "
                           "here; export its unsafe responses as question/answer JSON Lines",
                "HP": "is the authors' local Harry Potter file; pass its JSON Lines path",
                "C4": "is too large to load whole; export the part you use as a text JSON Lines file",
                "TruthfulQA": "has no loader in that code line either"}
    if name in refusals:
        raise refuse(key, f"'{name}' {refusals[name]}")
    raise refuse(key, f"'{name}' is not a data set name of the OPTML code line")


def _retain(name: str) -> str:
    """Our retain data for their retain name (a WMDP name means its topic's retain corpus)."""
    return WMDP_CORPORA[name][1] if name in WMDP_CORPORA else _dataset("dataset.retain_dataset_name", name)[0]


def _datasets(theirs: dict[str, Any], ours: dict[str, Any]) -> set[str]:
    forget = theirs.get("dataset.forget_dataset_name")
    if forget is None:
        raise refuse("dataset.forget_dataset_name", "the file names no forget data")
    subset = None
    if forget in WMDP_CORPORA:
        ours["dataset.forget_dataset_name"] = WMDP_CORPORA[forget][0]
        ours.update({"dataset.holdout_dataset_name": "", "dataset.real_authors_dataset_name": "",
                     "dataset.world_facts_dataset_name": "", "eval.metrics": ["prob"],
                     "eval.lm_eval_tasks": ["wmdp_cyber" if forget == "WMDPCyber" else "wmdp_bio", "mmlu"]})
    else:
        ours["dataset.forget_dataset_name"], subset = _dataset("dataset.forget_dataset_name", forget)
    retain = theirs.get("dataset.retain_dataset_name")
    ours["dataset.retain_dataset_name"] = _retain(retain) if retain else ""
    if subset in TOFU_FORGET_SIZES:
        _tofu(theirs, ours, subset)
    _forget_size(theirs, subset)
    if theirs.get("dataset.self_retain") not in OFF_VALUES["dataset.self_retain"]:
        if subset not in TOFU_RETAIN:
            raise refuse("dataset.self_retain", "the complement of the forget set is known only for TOFU forget "
                                                "splits; name the retain data")
        ours["dataset.retain_dataset_name"] = f"locuslab/TOFU:{TOFU_RETAIN[subset]}"
    if perturb := theirs.get("dataset.perturb_dataset_name"):
        if perturb not in DOWNSTREAM:
            raise refuse("dataset.perturb_dataset_name", f"'{perturb}' is not one of {', '.join(DOWNSTREAM)}")
        ours["attack.datasets"], ours["attack.test_datasets"] = [DOWNSTREAM[perturb][0]], [DOWNSTREAM[perturb][1]]
    return {"dataset.forget_dataset_name", "dataset.retain_dataset_name", "dataset.forget_ratio",
            "dataset.dataset_seed", "dataset.self_retain", "dataset.perturb_dataset_name"}


def _tofu(theirs: dict[str, Any], ours: dict[str, Any], subset: str) -> None:
    """TOFU's evaluation splits and its prompt (the TOFU code's Llama chat tags, else its ### tags)."""
    ours.update({"dataset.holdout_dataset_name": f"locuslab/TOFU:{TOFU_HOLDOUT[subset]}",
                 "dataset.real_authors_dataset_name": "locuslab/TOFU:real_authors_perturbed",
                 "dataset.world_facts_dataset_name": "locuslab/TOFU:world_facts_perturbed",
                 "eval.metrics": TOFU_METRICS, "eval.max_new_tokens": 200})
    llama = "llama" in str(theirs.get("overall.model_name", "")).lower()
    ours["dataset.question_template"] = ("[INST] {question} [/INST]" if llama
                                         else "### Question: {question}\n### Answer:")


def _forget_size(theirs: dict[str, Any], subset: str | None) -> None:
    """forget_ratio and dataset_seed subsample the forget set there; only 'all of it' is importable."""
    ratio = theirs.get("dataset.forget_ratio")
    if ratio is None or ratio == 1.0 or (subset in TOFU_FORGET_SIZES and ratio >= TOFU_FORGET_SIZES[subset]):
        return
    raise refuse("dataset.forget_ratio", f"{ratio} subsamples the forget set, which Obliviate does not; export the "
                                         "subset as a JSON Lines file and name it as the forget data")
