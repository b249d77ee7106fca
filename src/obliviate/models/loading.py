"""Resolve ``overall.model_name`` to a model source (cheap checks first), then load model and tokenizer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from obliviate.errors import UserError
from obliviate.hub import hub_offline
from obliviate.models import embedded
from obliviate.models.anatomy import decoder_layers, first_layers
from obliviate.models.logit_difference import SPEC_FILE, LogitDifferenceModel, LogitDifferenceSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. ``identity`` changes whenever the weights would (used in cache keys)."""

    name: str
    kind: str  # "embedded" | "folder" | "hub" | "logit_difference" (a ULD/Offset run folder)
    identity: str


def _folder_identity(folder: Path) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for file in sorted(folder.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return "folder:" + digest.hexdigest()[:16]


def _check_causal_lm(config, name: str) -> None:
    """The saved architectures decide (e.g. BertModel is not generative); without any, the model type."""
    architectures = getattr(config, "architectures", None) or []
    causal = (any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures) if architectures
              else config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    if not causal:
        raise UserError(f"model '{name}' is a '{config.model_type}' model ({', '.join(architectures) or 'no head'}), "
                        "not a causal language model; give a causal LM (e.g. a Llama/Mistral/GPT folder)")


def resolve_model(name: str) -> ModelSource:
    """Check that ``name`` can be loaded, without loading weights: embedded name, folder or hub id."""
    if name in embedded.EMBEDDED_NAMES:
        return ModelSource(name, "embedded", f"embedded:{name}")
    path = Path(name)
    if (path / SPEC_FILE).is_file():
        return _logit_difference_source(path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder '{name}' has no config.json; give a folder written by save_pretrained")
        try:
            config = AutoConfig.from_pretrained(path)
        except (ValueError, OSError) as error:
            if "trust_remote_code" in str(error):
                raise UserError(f"model folder '{name}' needs its own Python code (trust_remote_code), which is "
                                "refused here because that code would run unchecked; use a model whose architecture "
                                "transformers ships") from None
            raise UserError(f"model folder '{name}' has an unreadable config.json ({error}); give a "
                            "save_pretrained folder") from None
        _check_causal_lm(config, name)
        _check_weights(path, name)
        return ModelSource(str(path), "folder", _folder_identity(path))
    if name.startswith((".", "/")) or name.count("/") != 1:
        raise UserError(f"model '{name}' is not an embedded model ({', '.join(embedded.EMBEDDED_NAMES)}), "
                        "an existing folder, or a hub id owner/name")
    try:
        config = AutoConfig.from_pretrained(name)
    except Exception:  # offline, unknown repo, gated: all mean "cannot get it here"
        state = "the hub is offline (HF_HUB_OFFLINE)" if hub_offline() else "the hub did not provide it"
        raise UserError(f"model '{name}' looks like a hub id but {state}; download it where the hub is "
                        "reachable (huggingface-cli download) and pass the local folder as --overall.model_name"
                        ) from None
    _check_causal_lm(config, name)
    return ModelSource(name, "hub", f"hub:{name}")


def read_spec(folder: Path) -> LogitDifferenceSpec:
    """The spec of a logit-difference run folder; its target (and assistant) resolved from the folder when they
    are paths inside it (the saved target, ``model``)."""
    try:
        spec = LogitDifferenceSpec(**json.loads((folder / SPEC_FILE).read_text()))
    except (ValueError, TypeError) as error:
        raise UserError(f"{folder / SPEC_FILE} is not a logit-difference spec ({error}); give a ULD or Offset run "
                        "folder") from None

    def inside(name: str) -> str:
        return str(folder / name) if name and (folder / name).exists() else name

    return LogitDifferenceSpec(**{**spec.record(), "target": inside(spec.target), "assistant": inside(spec.assistant)})


def _logit_difference_source(folder: Path) -> ModelSource:
    spec = read_spec(folder)
    if not (folder / "adapter").is_dir():
        raise UserError(f"'{folder}' has {SPEC_FILE} but no adapter/ folder; give a finished ULD or Offset run folder")
    parts = [resolve_model(spec.target).identity] + ([resolve_model(spec.assistant).identity] if spec.assistant
                                                     else [])
    identity = hashlib.sha256("|".join(parts + [_folder_identity(folder),
                                                _folder_identity(folder / "adapter")]).encode()).hexdigest()[:16]
    return ModelSource(str(folder), "logit_difference", "logit_difference:" + identity)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("overall.device is cuda but no CUDA device is visible; use --overall.device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _check_weights(path: Path, name: str) -> None:
    """A model folder must hold safetensors weights; pickled ones are never loaded (unpickling runs code)."""
    if any((path / file).is_file() for file in SAFE_WEIGHTS):
        return
    if any((path / file).is_file() for file in PICKLED_WEIGHTS):
        raise UserError(f"model folder '{name}' has only pickled weights (pytorch_model.bin), which are refused "
                        "because unpickling can run code; convert them with save_pretrained(..., "
                        "safe_serialization=True)")
    raise UserError(f"model folder '{name}' has no weights (model.safetensors); give a folder written by "
                    "save_pretrained")


def _weights_location(source: ModelSource, cache_dir: Path) -> Path | str:
    """Where ``from_pretrained`` finds the model (tiny-random-llama: the folder of its tokenizer)."""
    return embedded.prepare_smollm2(cache_dir) if source.kind == "embedded" else source.name


def load_model(source: ModelSource, cache_dir: Path, device: torch.device, dtype: torch.dtype
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (on ``device``, in ``dtype``) and tokenizer (pad token set, right padding)."""
    if source.kind == "logit_difference":
        return _load_logit_difference(Path(source.name), cache_dir, device, dtype)
    location = _weights_location(source, cache_dir)
    tokenizer = load_tokenizer(location)
    if source.name == embedded.TINY_RANDOM_LLAMA:
        return embedded.tiny_random_llama(tokenizer).to(device=device, dtype=dtype), tokenizer
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, SafetensorError) as error:
        raise UserError(f"the weights at '{location}' cannot be read ({str(error).splitlines()[0]}); if it is a "
                        f"cache entry (under {cache_dir}), delete that folder and rerun to rebuild it") from None
    return model.to(device), tokenizer


def _load_logit_difference(folder: Path, cache_dir: Path, device: torch.device, dtype: torch.dtype
                           ) -> tuple[LogitDifferenceModel, PreTrainedTokenizerBase]:
    """The combined model of a ULD/Offset run folder: its target, the assistant (the target's first layers, or
    its own model) and the saved adapter."""
    from peft import PeftModel

    spec = read_spec(folder)
    target, tokenizer = load_model(resolve_model(spec.target), cache_dir, device, dtype)
    target.requires_grad_(False)
    base = (load_model(resolve_model(spec.assistant), cache_dir, device, dtype)[0] if spec.assistant
            else first_layers(target, spec.num_layers))
    assistant = PeftModel.from_pretrained(base, folder / "adapter")
    return LogitDifferenceModel(target, assistant.eval(), spec), tokenizer


def source_tokenizer(source: ModelSource, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of ``source`` (no weights loaded; a logit-difference folder reads with its target's)."""
    if source.kind == "logit_difference":
        return source_tokenizer(resolve_model(read_spec(Path(source.name)).target), cache_dir)
    return load_tokenizer(_weights_location(source, cache_dir))


def tokenizers_match(first: ModelSource, second: ModelSource, cache_dir: Path) -> bool:
    """Both models read text the same way (same vocabulary, token for token)."""
    return source_tokenizer(first, cache_dir).get_vocab() == source_tokenizer(second, cache_dir).get_vocab()


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path,
               state: dict[str, torch.Tensor] | None = None) -> None:
    """A save_pretrained folder of ``model`` (with ``state``, those weights: a sharded model's, gathered whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, state_dict=state)
    tokenizer.save_pretrained(folder)


def shapes_of(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Each parameter's name and shape."""
    return {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}


def _weightless(source: ModelSource, cache_dir: Path) -> PreTrainedModel:
    """A weight-less (meta device) instance of the model."""
    location = _weights_location(source, cache_dir)
    with torch.device("meta"):
        if source.name == embedded.TINY_RANDOM_LLAMA:
            return embedded.tiny_random_llama(load_tokenizer(location))
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(location))


def parameter_shapes(source: ModelSource, cache_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape (no weights loaded)."""
    return shapes_of(_weightless(source, cache_dir))


def model_depth(source: ModelSource, cache_dir: Path) -> int:
    """The number of decoder layers (no weights loaded)."""
    return len(decoder_layers(_weightless(source, cache_dir)))
