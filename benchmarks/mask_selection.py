"""Benchmark: exact global top-ratio selection over N random scores split into tensors, vs one full sort.

    python benchmarks/mask_selection.py --elements 100000000 --tensors 200 --ratio 0.6

Prints wall time and peak memory (RSS) of each; the full sort is skipped with --no-sort (at 7e9 elements
it needs tens of GB).
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from obliviate.masks.selection import top_fraction  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", type=int, default=100_000_000)
    parser.add_argument("--tensors", type=int, default=200)
    parser.add_argument("--ratio", type=float, default=0.6)
    parser.add_argument("--no-sort", action="store_true")
    arguments = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    size = arguments.elements // arguments.tensors
    scores = [torch.rand(size, generator=generator).pow_(3) for _ in range(arguments.tensors)]
    base = peak_mb()
    print(f"{arguments.tensors} tensors x {size} = {size * arguments.tensors:,} fp32 scores ({base:.0f} MB RSS)")
    start = time.perf_counter()
    masks = top_fraction(scores, arguments.ratio)
    selected = sum(int(m.sum()) for m in masks)
    print(f"streaming selection: {time.perf_counter() - start:.2f} s, kept {selected:,}, peak RSS {peak_mb():.0f} MB")
    if not arguments.no_sort:
        start = time.perf_counter()
        flat = torch.cat(scores)
        threshold = torch.sort(flat, descending=True).values[round(arguments.ratio * flat.numel()) - 1]
        print(f"full sort: {time.perf_counter() - start:.2f} s, threshold {float(threshold):.6f}, "
              f"peak RSS {peak_mb():.0f} MB")
