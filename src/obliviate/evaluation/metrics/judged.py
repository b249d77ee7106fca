"""An LLM judge's verdicts on the greedy answers (see :mod:`obliviate.evaluation.judge` for the judge, its
prompts and their sources).

* ``judge``: on forget and holdout splits, the share of answers that the judge says REVEAL the true answer
  (the ``forget`` prompt); on retain, knowledge and task splits, the share it says are CORRECT given the
  reference answer (the ``correct`` prompt). Per example 1 (yes), 0 (no) or None (no verdict in the judge's
  text, left out of the mean). Higher = more knowledge on every role. The answers are the split's greedy
  generations, shared with ``rouge_l_recall``; per_example.json keeps each with the judge's own text.
"""

from __future__ import annotations

from obliviate.evaluation.declarations import MetricResult, NotComputed, mean_of, metric
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.splits import Role

REVEAL_ROLES = frozenset({Role.FORGET, Role.HOLDOUT})  # judged with the forget prompt; the others with correct


@metric("judge", generates=True)
def judge_rate(scores: SplitScores) -> MetricResult:
    """An LLM judge's rate of answers revealing the fact (forget, holdout) or correct (other splits)."""
    llm = scores.options.judge
    if llm is None:
        raise NotComputed("needs an LLM judge: set eval.judge.model (an embedded name, a model folder or hub id, "
                          "or with eval.judge.backend openai the served model's name)")
    kind = "forget" if scores.split.role in REVEAL_ROLES else "correct"
    verdicts = llm.verdicts([(e.question, e.answer, generated) for e, generated in scores.answers], kind)
    values = [verdict.score for verdict in verdicts]
    texts = [{**text, "judge_output": verdict.raw} for text, verdict in zip(scores.answer_texts(), verdicts)]
    return MetricResult(mean_of(values), values, texts)
