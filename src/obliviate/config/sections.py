"""Every fixed config section as a typed dataclass, each key with its checker, description and default.

Section and key names follow the OPTML code line (WAGLE, SimNPO, ILU) where it has them
(``overall.model_name``, ``overall.logger``, ``unlearn.unlearn_method``, ``unlearn.lr``,
``dataset.forget_dataset_name``, ``logger.name`` = the run folder's name, ``logger.json.root``). Method
hyper-parameters live in ``unlearn.<Method>`` sections, which the composition root
(:mod:`obliviate.experiment`) adds from the method registry; keys naming a component are
:class:`~obliviate.config.checkers.RegisteredName` and bound there too.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.config.checkers import (
    BoolValue,
    ChoiceValue,
    FloatValue,
    FolderName,
    FolderPath,
    IntValue,
    ListValue,
    RegisteredName,
    StrValue,
)
from obliviate.config.spec import option

DEFAULT_METRICS = ["prob", "rouge_l_recall", "truth_ratio", "forget_quality", "mcq_acc"]


@dataclass(frozen=True, kw_only=True)
class Overall:
    """Model, seed, machine and results logger"""

    model_name: str = option(StrValue(), "embedded name (smollm2-135m-instruct, tiny-random-llama), a local model "
                             "folder or a hub id", "smollm2-135m-instruct")
    logger: str = option(RegisteredName("logger"), "results logger kind", "json")
    seed: int = option(IntValue(low=0), "seed of every random choice of the run (same seed, same result on CPU); "
                       "the target's fine-tuning has its own, finetune.seed", 0)
    device: str = option(ChoiceValue(["auto", "cpu", "cuda", "mps"]), "auto = cuda if available, else cpu", "auto")
    dtype: str = option(ChoiceValue(["auto", "float32", "bfloat16", "float16"]),
                        "weights dtype; auto = bfloat16 on CUDA, float32 on CPU", "auto")
    cache_dir: str = option(FolderPath(), "prepared models, fine-tuned targets and cached evaluations", "files/cache")
    sharding: str = option(ChoiceValue(["none", "fsdp"]), "fsdp: shard weights, gradients and optimiser state over "
                           "the processes (torch's FSDP2; launch with torchrun or accelerate launch); none: each "
                           "process holds the whole model (DDP)", "none")


@dataclass(frozen=True, kw_only=True)
class TrainingKeys:
    """The optimisation keys shared by unlearning and fine-tuning"""

    lr: float = option(FloatValue(low=0.0), "peak learning rate (AdamW)", 1e-5)
    num_epochs: int = option(IntValue(low=1), "passes over the primary data (ignored when max_steps > 0)", 1)
    max_steps: int = option(IntValue(low=-1), "optimiser steps; <= 0 means num_epochs passes", -1)
    gradient_accumulation_steps: int = option(IntValue(low=1), "micro-batches per optimiser step", 1)
    weight_decay: float = option(FloatValue(low=0.0), "AdamW decoupled weight decay (not on biases/norms)", 0.0)
    warmup_ratio: float = option(FloatValue(low=0.0, high=1.0), "fraction of steps with linear warm-up", 0.0)
    lr_scheduler: str = option(ChoiceValue(["constant", "linear", "cosine"]), "decay after warm-up", "linear")
    max_grad_norm: float = option(FloatValue(low=0.0), "gradient clipping norm (0 disables)", 1.0)
    logging_steps: int = option(IntValue(low=1), "write train_log.jsonl every k optimiser steps", 1)


@dataclass(frozen=True, kw_only=True)
class Unlearn(TrainingKeys):
    """Unlearning run"""

    unlearn_method: str = option(RegisteredName("unlearning method"), "registered method (case-insensitive)", "NPO")
    task_name: str = option(FolderName(), "benchmark name: results go to files/results/<task_name>/<method>/",
                            "synthetic")
    save_model: bool = option(BoolValue(), "save the unlearned model in the run folder", False)
    eval_every: int = option(IntValue(low=0), "evaluate unlearn.eval_splits every k steps and at step 0 to "
                             "eval_log.jsonl/eval_curves.png (0 = off)", 0)
    eval_splits: list[str] = option(ListValue(StrValue()), "splits evaluated during unlearning (eval.metrics)",
                                    ["forget", "retain"])
    best_metric: str = option(StrValue(), "best checkpoint: <split>.<metric> to optimise among the evaluated points "
                              "(empty = no selection)", "")
    best_goal: str = option(ChoiceValue(["max", "min"]), "best checkpoint: maximise or minimise best_metric", "max")
    best_constraint: str = option(StrValue(), "best checkpoint: only points with <split>.<metric> >= (or <=) ratio "
                                  "× its step-0 value, e.g. retain.prob>=0.95 (empty = none)", "")
    save_every: int = option(IntValue(low=0), "save the training state every k steps (and at the end) for "
                             "--logger.resume (0 = never)", 0)
    g_effect_every: int = option(IntValue(low=0), "every k steps, the G-effect of the step on forget and retain NLL "
                                 "per block to g_effect.jsonl/png (0 = off)", 0)
    g_effect_definition: str = option(ChoiceValue(["seed", "probe"]), "G-effect as the seed: the raw step gradient "
                                      "against the risks on the step's own batches; or probe: the applied "
                                      "(clipped, masked) gradient against the risks on drawn probe batches", "seed")
    sequence: list[str] = option(ListValue(StrValue()), "sequential unlearning: forget sets (data set names; a "
                                 "slice such as synthetic:forget10[0:5] cuts one) unlearned one after another, each "
                                 "stage from the previous stage's weights and evaluated after it; every one within "
                                 "dataset.forget_dataset_name; empty = one stage", [])
    mask_path: str = option(StrValue(), "weight mask (.safetensors, or WAGLE .pt): loaded if it exists, else built "
                            "from the mask section and saved there; empty for no mask", "")


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """Forget, retain, holdout and real-world knowledge data"""

    forget_dataset_name: str = option(StrValue(), "synthetic:<split>, a .json/.jsonl file or a hub id "
                                      "owner/name[:config][@split]", "synthetic:forget10")
    retain_dataset_name: str = option(StrValue(), "same forms; empty for none", "synthetic:retain90")
    holdout_dataset_name: str = option(StrValue(), "never-trained data evaluated as 'holdout'; empty for none",
                                       "synthetic:holdout10")
    real_authors_dataset_name: str = option(StrValue(), "real-world knowledge evaluated as 'real_authors' (TOFU "
                                            "utility; e.g. locuslab/TOFU:real_authors_perturbed); empty for none",
                                            "synthetic:real_authors")
    world_facts_dataset_name: str = option(StrValue(), "real-world knowledge evaluated as 'world_facts' (TOFU "
                                           "utility); empty for none", "synthetic:world_facts")
    batch_size: int = option(IntValue(low=1), "unlearning micro-batch size (each of forget and retain)", 4)
    max_length: int = option(IntValue(low=8), "tokens per example (prompt + answer), truncated", 128)
    question_template: str = option(StrValue(), "prompt made from a question; must contain {question}",
                                    "Question: {question}\nAnswer:")
    chat_template: bool = option(BoolValue(), "use the tokenizer's chat template instead of question_template",
                                 False)
    data_dir: str = option(FolderPath(), "where generated data (the synthetic benchmark) is written", "files/data")


@dataclass(frozen=True, kw_only=True)
class Finetune(TrainingKeys):
    """Preparing the target and retain models by fine-tuning model_name (cached)"""

    enabled: bool = option(BoolValue(), "target = model_name fine-tuned on forget+retain; retain model = model_name "
                           "fine-tuned on retain only (the oracle for forget quality)", False)
    batch_size: int = option(IntValue(low=1), "fine-tuning micro-batch size", 8)
    lr: float = option(FloatValue(low=0.0), "peak learning rate (AdamW)", 1e-4)
    num_epochs: int = option(IntValue(low=1), "passes over the primary data (ignored when max_steps > 0)", 3)
    warmup_ratio: float = option(FloatValue(low=0.0, high=1.0), "fraction of steps with linear warm-up", 0.1)
    seed: int = option(IntValue(low=0), "fine-tuning seed: one target for every overall.seed, as TOFU fine-tunes "
                       "once and unlearns with several seeds (set it per run to vary the target too)", 0)
    target_from: str = option(ChoiceValue(["base", "retain"]), "what the target is fine-tuned from: model_name on "
                              "forget+retain (TOFU), or the retain model on forget plus as many retain examples "
                              "replayed (the retain model's training is shared: about 40 % fewer fine-tuning steps; "
                              "one target per forget split)", "base")


@dataclass(frozen=True, kw_only=True)
class Eval:
    """Evaluation before and after unlearning"""

    metrics: list[str] = option(ListValue(RegisteredName("metric")), "metrics to compute", DEFAULT_METRICS)
    extra_splits: list[str] = option(ListValue(StrValue()), "more evaluated splits as 'name:role=dataset', role one "
                                     "of forget, retain, holdout, knowledge (e.g. MUSE's forget QA beside forget "
                                     "texts: 'forget_qa:forget=synthetic:forget10')", [])
    knowmem_shots: list[str] = option(ListValue(StrValue()), "KnowMem's in-context examples: a data set for every "
                                      "split, or 'split=dataset' entries (MUSE: forget_qa_icl / retain_qa_icl)",
                                      ["synthetic:knowmem_icl"])
    probes: list[str] = option(ListValue(RegisteredName("probe")), "prompt-level probes of the forget set, each "
                               "evaluated as a split forget_<probe>: rephrasings (paraphrased, fewshot, "
                               "ignore_instructions) and RWKU's adversarial families (prefix_injection, "
                               "affirmative_suffix, role_play, reverse_query, synonym_manipulation, background_hint, "
                               "in_context_learning, cross_lingual)", [])
    reverse_dataset_name: str = option(StrValue(), "the reverse_query probe's questions (the forget facts asked the "
                                       "other way round); empty = synthetic:<forget split>_reverse for a synthetic "
                                       "forget set", "")
    leak_samples: int = option(IntValue(low=1), "leak_at_k: answers sampled per forget question (K); leak@k is "
                               "reported for k = 1, 2, 4, ... up to K", 16)
    leak_temperature: float = option(FloatValue(low=1e-3), "leak_at_k: sampling temperature", 1.0)
    leak_top_p: float = option(FloatValue(low=1e-3, high=1.0), "leak_at_k: nucleus (top-p) sampling mass", 1.0)
    leak_scorer: str = option(ChoiceValue(["rouge", "judge"]), "leak_at_k: a sample leaks when its ROUGE-L recall "
                              "against the answer reaches leak_threshold (rouge), or when eval.judge says it reveals "
                              "the fact (judge)", "rouge")
    leak_threshold: float = option(FloatValue(low=0.0, high=1.0), "leak_at_k with leak_scorer rouge: the ROUGE-L "
                                   "recall at which a sample leaks", 0.5)
    lm_eval_tasks: list[str] = option(ListValue(StrValue()), "lm-eval's own tasks by name (wmdp_bio, wmdp_cyber, "
                                      "mmlu, ...), zero-shot accuracy on the in-process model, also along attacks", [])
    before: bool = option(BoolValue(), "evaluate the starting model", True)
    after: bool = option(BoolValue(), "evaluate the unlearned model", True)
    max_examples: int = option(IntValue(low=0), "examples per split (0 = all)", 0)
    batch_size: int = option(IntValue(low=1), "evaluation batch size", 8)
    generation_batch_size: int = option(IntValue(low=0), "prompts per batch when answers are generated (0 = "
                                        "eval.batch_size); a generation step holds one position's logits where "
                                        "scoring holds every position's, so it can take a larger batch, and on CPU "
                                        "it runs faster with one", 0)
    max_new_tokens: int = option(IntValue(low=1), "greedy tokens generated for answers (TOFU and open-unlearning: "
                                 "200)", 200)
    model: str = option(ChoiceValue(["model_name", "target", "retain"]), "what evaluate.py evaluates: "
                        "overall.model_name as given, or the fine-tuned target or retain model (finetune.enabled)",
                        "model_name")
    retain_logs_path: str = option(StrValue(), "an evaluate.py run folder of the retain model: what other metrics "
                                   "need from it is read there instead of evaluating it again", "")
    retain_model_name: str = option(StrValue(), "retain (oracle) model for forget_quality when finetune is disabled: "
                                    "a local folder or hub id; empty for none", "")


@dataclass(frozen=True, kw_only=True)
class Judge:
    """An LLM judge of generated answers (the metric judge; leak_at_k with eval.leak_scorer judge)"""

    model: str = option(StrValue(), "the judge: an embedded name, a local model folder or a hub id (backend "
                        "transformers), or the model name an OpenAI-compatible server serves (backend openai); "
                        "empty = no judge", "")
    backend: str = option(ChoiceValue(["transformers", "openai"]), "transformers: the judge runs in this process; "
                          "openai: POST /v1/chat/completions to eval.judge.url (a vLLM, TGI or llama.cpp server)",
                          "transformers")
    url: str = option(StrValue(), "base URL of the OpenAI-compatible server, e.g. http://localhost:8000/v1", "")
    api_key_env: str = option(StrValue(), "environment variable holding the server's API key (empty = none sent)",
                              "")
    forget_template: str = option(StrValue(), "prompt file (.txt with {question}, {answer}, {generation}) judging "
                                  "whether a forget-split generation reveals the fact; empty = the shipped one", "")
    correct_template: str = option(StrValue(), "prompt file judging whether a retain/knowledge generation is "
                                   "correct; empty = the shipped one", "")
    max_new_tokens: int = option(IntValue(low=1), "tokens the judge may write (its verdict)", 16)
    timeout_s: float = option(FloatValue(low=0.1), "openai backend: seconds to wait for one answer", 60.0)
    retries: int = option(IntValue(low=0), "openai backend: further tries after a failed request (backing off)", 3)


@dataclass(frozen=True, kw_only=True)
class Mask:
    """Building a weight mask (make_mask.py, or a missing unlearn.mask_path)"""

    score: str = option(RegisteredName("mask score"), "saliency score (wagle = |(θ − G_r/μ)⊙G_f|)", "wagle")
    ratio: float = option(FloatValue(low=1e-6, high=1.0), "fraction of the selected weights kept trainable (> 0)", 0.8)
    granularity: str = option(ChoiceValue(["global", "tensor", "row"]), "top ratio over all selected weights, per "
                              "tensor, or per output row (Wanda)", "global")
    include: list[str] = option(ListValue(StrValue()), "regexes of parameter names to select (empty = all)", [])
    exclude: list[str] = option(ListValue(StrValue()), "regexes of names never selected (frozen); WAGLE itself "
                                "ranked every parameter", ["embed", "norm", "lm_head"])
    mu: float = option(FloatValue(low=1e-12), "WAGLE's μ (published configs: 1e-6)", 1e-6)
    out: str = option(StrValue(), "make_mask.py output (default: unlearn.mask_path, else "
                      "mask/<task>_<score>_<ratio>.safetensors)", "")
    overwrite: bool = option(BoolValue(), "make_mask.py: replace an existing mask file at the output path", False)


@dataclass(frozen=True, kw_only=True)
class Lora:
    """LoRA adapters through peft, for any method (only adapters train; ULD/Offset always adapt their assistant)"""

    enabled: bool = option(BoolValue(), "train LoRA adapters instead of the model's weights", False)
    r: int = option(IntValue(low=1), "adapter rank", 16)
    alpha: float = option(FloatValue(low=0.0), "adapter scaling α (the update is scaled by α/r)", 32.0)
    dropout: float = option(FloatValue(low=0.0, high=1.0), "dropout on the adapter's input", 0.05)
    target_modules: list[str] = option(ListValue(StrValue()), "modules that get adapters, by the last part of "
                                       "their name (q_proj, v_proj, ...), or all-linear", ["all-linear"])
    merge: bool = option(BoolValue(), "merge the adapter into the weights after unlearning (evaluation, attacks "
                         "and the saved model then use the merged weights)", False)


@dataclass(frozen=True, kw_only=True)
class Attack:
    """Fine-tune attacks after unlearning (forget metrics along the way)"""

    datasets: list[str] = option(ListValue(StrValue()), "attack training data, each from the unlearned model: a data "
                                 "set name (e.g. synthetic:math_train), 'relearn' (a forget slice), or quantize:8 / "
                                 "quantize:4 (weights rounded, no training); empty = no attack", [])
    test_datasets: list[str] = option(ListValue(StrValue()), "per attack, a test set for the task's own exact_match "
                                      "accuracy ('' for none); empty = none", [])
    num_examples: list[int] = option(ListValue(IntValue(low=0)), "training examples per attack (0 = all); one value "
                                     "for every attack or one per attack (same for the keys below)", [0])
    max_steps: list[int] = option(ListValue(IntValue(low=1)), "fine-tuning steps per attack", [20])
    lr: list[float] = option(ListValue(FloatValue(low=0.0)), "fine-tuning learning rate per attack (AdamW, constant)",
                             [1e-5])
    batch_size: list[int] = option(ListValue(IntValue(low=1)), "fine-tuning batch size per attack", [4])
    eval_every: int = option(IntValue(low=1), "evaluate every k steps (and at 0 and the end)", 5)


@dataclass(frozen=True, kw_only=True)
class Logger:
    """The run folder"""

    name: str = option(FolderName(optional=True), "run folder name (default: a UTC timestamp)", "")
    overwrite: bool = option(BoolValue(), "replace an existing run folder of the same name", False)
    tensorboard: bool = option(BoolValue(), "also log training, evaluation and attack curves to TensorBoard "
                               "(<run folder>/tensorboard)", False)
    wandb: bool = option(BoolValue(), "also log them to Weights & Biases (needs the wandb package)", False)
    resume: bool = option(BoolValue(), "continue the stopped run of this logger.name from its saved state "
                          "(unlearn.save_every); the config must be the same", False)


@dataclass(frozen=True, kw_only=True)
class JsonLogger:
    """JSON results logger"""

    root: str = option(FolderPath(), "results root folder", "files/results")


SECTIONS: dict[str, type] = {"overall": Overall, "unlearn": Unlearn, "dataset": Dataset, "finetune": Finetune,
                             "eval": Eval, "eval.judge": Judge, "mask": Mask, "lora": Lora, "attack": Attack,
                             "logger": Logger, "logger.json": JsonLogger}

