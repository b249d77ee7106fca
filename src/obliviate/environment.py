"""What a run ran on (package versions, device, world size, peak memory) and where its time went."""

from __future__ import annotations

import contextlib
import platform
import resource
import subprocess
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "lm_eval", "fastargs", "tokenizers")


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment_record(device: torch.device, dtype: torch.dtype, world_size: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": _git_commit(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }
    if device.type == "cuda":
        record["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return record


class Timings(dict[str, float]):
    """Wall seconds per stage of a run (env.json's ``wall_time_seconds``); a stage timed twice adds up, and
    ``total`` counts from the moment these timings were made."""

    def __init__(self) -> None:
        super().__init__()
        self.start = time.perf_counter()

    def with_total(self) -> "Timings":
        self["total"] = round(time.perf_counter() - self.start, 2)
        return self

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 2)
