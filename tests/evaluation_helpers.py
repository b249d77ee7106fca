"""Helpers of the evaluation tests: splits and SplitScores whose model queries are given, not computed."""


from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation.queries import EvalOptions, SplitScores
from obliviate.evaluation.scoring import AnswerTokens
from obliviate.evaluation.splits import PRIMARY_SPLITS, Role, Split

OPTIONS = EvalOptions(batch_size=2, max_length=64, max_new_tokens=8)


def split_of(name, examples, role=None, primary=True):
    return Split(name, role or PRIMARY_SPLITS.get(name, Role.FORGET), tuple(examples), primary)


class FixedScores(SplitScores):
    """SplitScores whose model queries are given instead of computed."""

    def __init__(self, name, examples, role=None, reference=None, tokenizer=None, options=OPTIONS, **given):
        super().__init__(split_of(name, examples, role), None, tokenizer, PromptFormat(), options, reference)
        self.__dict__.update(given)  # answer_tokens, answers, truth_ratios, continuations ...


def tokens(log_probs, is_argmax=None, standardised=None, token_ids=None, closing_eos=False):
    count = len(log_probs)
    return AnswerTokens(tuple(token_ids or range(count)), tuple(log_probs), tuple(is_argmax or [True] * count),
                        tuple(standardised or log_probs), closing_eos)
