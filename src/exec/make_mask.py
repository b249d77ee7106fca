"""Build a weight mask from an experiment's model and data.

    python src/exec/make_mask.py --config_file configs/synthetic/npo.json --mask.score wagle --mask.ratio 0.8 \\
        --mask.out mask/synthetic_0.8.safetensors

The model is the experiment's target (fine-tuned first when finetune.enabled; cached). The mask is
written as safetensors with a statistics plot (.png) beside it.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator  # noqa: E402

from obliviate.cli import run  # noqa: E402
from obliviate.config.settings import Settings  # noqa: E402
from obliviate.data.tokenize import encode_splits  # noqa: E402
from obliviate.environment import peak_memory_mb  # noqa: E402
from obliviate.errors import UserError  # noqa: E402
from obliviate.models.loading import shapes_of  # noqa: E402
from obliviate.plan import plan  # noqa: E402


def build(settings: Settings) -> None:
    experiment = plan(settings)
    s, models = settings, experiment.models
    default = f"mask/{s.unlearn.task_name}_{s.mask.score}_{s.mask.ratio}.safetensors"
    out = Path(s.mask.out or s.unlearn.mask_path or default)
    if out.is_dir() or out.parent.is_file():
        raise UserError(f"mask output '{out}' is a folder or inside a file; name a .safetensors file (mask.out)")
    if out.exists() and not s.mask.overwrite:
        raise UserError(f"mask '{out}' exists; name another file (--mask.out) or pass --mask.overwrite true to "
                        "replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"cannot write the mask into '{out.parent}' (not writable); name a writable place with "
                        "--mask.out")
    target = models.build(models.target or models.base, "target", Accelerator(cpu=models.device.type == "cpu"))
    model, tokenizer = models.load(target)
    start = time.perf_counter()
    data = encode_splits(tokenizer, experiment.data, {"forget", "retain"}, experiment.fmt, experiment.max_length)
    mask = experiment.mask_recipe.make(model, data["forget"], data.get("retain"), out)
    fraction = mask.statistics(shapes_of(model))["trainable_fraction"]
    print(f"mask: {out} (plot {out.with_suffix('.png')}); trainable fraction of all weights {fraction:.4f}; "
          f"built in {time.perf_counter() - start:.1f} s; peak memory {peak_memory_mb():.0f} MB")


if __name__ == "__main__":
    sys.exit(run(build, "make_mask.py"))
