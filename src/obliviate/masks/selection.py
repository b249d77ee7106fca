"""Keep the top ``ratio`` fraction of scores, without sorting one vector of all weights.

Global selection over many tensors finds the exact k-th largest score by narrowing a value range with
histograms (one streaming pass over the tensors per round, O(bins) extra memory), then sorting only the
few candidates left in the final range. Ties at the threshold are broken deterministically (tensor
order, then flat index), so exactly k elements are kept. This scales to 7e9 weights, where the public
code's argsort of one 7e9-element vector does not.
"""

from __future__ import annotations

import torch

HISTOGRAM_BINS = 4096
MAX_CANDIDATES = 1 << 22
MAX_ROUNDS = 8


def _count(scores: list[torch.Tensor], predicate) -> int:
    return sum(int(predicate(s).sum()) for s in scores)


def kth_largest(scores: list[torch.Tensor], k: int) -> tuple[float, int]:
    """(t, n): the k-th largest value t over all tensors, and how many elements equal to t belong to the
    top k (the rest of the top k is every element > t). Requires 1 <= k <= total size."""
    low = min(float(s.min()) for s in scores)
    high = max(float(s.max()) for s in scores)
    above, inside = 0, sum(s.numel() for s in scores)
    for _ in range(MAX_ROUNDS):
        if inside <= MAX_CANDIDATES or low == high:
            break
        histogram = sum(torch.histc(s.float(), bins=HISTOGRAM_BINS, min=low, max=high) for s in scores)
        from_top = torch.cumsum(histogram.flip(0), 0)
        bin_from_top = int(torch.searchsorted(from_top, torch.tensor(float(k - above))))
        index = HISTOGRAM_BINS - 1 - min(bin_from_top, HISTOGRAM_BINS - 1)
        width = (high - low) / HISTOGRAM_BINS
        # one bin of slack on each side absorbs histc's rounding at bin edges; the counts are exact
        new_low, new_high = max(low, low + (index - 1) * width), min(high, low + (index + 2) * width)
        new_above = _count(scores, lambda s, high=new_high: s > high)
        new_inside = _count(scores, lambda s, low=new_low, high=new_high: (s >= low) & (s <= high))
        if not new_above < k <= new_above + new_inside or new_inside == inside:
            break  # the range no longer holds the k-th value (rounding) or stopped shrinking
        low, high, above, inside = new_low, new_high, new_above, new_inside
    candidates = torch.cat([s[(s >= low) & (s <= high)].float() for s in scores])
    threshold = float(torch.topk(candidates, k - above).values[-1])
    return threshold, k - _count(scores, lambda s: s > threshold)


def top_fraction(scores: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Boolean masks keeping exactly round(ratio × total) of the highest scores across all tensors."""
    total = sum(s.numel() for s in scores)
    k = round(ratio * total)
    if k == 0:
        return [torch.zeros_like(s, dtype=torch.bool) for s in scores]
    if k == total:
        return [torch.ones_like(s, dtype=torch.bool) for s in scores]
    threshold, ties_to_keep = kth_largest(scores, k)
    masks = []
    for s in scores:
        mask = s > threshold
        ties = (s == threshold).flatten().nonzero().flatten()
        keep = ties[:ties_to_keep]
        ties_to_keep -= len(keep)
        mask.view(-1)[keep] = True
        masks.append(mask)
    return masks


def top_fraction_per_row(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """For a 2-D score: keep round(ratio × columns) highest scores in every output row (Wanda's rule)."""
    k = round(ratio * score.shape[1])
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        mask.scatter_(1, torch.topk(score, k, dim=1).indices, True)
    return mask
