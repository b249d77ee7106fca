"""Benchmark: does fine-tuning the target model on the fictitious facts cost the base model's world knowledge?

    python benchmarks/target_knowledge.py [--variants base-plain,target-plain-1e-4x10,...] [--max-examples 40] [--reuse]

TOFU's target model is the base model fine-tuned on forget ∪ retain. Unlearning is judged on how much
real-world knowledge (``real_authors``, ``world_facts``: TOFU's model utility) survives, which can only be
measured if the target still has it. Each variant below evaluates one model through the real engine
(``src/exec/evaluate.py`` with ``configs/synthetic/npo.json``, the target built and cached by its recipe):

* ``base-<format>``: the base model (SmolLM2-135M-Instruct) before fine-tuning;
* ``target-<format>-<lr>x<epochs>[-b<batch>][-sentence]``: the target fine-tuned with that peak learning rate,
  number of epochs and batch size (the config's when not given); ``-sentence`` trains and evaluates on the second
  data layout, whose answers are full sentences ("<name> was born in the city of <city>.", TOFU's form) instead
  of the synthetic benchmark's short ones;

``<format>`` is ``plain`` (``Question: …\\nAnswer:``) or ``chat`` (the tokenizer's chat template,
``dataset.chat_template``). Reported per variant: forget and retain probability of the answer (memorised
facts), and per knowledge split the normalised probability of the true answer among the four options, the
four-way multiple-choice accuracy (lm-eval log-likelihood) and ROUGE-L recall of the greedy answer; then the
knowledge change relative to the base model under the same prompt format.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from obliviate.data.sources import synthetic_file  # noqa: E402
from obliviate.io import write_text_atomic  # noqa: E402

CONFIG = "configs/synthetic/npo.json"
SENTENCE_DIR = ROOT / "files" / "data" / "sentence_layout"
SPLITS = {"forget": "forget10", "retain": "retain90", "holdout": "holdout10"}
KNOWLEDGE = ("real_authors", "world_facts")
METRICS = ["prob", "rouge_l_recall", "mcq_acc"]
VARIANT = re.compile(r"base-(plain|chat)|target-(plain|chat)-[0-9.e+-]+x[0-9]+(-b[0-9]+)?(-sentence)?")
DEFAULT_VARIANTS = ["base-plain", "base-chat", "target-plain-1e-4x10", "target-plain-1e-4x10-sentence",
                    "target-plain-1e-4x5", "target-plain-3e-4x5", "target-chat-3e-4x5"]


def write_sentence_layout() -> dict[str, Path]:
    """The synthetic people's QA with full-sentence answers: the answer becomes the benchmark's sentence
    paraphrase ("<name> was born in the city of <city>."), which is also the form of the wrong answers."""
    paths = {}
    for role, split in SPLITS.items():
        rows = [json.loads(line) for line in synthetic_file(split, ROOT / "files" / "data").read_text().splitlines()]
        sentences = [{**row, "answer": row["paraphrased_answer"]} for row in rows]
        paths[role] = SENTENCE_DIR / f"{split}.jsonl"
        write_text_atomic(paths[role], "".join(json.dumps(row) + "\n" for row in sentences))
    return paths


def variant_arguments(variant: str, max_examples: int) -> list[str]:
    """evaluate.py arguments for one variant name (see the module docstring)."""
    if not VARIANT.fullmatch(variant):
        raise SystemExit(f"unknown variant '{variant}'; e.g. base-plain, target-chat-1e-4x5, "
                         "target-plain-3e-4x5-sentence")
    parts = variant.split("-", 2)  # kind, format, recipe (the recipe's learning rate may hold a '-')
    kind, fmt = parts[0], parts[1]
    arguments = ["--eval.metrics", json.dumps(METRICS), "--eval.max_examples", str(max_examples),
                 "--dataset.chat_template", str(fmt == "chat").lower(),
                 "--eval.model", "model_name" if kind == "base" else "target",
                 "--logger.name", f"knowledge_{variant}", "--logger.overwrite", "true"]
    if kind == "target":
        lr, epochs = parts[2].removesuffix("-sentence").split("x")
        epochs, _, batch = epochs.partition("-b")
        arguments += ["--finetune.lr", lr, "--finetune.num_epochs", epochs]
        if batch:
            arguments += ["--finetune.batch_size", batch]
    if variant.endswith("-sentence"):
        for role, path in write_sentence_layout().items():
            arguments += [f"--dataset.{role}_dataset_name", str(path)]
    return arguments


def evaluate(variant: str, max_examples: int, reuse: bool) -> dict[str, float]:
    """Run the evaluation in its own process (unless ``reuse`` and it is finished); return its metrics."""
    folder = ROOT / "files" / "results" / "synthetic" / "evaluations" / f"knowledge_{variant}"
    if not (reuse and (folder / "metrics.json").is_file()):
        command = [sys.executable, "src/exec/evaluate.py", "--config_file", CONFIG,
                   *variant_arguments(variant, max_examples)]
        subprocess.run(command, cwd=ROOT, check=True)
    return json.loads((folder / "metrics.json").read_text())["evaluated"]


def row(variant: str, splits: dict) -> dict[str, float]:
    values = {"forget prob": splits["forget"]["prob"], "retain prob": splits["retain"]["prob"]}
    for name in KNOWLEDGE:
        for metric in METRICS:
            values[f"{name} {metric}"] = splits[name][metric]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--max-examples", type=int, default=40)
    parser.add_argument("--reuse", action="store_true", help="read variants evaluated before (with whatever "
                        "--max-examples they had) instead of rerunning them")
    args = parser.parse_args()
    variants = args.variants.split(",")
    rows = {variant: row(variant, evaluate(variant, args.max_examples, args.reuse)) for variant in variants}
    columns = list(next(iter(rows.values())))
    print("| variant | " + " | ".join(columns) + " | largest knowledge loss vs base |")
    print("|---" * (len(columns) + 2) + "|")
    for variant, values in rows.items():
        cells = " | ".join(f"{values[c]:.3g}" for c in columns)
        print(f"| {variant} | {cells} | {largest_loss(variant, rows)} |")


def largest_loss(variant: str, rows: dict[str, dict[str, float]]) -> str:
    """The knowledge metric that fell most, relative to the base model under the same prompt format."""
    base = rows.get("base-" + variant.split("-")[1])
    if base is None or not variant.startswith("target"):
        return ""
    changes = {key: values / base[key] - 1 for key, values in rows[variant].items()
               if key.split()[0] in KNOWLEDGE and base[key] > 0}
    if not changes:
        return "base knows nothing to lose"
    worst = min(changes, key=changes.get)
    return f"{changes[worst]:+.0%} {worst}"


if __name__ == "__main__":
    main()
