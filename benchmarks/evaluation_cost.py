"""Benchmark: where one evaluation of an experiment spends its time, metric by metric and split by split.

    python benchmarks/evaluation_cost.py [--config_file configs/synthetic/npo.json] [--eval.model target] [keys...]

Runs ``src/exec/evaluate.py``'s path (the same plan, model and metrics; any config key may be overridden) with the
on-disk evaluation cache bypassed for the evaluated model (the retain model's reference evaluation is read from
the cache as in a real run), and prints seconds per (split, metric) in the order computed, each metric's total,
the model's forward passes counted by a hook, and the whole evaluation's wall time. A metric's seconds include the
model queries it is the first to ask for (``prob`` pays for the answers it shares with the truth ratio), so the
split of costs between metrics that share queries follows the metric order.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torch.nn.modules.module import register_module_forward_pre_hook  # noqa: E402
from transformers import PreTrainedModel  # noqa: E402

from obliviate.cli import run  # noqa: E402
from obliviate.evaluation import METRICS, evaluator, session  # noqa: E402
from obliviate.experiment import run_evaluation  # noqa: E402


def timed_metrics(seconds: dict[tuple[str, str], float]) -> None:
    """Wrap every registered metric's compute to add its wall time to ``seconds[(split, metric)]``."""
    for name in METRICS.names():
        declared = METRICS.get(name)

        def compute(scores, declared=declared):
            start = time.perf_counter()
            try:
                return original[declared.name](scores)
            finally:
                seconds[(scores.split.name, declared.name)] += time.perf_counter() - start

        original[declared.name] = declared.compute
        object.__setattr__(declared, "compute", compute)


original: dict = {}


def uncached(cache_dir, key, compute):
    """The evaluated model's evaluation is computed, never read from the cache (the retain model's is)."""
    if evaluating:
        return compute()
    return cached(cache_dir, key, compute)


cached = evaluator.cached_evaluation
evaluating = False

if __name__ == "__main__":
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    timed_metrics(seconds)
    forwards = [0]

    def count(module, inputs):
        if isinstance(module, PreTrainedModel) and not isinstance(getattr(module, "model", None), PreTrainedModel):
            forwards[0] += 1

    register_module_forward_pre_hook(count)
    original_evaluate = session.EvaluationSession.evaluate
    wall = [0.0]

    def evaluate(self, model, tokenizer, source=None):
        global evaluating
        self.reference()  # read (cached) before the clock starts
        evaluating, start, forwards[0] = True, time.perf_counter(), 0
        try:
            return original_evaluate(self, model, tokenizer, source)
        finally:
            evaluating, wall[0] = False, time.perf_counter() - start

    session.EvaluationSession.evaluate = evaluate
    session.cached_evaluation = uncached
    status = run(run_evaluation, "evaluation_cost.py", [*sys.argv[1:], "--logger.name", "evaluation_cost",
                                                        "--logger.json.root", "/tmp/obliviate_evaluation_cost",
                                                        "--logger.overwrite", "true"])
    totals: dict[str, float] = defaultdict(float)
    print("| split | metric | seconds |\n|---|---|---|")
    for (split, metric), value in seconds.items():
        totals[metric] += value
        print(f"| {split} | {metric} | {value:.1f} |")
    print("\n| metric | seconds |\n|---|---|")
    for metric, value in totals.items():
        print(f"| {metric} | {value:.1f} |")
    print(f"\nevaluation: {wall[0]:.1f} s, {forwards[0]} forward passes of the model")
    sys.exit(status)
