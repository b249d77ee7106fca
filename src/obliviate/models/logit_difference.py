"""Models whose next-token logits combine a target model with a small assistant (ULD, Offset unlearning).

With z_T the target's logits, z_A the assistant's and z_A⁰ the assistant's at its start (the same object
with its LoRA adapters switched off, never a copy):

* ULD (Ji et al., "Reversing the Forget-Retain Objectives: An Efficient LLM Unlearning Framework from Logit
  Difference", NeurIPS 2024, arXiv 2406.08607): z = z_T + w·m⊙z_A, w < 0 (−0.8 in the TOFU evaluation of
  UCSB-NLP-Chang/ULD ``bashes/tofu/uld_train.sh``; −1 in ``configs/model_mode/uld.yaml``).
* Offset unlearning (Huang et al., "Offset Unlearning for Large Language Models", arXiv 2404.11045):
  z = z_T + w·m⊙(z_A − z_A⁰), w = 1; the offset is 0 until the assistant trains, so the model starts as the
  target.

The relative-top filter m (τ = ``relative_top``; 0 = off, m = 1): the assistant term acts only on tokens
the target finds plausible, log p_T(v) ≥ min(max_u log p_T(u) + log τ, ℓ_(k)), where ℓ_(k) is the k-th
largest log p_T with k = max(1, ⌊τ·|V|⌋). The ⌊τ·|V|⌋ floor is the public ULD code's
(``uld/model/gen_util.py`` ``relative_top_filter``; DoLa, which it adapts, keeps at least one token): it
keeps at least that many tokens. Filtered tokens keep the target's logit when the model is scored (the
public code's ``contrastllm.py`` forward, which TOFU's metrics see) and are never chosen in greedy
generation (its ``greedy_search`` sets them to −1e3; here −∞).

The combined model is one ``torch.nn.Module`` that the whole engine accepts: ``forward`` returns
``.logits`` and a key/value cache (:class:`CacheGroup`, one cache per part, which the scoring code's
prompt sharing reorders), ``generate`` decodes greedily (our metrics and lm-eval's generation tasks;
sampling is refused), and ``config``/``device``/``generation_config`` are the target's (lm-eval's HFLM).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from obliviate.models.adapters import without_adapters

SPEC_FILE = "logit_difference.json"  # in a run folder: how to rebuild the combined model (see models.loading)


@dataclass(frozen=True)
class LogitDifferenceSpec:
    """Everything but weights: the target (a model name or folder), the assistant ('' = the target's first
    ``num_layers`` layers, else a model name or folder; its adapter is saved beside the spec), the weight w,
    the filter τ, and whether the starting assistant is subtracted (Offset)."""

    target: str
    assistant: str
    num_layers: int
    weight: float
    relative_top: float
    offset: bool

    def record(self) -> dict:
        return asdict(self)


def relative_top_kept(target_logits: torch.Tensor, relative_top: float) -> torch.Tensor:
    """Boolean mask [..., V] of the tokens the relative-top filter keeps (all of them when τ = 0)."""
    if relative_top <= 0.0:
        return torch.ones_like(target_logits, dtype=torch.bool)
    log_p = target_logits.float().log_softmax(dim=-1)
    k = max(1, int(relative_top * log_p.shape[-1]))
    kth_largest = log_p.topk(k, dim=-1).values[..., -1:]
    threshold = torch.minimum(log_p.max(dim=-1, keepdim=True).values + math.log(relative_top), kth_largest)
    return log_p >= threshold


def combine_logits(target_logits: torch.Tensor, assistant_term: torch.Tensor, weight: float, relative_top: float,
                   exclude_filtered: bool = False) -> torch.Tensor:
    """z_T + w·m⊙(assistant term), in fp32; filtered tokens keep z_T (or −∞ with ``exclude_filtered``)."""
    target_logits = target_logits.float()
    kept = relative_top_kept(target_logits, relative_top)
    combined = target_logits + weight * assistant_term.float() * kept
    return combined.masked_fill(~kept, -math.inf) if exclude_filtered else combined


class CacheGroup:
    """The key/value caches of the combined model's parts, passed back to ``forward`` as one object."""

    def __init__(self, caches: list) -> None:
        self.caches = caches

    def reorder_cache(self, index: torch.Tensor) -> None:
        for cache in self.caches:
            cache.reorder_cache(index)


class LogitDifferenceModel(torch.nn.Module):
    """z = z_T + w·m⊙z_A (ULD) or z_T + w·m⊙(z_A − z_A⁰) (``offset``); see the module docstring.

    The target runs without a graph unless one of its parameters trains (a fine-tune attack); z_A⁰ always
    runs without one."""

    def __init__(self, target: torch.nn.Module, assistant: torch.nn.Module, spec: LogitDifferenceSpec) -> None:
        super().__init__()
        self.target, self.assistant, self.spec = target, assistant, spec

    @property
    def config(self):
        return self.target.config

    @property
    def generation_config(self):
        return self.target.generation_config

    @property
    def device(self) -> torch.device:
        return next(self.target.parameters()).device

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """The model with the assistant's adapters off: for Offset, exactly the target (its starting point)."""
        with without_adapters(self.assistant):
            yield

    def tie_weights(self) -> None:
        """Each part ties its own embeddings (lm-eval's HFLM calls this on any module it is given)."""
        self.target.tie_weights()

    def _parts(self) -> list[tuple[torch.nn.Module, contextlib.AbstractContextManager, bool]]:
        """(module, context, gradient allowed) of each part, in cache order: target, assistant, initial."""
        target_trains = any(parameter.requires_grad for parameter in self.target.parameters())
        parts = [(self.target, contextlib.nullcontext(), target_trains),
                 (self.assistant, contextlib.nullcontext(), True)]
        if self.spec.offset:
            parts.append((self.assistant, without_adapters(self.assistant), False))
        return parts

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: CacheGroup | None = None,
                use_cache: bool = False, logits_to_keep: int | torch.Tensor = 0, exclude_filtered: bool = False,
                **unused) -> CausalLMOutputWithPast:
        """Combined logits of ``input_ids`` (and, with ``use_cache``, the parts' caches)."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "use_cache": use_cache, "logits_to_keep": logits_to_keep}
        parts = self._parts()
        caches = past_key_values.caches if past_key_values is not None else [None] * len(parts)
        logits, new_caches = [], []
        for (module, context, with_grad), cache in zip(parts, caches):
            with context, torch.set_grad_enabled(with_grad and torch.is_grad_enabled()):
                output = module(**inputs, past_key_values=cache)
            logits.append(output.logits)
            new_caches.append(output.past_key_values)
        assistant_term = logits[1] - logits[2] if self.spec.offset else logits[1]
        combined = combine_logits(logits[0], assistant_term, self.spec.weight, self.spec.relative_top,
                                  exclude_filtered)
        return CausalLMOutputWithPast(logits=combined, past_key_values=CacheGroup(new_caches) if use_cache else None)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int | None = None, max_length: int | None = None, stopping_criteria=None,
                 pad_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, **unused) -> torch.Tensor:
        """Greedy (or, with ``do_sample``, nucleus-sampled) decoding of left-padded prompts (the sequences, prompts
        included, as ``generate`` returns): stops at EOS, at ``stopping_criteria`` (lm-eval's stop strings) or
        after the token budget."""
        budget = max_new_tokens if max_new_tokens is not None else (max_length or 0) - input_ids.shape[1]
        eos = eos_token_id if eos_token_id is not None else self.generation_config.eos_token_id
        eos_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=input_ids.device)
        pad = pad_token_id if pad_token_id is not None else (eos_ids[0].item() if len(eos_ids) else 0)
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        sequences = input_ids
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        output = self(sequences, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                      exclude_filtered=True)
        for _ in range(max(budget, 0)):
            logits = output.logits[:, -1]
            chosen = nucleus_sample(logits, temperature, top_p) if do_sample else logits.argmax(dim=-1)
            chosen = chosen.masked_fill(finished, pad)
            sequences = torch.cat([sequences, chosen[:, None]], dim=1)
            finished |= torch.isin(chosen, eos_ids)
            if stopping_criteria is not None:
                finished |= torch.as_tensor(stopping_criteria(sequences, None), device=finished.device)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones_like(chosen[:, None])], dim=1)
            positions = positions[:, -1:] + 1
            output = self(chosen[:, None], attention_mask=mask, position_ids=positions,
                          past_key_values=output.past_key_values, use_cache=True, exclude_filtered=True)
        return sequences


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row from softmax(logits / T), restricted to the smallest set of most likely tokens whose
    probability reaches ``top_p`` (Holtzman et al. 2020, nucleus sampling); the torch RNG decides."""
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    ordered, order = probabilities.sort(dim=-1, descending=True)
    outside = ordered.cumsum(-1) - ordered >= top_p  # tokens after the nucleus is full
    ordered = ordered.masked_fill(outside, 0.0)
    return order.gather(-1, torch.multinomial(ordered, 1)).squeeze(-1)
