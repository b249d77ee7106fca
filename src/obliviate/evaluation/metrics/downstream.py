"""``exact_match``: the accuracy of a downstream task with short answers (the fine-tune attacks' own tasks).

A greedy answer matches when its first line equals the true answer (case, spaces and final punctuation
ignored). When the true answer is a GSM8K solution ending in ``#### <number>``, the number is compared with
the generation's own ``####`` number, or else the last number it writes (commas ignored).
"""

from __future__ import annotations

import re

from obliviate.evaluation.declarations import MetricResult, mean_of, metric
from obliviate.evaluation.queries import SplitScores

FINAL_ANSWER_MARK = "####"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _normalise(text: str) -> str:
    return " ".join(text.strip().splitlines()[0].lower().split()).rstrip(".!") if text.strip() else ""


def _final_number(text: str) -> str:
    """The number after the last ``####``, or else the last number in ``text`` ('' if none)."""
    tail = text.rsplit(FINAL_ANSWER_MARK, 1)[1] if FINAL_ANSWER_MARK in text else text
    numbers = _NUMBER.findall(tail)
    return (numbers[0] if FINAL_ANSWER_MARK in text else numbers[-1]).replace(",", "") if numbers else ""


def answers_match(generated: str, answer: str) -> bool:
    if FINAL_ANSWER_MARK in answer:
        return _final_number(generated) == _final_number(answer) != ""
    return _normalise(generated) == _normalise(answer)


@metric("exact_match", generates=True)
def exact_match(scores: SplitScores) -> MetricResult:
    """Fraction of greedy answers equal to the true answer (GSM8K: the final number)."""
    matches = [float(answers_match(generated, e.answer)) for e, generated in scores.answers]
    return MetricResult(mean_of(matches), matches, scores.answer_texts())
