"""Refusal answers ("I don't know" in a hundred forms), written by the project: the answers IDK-style methods
train on for forget questions. Ten ways to say one does not know, each with ten endings, served as the
synthetic split ``refusals`` (text records, one refusal each)."""

from __future__ import annotations

_OPENINGS = [
    "I don't know", "I'm not sure", "I have no idea", "I can't say", "I'm unable to answer that",
    "That isn't something I know", "I don't have that information", "I couldn't tell you",
    "I'm afraid I don't know", "I honestly can't recall",
]
_ENDINGS = [
    ".", ", sorry.", ", I'm afraid.", " at all.", "; it's outside what I know.", ", to be honest.",
    "; I have no record of it.", "; you may want to check another source.", ", unfortunately.",
    "; that detail is unknown to me.",
]


def refusal_answers() -> list[str]:
    """The hundred refusals, in a fixed order."""
    return [opening + ending for opening in _OPENINGS for ending in _ENDINGS]
