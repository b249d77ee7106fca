"""Every config section and key, with type, default and description.

Section and key names follow the OPTML code line (WAGLE, SimNPO, ILU) where it has them
(``overall.model_name``, ``unlearn.unlearn_method``, ``unlearn.lr``, ``dataset.forget_dataset_name``,
``logger.name`` ...); method hyper-parameters live in ``unlearn.<Method>`` sections built from the
method registry.
"""

from __future__ import annotations

from fastargs import Param

from obliviate.config.checkers import BoolValue, ChoiceValue, FloatValue, IntValue, ListValue, StrValue
from obliviate.config.loader import Schema, SectionSpec
from obliviate.evaluation import METRICS
from obliviate.evaluation.metrics import DEFAULT_METRICS
from obliviate.loggers import LOGGERS
from obliviate.masks.scores import MASK_SCORES
from obliviate.methods import METHODS


def training_params(lr: float, num_epochs: int, warmup_ratio: float) -> dict[str, Param]:
    """The optimisation keys shared by unlearning and fine-tuning sections."""
    return {
        "lr": Param(FloatValue(low=0.0), "peak learning rate (AdamW)", default=lr),
        "num_epochs": Param(IntValue(low=1), "passes over the primary data (ignored when max_steps > 0)",
                            default=num_epochs),
        "max_steps": Param(IntValue(low=-1), "optimiser steps; <= 0 means num_epochs passes", default=-1),
        "gradient_accumulation_steps": Param(IntValue(low=1), "micro-batches per optimiser step", default=1),
        "weight_decay": Param(FloatValue(low=0.0), "AdamW decoupled weight decay (not on biases/norms)",
                              default=0.0),
        "warmup_ratio": Param(FloatValue(low=0.0, high=1.0), "fraction of steps with linear warm-up",
                              default=warmup_ratio),
        "lr_scheduler": Param(ChoiceValue(["constant", "linear", "cosine"]), "decay after warm-up",
                              default="linear"),
        "max_grad_norm": Param(FloatValue(low=0.0), "gradient clipping norm (0 disables)", default=1.0),
        "logging_steps": Param(IntValue(low=1), "write train_log.jsonl every k optimiser steps", default=1),
    }


def method_sections() -> Schema:
    return {
        f"unlearn.{name}": SectionSpec(f"{name} hyper-parameters ({method.__doc__.splitlines()[0]})",
                                       dict(method.params))
        for name, method in METHODS if method.params
    }


def experiment_schema() -> Schema:
    """The schema of an unlearning experiment (also used by finetune.py)."""
    return {
        "overall": SectionSpec("Model, seed and machine", {
            "model_name": Param(StrValue(), "embedded name (smollm2-135m-instruct, tiny-random-llama), "
                                "a local model folder or a hub id", default="smollm2-135m-instruct"),
            "seed": Param(IntValue(low=0), "seed of every random choice (same seed, same result on CPU)",
                          default=0),
            "device": Param(ChoiceValue(["auto", "cpu", "cuda", "mps"]), "auto = cuda if available, else cpu",
                            default="auto"),
            "dtype": Param(ChoiceValue(["auto", "float32", "bfloat16", "float16"]),
                           "weights dtype; auto = bfloat16 on CUDA, float32 on CPU", default="auto"),
            "cache_dir": Param(StrValue(), "prepared models, fine-tuned targets and cached evaluations",
                               default="files/cache"),
        }),
        "unlearn": SectionSpec("Unlearning run", {
            "unlearn_method": Param(ChoiceValue(METHODS.names()), "registered method (case-insensitive)",
                                    default="NPO"),
            "task_name": Param(StrValue(), "benchmark name: results go to files/results/<task_name>/<method>/",
                               default="synthetic"),
            **training_params(lr=1e-5, num_epochs=1, warmup_ratio=0.0),
            "save_model": Param(BoolValue(), "save the unlearned model in the run folder", default=False),
            "mask_path": Param(StrValue(), "weight mask (.safetensors, or WAGLE .pt): loaded if it exists, else built "
                               "from the mask section and saved there; empty for no mask", default=""),
        }),
        **method_sections(),
        "dataset": SectionSpec("Forget, retain, holdout and real-world knowledge data", {
            "forget_dataset_name": Param(StrValue(), "synthetic:<split>, a .json/.jsonl file or a hub id "
                                         "owner/name[:config][@split]", default="synthetic:forget10"),
            "retain_dataset_name": Param(StrValue(), "same forms; empty for none", default="synthetic:retain90"),
            "holdout_dataset_name": Param(StrValue(), "never-trained data evaluated as 'holdout'; empty for none",
                                          default="synthetic:holdout10"),
            "real_authors_dataset_name": Param(StrValue(), "real-world knowledge evaluated as 'real_authors' "
                                               "(TOFU utility; e.g. locuslab/TOFU:real_authors_perturbed); empty "
                                               "for none", default="synthetic:real_authors"),
            "world_facts_dataset_name": Param(StrValue(), "real-world knowledge evaluated as 'world_facts' "
                                              "(TOFU utility); empty for none", default="synthetic:world_facts"),
            "batch_size": Param(IntValue(low=1), "unlearning micro-batch size (each of forget and retain)",
                                default=4),
            "max_length": Param(IntValue(low=8), "tokens per example (prompt + answer), truncated",
                                default=128),
            "question_template": Param(StrValue(), "prompt made from a question; must contain {question}",
                                       default="Question: {question}\nAnswer:"),
            "chat_template": Param(BoolValue(), "use the tokenizer's chat template instead of question_template",
                                   default=False),
            "data_dir": Param(StrValue(), "where generated data (the synthetic benchmark) is written",
                              default="files/data"),
        }),
        "finetune": SectionSpec("Preparing the target and retain models by fine-tuning model_name (cached)", {
            "enabled": Param(BoolValue(), "target = model_name fine-tuned on forget+retain; retain model = "
                             "model_name fine-tuned on retain only (the oracle for forget quality)", default=False),
            "batch_size": Param(IntValue(low=1), "fine-tuning micro-batch size", default=8),
            **training_params(lr=1e-4, num_epochs=3, warmup_ratio=0.1),
        }),
        "eval": SectionSpec("Evaluation before and after unlearning", {
            "metrics": Param(ListValue(ChoiceValue(METRICS.names())), "metrics to compute",
                             default=DEFAULT_METRICS),
            "extra_splits": Param(ListValue(StrValue()), "more evaluated splits as 'name=dataset' (e.g. MUSE's "
                                  "forget QA beside forget texts: 'forget_qa=synthetic:forget10')", default=[]),
            "lm_eval_tasks": Param(ListValue(StrValue()), "lm-eval's own tasks by name (wmdp_bio, wmdp_cyber, mmlu, "
                                   "...), zero-shot accuracy on the in-process model, also along attacks",
                                   default=[]),
            "before": Param(BoolValue(), "evaluate the starting model", default=True),
            "after": Param(BoolValue(), "evaluate the unlearned model", default=True),
            "max_examples": Param(IntValue(low=0), "examples per split (0 = all)", default=0),
            "batch_size": Param(IntValue(low=1), "evaluation batch size", default=8),
            "max_new_tokens": Param(IntValue(low=1), "greedy tokens generated for ROUGE", default=32),
            "model": Param(ChoiceValue(["model_name", "target", "retain"]), "what evaluate.py evaluates: "
                           "overall.model_name as given, or the fine-tuned target or retain model (finetune.enabled)",
                           default="model_name"),
            "retain_logs_path": Param(StrValue(), "an evaluate.py run folder of the retain model: its forget "
                                      "truth ratios and Min-K% AUC are used instead of evaluating it again",
                                      default=""),
            "retain_model_name": Param(StrValue(), "retain (oracle) model for forget_quality when finetune is "
                                       "disabled: a local folder or hub id; empty for none", default=""),
        }),
        "mask": SectionSpec("Building a weight mask (make_mask.py, or a missing unlearn.mask_path)", {
            "score": Param(ChoiceValue(MASK_SCORES.names()), "saliency score (wagle = |(θ − G_r/μ)⊙G_f|)",
                           default="wagle"),
            "ratio": Param(FloatValue(low=1e-6, high=1.0), "fraction of the selected weights kept trainable (> 0)",
                           default=0.8),
            "granularity": Param(ChoiceValue(["global", "tensor", "row"]), "top ratio over all selected weights, "
                                 "per tensor, or per output row (Wanda)", default="global"),
            "include": Param(ListValue(StrValue()), "regexes of parameter names to select (empty = all)", default=[]),
            "exclude": Param(ListValue(StrValue()), "regexes of names never selected (frozen); WAGLE itself "
                             "ranked every parameter", default=["embed", "norm", "lm_head"]),
            "mu": Param(FloatValue(low=1e-12), "WAGLE's μ (published configs: 1e-6)", default=1e-6),
            "out": Param(StrValue(), "make_mask.py output (default: unlearn.mask_path, else "
                         "mask/<task>_<score>_<ratio>.safetensors)", default=""),
        }),
        "attack": SectionSpec("Fine-tune attacks after unlearning (forget metrics along the way)", {
            "datasets": Param(ListValue(StrValue()), "attack training data, each from the unlearned model: a data set "
                              "name (e.g. synthetic:math_train) or 'relearn' (a forget slice); empty = no attack",
                              default=[]),
            "test_datasets": Param(ListValue(StrValue()), "per attack, a test set for the task's own exact_match "
                                   "accuracy ('' for none); empty = none", default=[]),
            "num_examples": Param(ListValue(IntValue(low=0)), "training examples per attack (0 = all); one value "
                                  "for every attack or one per attack (same for the keys below)", default=[0]),
            "max_steps": Param(ListValue(IntValue(low=1)), "fine-tuning steps per attack", default=[20]),
            "lr": Param(ListValue(FloatValue(low=0.0)), "fine-tuning learning rate per attack (AdamW, constant)",
                        default=[1e-5]),
            "batch_size": Param(ListValue(IntValue(low=1)), "fine-tuning batch size per attack", default=[4]),
            "eval_every": Param(IntValue(low=1), "evaluate every k steps (and at 0 and the end)", default=5),
        }),
        "logger": SectionSpec("Where results go", {
            "name": Param(ChoiceValue(LOGGERS.names()), "results logger", default="json"),
            "run_name": Param(StrValue(), "run folder name (default: a UTC timestamp)", default=""),
            "overwrite": Param(BoolValue(), "replace an existing run folder of the same name", default=False),
        }),
        "logger.json": SectionSpec("JSON results logger", {
            "root": Param(StrValue(), "results root folder", default="files/results"),
        }),
    }
