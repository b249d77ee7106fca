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
import tempfile
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


class EvaluationClock:
    """Times the evaluated model's evaluation (``EvaluationSession.evaluate``, its cache bypassed): wall time,
    seconds per (split, metric) and forward passes of the model; the retain model's reference evaluation is read
    (or computed) before the clock starts and counts in none of them."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.wall, self.forwards, self.running = 0.0, 0, False

    def install(self) -> None:
        for name in METRICS.names():
            declared = METRICS.get(name)
            object.__setattr__(declared, "compute", self._timed(declared.name, declared.compute))
        register_module_forward_pre_hook(self._count)
        cached, evaluate = evaluator.cached_evaluation, session.EvaluationSession.evaluate

        def uncached(cache_dir, key, compute):
            return compute() if self.running else cached(cache_dir, key, compute)

        def timed_evaluate(evaluation_session, model, tokenizer, source=None):
            evaluation_session.reference()
            self.running, start = True, time.perf_counter()
            try:
                return evaluate(evaluation_session, model, tokenizer, source)
            finally:
                self.running, self.wall = False, time.perf_counter() - start

        session.cached_evaluation = uncached
        session.EvaluationSession.evaluate = timed_evaluate

    def _timed(self, name, compute):
        def timed(scores):
            start = time.perf_counter()
            try:
                return compute(scores)
            finally:
                if self.running:
                    self.seconds[(scores.split.name, name)] += time.perf_counter() - start
        return timed

    def _count(self, module, inputs) -> None:
        outer = isinstance(module, PreTrainedModel) and not isinstance(getattr(module, "model", None), PreTrainedModel)
        if self.running and outer:
            self.forwards += 1

    def report(self) -> str:
        totals: dict[str, float] = defaultdict(float)
        lines = ["| split | metric | seconds |", "|---|---|---|"]
        for (split, metric), value in self.seconds.items():
            totals[metric] += value
            lines.append(f"| {split} | {metric} | {value:.1f} |")
        lines += ["", "| metric | seconds |", "|---|---|", *(f"| {m} | {v:.1f} |" for m, v in totals.items())]
        lines += ["", f"evaluation: {self.wall:.1f} s, {self.forwards} forward passes of the model"]
        return "\n".join(lines)


if __name__ == "__main__":
    clock = EvaluationClock()
    clock.install()
    status = run(run_evaluation, "evaluation_cost.py", [*sys.argv[1:], "--logger.name", "evaluation_cost",
                                                        "--logger.json.root", tempfile.mkdtemp()])
    print(clock.report())
    sys.exit(status)
