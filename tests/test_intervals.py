"""Bootstrap intervals of study tables, against values worked out by hand."""

import pytest

from obliviate.study.intervals import bootstrap_interval, paired_differences, paired_ratio, with_interval


def test_interval_of_two_values_spans_both():
    # resample means of [0, 1]: 0 (p 1/4), 0.5 (p 1/2), 1 (p 1/4): the 2.5 % and 97.5 % quantiles are 0 and 1
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)


def test_interval_follows_the_resampled_mean_distribution():
    # resample means of [0, 0, 3] are 0, 1, 2, 3 with p 8/27, 12/27, 6/27, 1/27: P(3) = 3.7 % > 2.5 %, so the
    # upper end is 3 and the lower end 0 (P(0) = 29.6 %)
    assert bootstrap_interval([0.0, 0.0, 3.0]) == (0.0, 3.0)
    # a 50 % interval of the same: its quartiles; P(mean <= 1) = 20/27 = 0.741 < 0.75, so the upper one is 2
    assert bootstrap_interval([0.0, 0.0, 3.0], level=0.5) == (0.0, 2.0)


def test_degenerate_inputs():
    assert bootstrap_interval([0.25]) == (0.25, 0.25)
    assert bootstrap_interval([0.5] * 7) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_interval_is_seeded_and_contains_the_mean():
    values = [0.1, 0.4, 0.35, 0.8, 0.2, 0.55]
    low, high = bootstrap_interval(values)
    assert bootstrap_interval(values) == (low, high)
    assert low < sum(values) / len(values) < high


def test_paired_differences_use_shared_seeds_only():
    assert paired_differences({0: 0.5, 1: 0.25, 2: 0.75}, {1: 0.5, 2: 0.25, 3: 0.0}) == [-0.25, 0.5]


def test_paired_ratio_resamples_seeds_together():
    # seeds 0, 1: A = 1, 3 and B = 2, 2; the ratio of means is 4/4 = 1; the paired resamples are (0, 0) → 1/2,
    # (0, 1) and (1, 0) → 4/4, (1, 1) → 3/2 with p 1/4, 1/2, 1/4: the 95 % interval is [0.5, 1.5]
    assert paired_ratio({0: 1.0, 1: 3.0, 5: 9.0}, {0: 2.0, 1: 2.0}) == (1.0, 0.5, 1.5)


def test_paired_ratio_is_undefined_unless_every_resampled_denominator_is_positive():
    assert paired_ratio({0: 1.0, 1: 3.0}, {0: 0.0, 1: 0.0}) is None
    assert paired_ratio({0: 1.0, 1: 3.0}, {0: 0.0, 1: 2.0}) is None  # the resample (0, 0) divides by 0
    assert paired_ratio({0: 1.0, 1: 3.0}, {0: -0.5, 1: 2.0}) is None  # B lost knowledge in the resample (0, 0)
    assert paired_ratio({0: 1.0}, {1: 1.0}) is None  # no shared seed


def test_text_form():
    assert with_interval([0.5]) == "0.5"
    assert with_interval([0.0, 1.0]) == "0.5 [0, 1]"
