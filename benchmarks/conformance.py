"""Conformance: per-example values of evaluate.py next to an independent computation with plain transformers.

    python benchmarks/conformance.py [--model smollm2-135m-instruct] [--out files/results/conformance.md]

A TOFU-layout file (real-world questions, a paraphrased and three perturbed answers each) is written, then
``src/exec/evaluate.py`` evaluates it as the forget split; its per_example.json is compared with values
computed here from one forward pass per (question, answer) through ``AutoModelForCausalLM`` (labels: the
answer's tokens and the EOS after ``Question: {q}\\nAnswer:``), ``model.generate`` for ROUGE (rouge_score
with stemming, as TOFU), zlib on the decoded answer, and the formulas of the reference code:
prob = exp(−mean NLL); R = P_perturbed / P_paraphrased after the original question; Min-K%++ and EM/ES
without the EOS (open-unlearning's tokenwise_logprobs). Prints a markdown table and the largest difference.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import torch
from rouge_score import rouge_scorer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from obliviate.models.loading import load_model, resolve_model  # noqa: E402

RECORDS = [
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen.", "The novel was written by Jane Austen.",
     ["The novel was written by Mary Shelley.", "The novel was written by Emily Bronte.",
      "The novel was written by George Eliot."]),
    ("What is the capital of Japan?", "Tokyo.", "Japan's capital city is Tokyo.",
     ["Japan's capital city is Osaka.", "Japan's capital city is Kyoto.", "Japan's capital city is Nagoya."]),
    ("How many legs does a spider have?", "Eight.", "A spider has eight legs.",
     ["A spider has six legs.", "A spider has ten legs.", "A spider has four legs."]),
    ("Which planet is known as the Red Planet?", "Mars.", "The Red Planet is Mars.",
     ["The Red Planet is Venus.", "The Red Planet is Jupiter.", "The Red Planet is Mercury."]),
    ("What gas do plants absorb from the air?", "Carbon dioxide.", "Plants take in carbon dioxide.",
     ["Plants take in oxygen.", "Plants take in nitrogen.", "Plants take in helium."]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci.", "The Mona Lisa was painted by Leonardo da Vinci.",
     ["The Mona Lisa was painted by Michelangelo.", "The Mona Lisa was painted by Raphael.",
      "The Mona Lisa was painted by Titian."]),
]
METRICS = ["prob", "truth_ratio", "rouge_l_recall", "mia_min_k_plus_plus", "mia_zlib", "exact_memorization",
           "extraction_strength"]
MAX_NEW_TOKENS = 32


def answer_statistics(model, tokenizer, question: str, answer: str) -> dict:
    """Per answer token (and the EOS): log p, argmax hit, Min-K%++ standardisation; from one forward pass."""
    prompt = tokenizer(f"Question: {question}\nAnswer:")["input_ids"]
    target = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + target])).logits[0].float()
    log_p = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)  # position t-1 predicts token t
    picked = log_p[torch.arange(len(target)), torch.tensor(target)]
    mu = (log_p.exp() * log_p).sum(-1)
    variance = ((log_p.exp() * log_p.pow(2)).sum(-1) - mu.pow(2)).clamp(min=1e-6)
    return {"ids": target, "log_p": picked.tolist(), "hit": (log_p.argmax(-1) == torch.tensor(target)).tolist(),
            "standardised": ((picked - mu) / variance.sqrt()).tolist()}


def lowest_mean(values: list[float], fraction: float = 0.4) -> float:
    count = max(1, int(len(values) * fraction))
    return sum(sorted(values)[:count]) / count


def independent(model, tokenizer) -> dict[str, list[float]]:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for question, answer, paraphrased, perturbed in RECORDS:
        own = answer_statistics(model, tokenizer, question, answer)
        nll = -sum(own["log_p"]) / len(own["log_p"])
        values["prob"].append(math.exp(-nll))
        base = answer_statistics(model, tokenizer, question, paraphrased)["log_p"]
        wrong = [answer_statistics(model, tokenizer, question, p)["log_p"] for p in perturbed]
        mean_wrong_nll = sum(-sum(w) / len(w) for w in wrong) / len(wrong)
        values["truth_ratio"].append(math.exp(-sum(base) / len(base) - mean_wrong_nll))
        inputs = tokenizer(f"Question: {question}\nAnswer:", return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        generated = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        values["rouge_l_recall"].append(scorer.score(answer, generated)["rougeL"].recall)
        content = {key: own[key][:-1] for key in ("log_p", "hit", "standardised")}  # without the EOS
        values["mia_min_k_plus_plus"].append(lowest_mean(content["standardised"]))
        span = tokenizer.decode(own["ids"], skip_special_tokens=True)
        values["mia_zlib"].append(-nll / len(zlib.compress(span.encode("utf-8"))))
        values["exact_memorization"].append(sum(content["hit"]) / len(content["hit"]))
        k = next((k for k in range(len(content["hit"]) + 1) if all(content["hit"][k:])), len(content["hit"]))
        values["extraction_strength"].append(1 - k / len(content["hit"]))
    return values


def ours(model_name: str, data: Path, work: Path) -> dict[str, list[float]]:
    command = [sys.executable, str(ROOT / "src/exec/evaluate.py"), "--overall.model_name", model_name,
               "--finetune.enabled", "false", "--dataset.forget_dataset_name", str(data),
               "--dataset.retain_dataset_name", "", "--dataset.holdout_dataset_name", "",
               "--dataset.real_authors_dataset_name", "", "--dataset.world_facts_dataset_name", "",
               "--eval.metrics", ",".join(METRICS), "--eval.max_new_tokens", str(MAX_NEW_TOKENS),
               "--logger.json.root", str(work), "--logger.name", "conformance"]
    subprocess.run(command, check=True, capture_output=True)
    per_example = json.loads((work / "synthetic/evaluations/conformance/per_example.json").read_text())
    return per_example["evaluated"]["forget"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=ROOT / "files/results/conformance.md")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "tofu_layout.jsonl"
        data.write_text("".join(json.dumps({"question": q, "answer": a, "paraphrased_answer": p,
                                            "perturbed_answer": w}) + "\n" for q, a, p, w in RECORDS))
        measured = ours(arguments.model, data, Path(folder))
    model, tokenizer = load_model(resolve_model(arguments.model), ROOT / "files/cache", torch.device("cpu"),
                                  torch.float32)
    expected = independent(model.eval(), tokenizer)
    lines = [f"Model `{arguments.model}`, {len(RECORDS)} TOFU-layout records; per example: ours / independent.", "",
             "| metric | " + " | ".join(f"example {i}" for i in range(len(RECORDS))) + " | max abs diff |",
             "|---|" + "---|" * (len(RECORDS) + 1)]
    worst = 0.0
    for name in METRICS:
        diffs = [abs(a - b) for a, b in zip(measured[name], expected[name])]
        worst = max(worst, max(diffs))
        cells = " | ".join(f"{a:.6g} / {b:.6g}" for a, b in zip(measured[name], expected[name]))
        lines.append(f"| {name} | {cells} | {max(diffs):.1e} |")
    table = "\n".join(lines) + f"\n\nlargest difference: {worst:.2e}\n"
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
