"""Fingerprint what a handful of methods compute on tiny-random-llama, to prove a refactoring changed no number.

    python benchmarks/fingerprint.py --out before.json             # on the old commit
    python benchmarks/fingerprint.py --out after.json              # on the new one
    python benchmarks/fingerprint.py --compare before.json after.json

Each case runs ``src/exec/unlearn_model.py`` on a shipped synthetic config with tiny-random-llama and short
budgets (fine-tuned target and retain model, 3 unlearning steps, 4 examples per split), in a fresh temporary
results and cache folder. Its fingerprint is every logged training value but the timings, and every number of
metrics.json and per_example.json. ``--compare`` says whether two fingerprints are bitwise equal (floats are
compared as their exact JSON text, which round-trips float64) and, if not, the first differing value of each case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = {"seconds", "step_seconds", "ilu_seconds"}
CASES = {  # name -> (shipped config, extra overrides)
    "NPO": ("npo.json", []),
    "RMU": ("rmu.json", []),
    "ILU": ("ilu_npo.json", []),
    "ULD": ("uld.json", ["--unlearn.ULD.num_layers", "1"]),
    "Offset": ("offset_npo.json", ["--unlearn.Offset.num_layers", "1"]),
    "NPO+LoRA": ("npo_lora.json", []),
    "NPO+WAGLE": ("npo_wagle.json", []),
    "PDU": ("pdu.json", []),
}


def run_case(config: str, extra: list[str], work: Path, cache: Path) -> dict:
    """One case's training log (timings dropped) and result files."""
    overrides = ["--overall.model_name", "tiny-random-llama", "--overall.cache_dir", str(cache),
                 "--dataset.data_dir", str(work / "data"), "--logger.json.root", str(work / "results"),
                 "--logger.name", "case", "--unlearn.max_steps", "3", "--finetune.max_steps", "2",
                 "--eval.max_examples", "4", "--eval.max_new_tokens", "4"]
    if config == "npo_wagle.json":
        overrides += ["--unlearn.mask_path", str(work / "mask.safetensors")]
    if config == "rmu.json":
        overrides += ["--unlearn.RMU.layer", "1", "--unlearn.RMU.trained_layers", "1"]
    command = [sys.executable, str(ROOT / "src" / "exec" / "unlearn_model.py"), "--config_file",
               str(ROOT / "configs" / "synthetic" / config), *overrides, *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=work, env={**os.environ,
                            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    if result.returncode != 0:
        raise SystemExit(f"{config} failed:\n{result.stderr[-3000:]}")
    folder = next((work / "results").glob("*/*/case"))
    log = [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
           for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return {"train_log": log, "metrics": json.loads((folder / "metrics.json").read_text()),
            "per_example": json.loads((folder / "per_example.json").read_text())}


def first_difference(a: object, b: object, path: str = "") -> str | None:
    """Where ``a`` and ``b`` first differ (floats compared exactly), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(set(a) ^ set(b))}"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}.{k}")) is not None), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{path}[{i}]"))
                     is not None), None)
    return None if json.dumps(a) == json.dumps(b) else f"{path}: {a!r} != {b!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the fingerprint here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two fingerprints")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    arguments = parser.parse_args()
    if arguments.compare:
        a, b = (json.loads(path.read_text()) for path in arguments.compare)
        differences = {case: first_difference(a[case], b[case]) if case in a and case in b else
                       f"(only in {arguments.compare[0] if case in a else arguments.compare[1]})"
                       for case in sorted(set(a) | set(b))}
        for case, difference in differences.items():
            print(f"{case}: {'bitwise equal' if difference is None else 'DIFFERS at ' + difference}")
        return 1 if any(differences.values()) else 0
    if arguments.out is None:
        parser.error("give --out or --compare")
    fingerprint = {}
    sys.path.insert(0, str(ROOT / "src"))
    from obliviate.models.embedded import prepare_smollm2  # tiny-random-llama uses its tokenizer

    prepared = prepare_smollm2(ROOT / "files" / "cache")
    with tempfile.TemporaryDirectory() as shared:
        cache = Path(shared) / "cache"
        (cache / "models").mkdir(parents=True)
        (cache / "models" / prepared.name).symlink_to(prepared)
        for case in arguments.cases.split(","):
            config, extra = CASES[case]
            with tempfile.TemporaryDirectory() as work:
                fingerprint[case] = run_case(config, extra, Path(work), cache)
            print(f"{case}: {len(fingerprint[case]['train_log'])} logged steps", flush=True)
    arguments.out.write_text(json.dumps(fingerprint, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
