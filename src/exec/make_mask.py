"""Build a weight mask from an experiment's model and data.

    python src/exec/make_mask.py --config_file configs/synthetic/npo.json --mask.score wagle --mask.ratio 0.8 \\
        --mask.out mask/synthetic_0.8.safetensors

The model is the experiment's target (fine-tuned first when finetune.enabled; cached). The mask is
written as safetensors with a statistics plot (.png) beside it.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.cli import run  # noqa: E402
from obliviate.environment import peak_memory_mb  # noqa: E402
from obliviate.models.loading import load_model, shapes_of  # noqa: E402
from obliviate.unlearner import Unlearner  # noqa: E402


def make_mask(settings) -> None:
    unlearner = Unlearner(settings)
    unlearner.setup()
    s = settings
    out = Path(s.mask.out or s.unlearn.mask_path or f"mask/{s.unlearn.task_name}_{s.mask.score}_{s.mask.ratio}.safetensors")
    target = unlearner.finetune_models()["target"] if unlearner.target else unlearner.base
    model, tokenizer = load_model(target, unlearner.cache_dir, unlearner.device, unlearner.dtype)
    start = time.perf_counter()
    mask = unlearner.build_mask(model, tokenizer, out)
    fraction = mask.statistics(shapes_of(model))["trainable_fraction"]
    print(f"mask: {out} (plot {out.with_suffix('.png')}); trainable fraction of all weights {fraction:.4f}; "
          f"built in {time.perf_counter() - start:.1f} s; peak memory {peak_memory_mb():.0f} MB")


if __name__ == "__main__":
    sys.exit(run(make_mask, "make_mask.py"))
