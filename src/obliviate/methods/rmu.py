"""RMU: Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark", arXiv 2403.03218).

With h_ℓ(x) the output of decoder layer ℓ (tokens × hidden size) and u a fixed random unit vector per
forget topic (drawn uniform in [0, 1)^d with ``seed``, then normalised; saved with the run as ``rmu_u``,
one row per topic):

    L = mean_{tokens, dims} (h_ℓ^θ(x_f) − c·u)²  +  α · mean_{tokens, dims} (h_ℓ^θ(x_r) − h_ℓ^ref(x_r))²

Means run over the hidden size and the non-padding tokens. Only the selected parameters train (default:
``mlp.down_proj`` of layers ℓ−2, ℓ−1, ℓ); every other parameter is frozen.

Layer numbering: ℓ indexes the decoder layers from 0 (ℓ = 7 is the eighth layer's output, as in the WMDP
RMU code). G-effect's code (seed 001) names its settings ``rmu_N`` with N counting hidden states, whose 0th
is the embeddings: its ``rmu_N`` is our ``layer`` N − 1.

Topics: the forget set is topic 0; ``extra_topics`` names more forget data sets (e.g. WMDP's bio and
cyber corpora), each with its own u (and its own c under the norm rule). As in the RMU code, successive
micro-batches cycle through the topics: micro-batch k misdirects topic k mod n.

The reference h_ℓ^ref comes from the frozen starting weights WITHOUT a second model: only the trained
parameters differ from the start, so their starting values are kept (a small copy) and swapped in for a
no-grad forward pass that stops at layer ℓ.

Steering coefficient: c = ``steering_coeff`` (absolute; 6.5 for the released zephyr-7b RMU model, whose
4096-wide layer-7 activations it was tuned on), or, when ``steering_norm_multiple`` > 0,
c = steering_norm_multiple × mean per-token ‖h_ℓ^ref(x_f)‖₂ of the starting model on the forget set (the
rule for other models: c is then relative to the model's own activation scale; the c used is logged).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import torch
from accelerate.utils import extract_model_from_parallel
from fastargs import Param

from obliviate.config.checkers import FloatValue, IntValue, ListValue, StrValue
from obliviate.data.tokenize import TokenBatch
from obliviate.errors import UserError
from obliviate.methods.base import METHODS, Method, ModelFacts
from obliviate.methods.objective import Batch, CallCountingTerm, Objective, PrepareContext
from obliviate.models.anatomy import decoder_layers


class _StopForward(Exception):
    pass


ADAPTER_WEIGHT = re.compile(r"\.lora_[AB]\.[^.]+\.weight$")  # peft: <module>.lora_A.<adapter>.weight


def default_trained_layers(layer: int, trained_layers: Sequence[int]) -> list[int]:
    """The trained layers, ℓ−2, ℓ−1, ℓ when none are given."""
    return list(trained_layers) or [layer - 2, layer - 1, layer]


def layers_fit(layer: int, trained_layers: Sequence[int], depth: int) -> bool:
    return 0 <= layer < depth and all(0 <= i < depth for i in trained_layers)


def hidden_at_layer(model: torch.nn.Module, batch: TokenBatch, layer: int) -> torch.Tensor:
    """Output of decoder layer ``layer`` [B, T, d]. The forward pass stops there (later layers never run), except
    through accelerate's DDP wrapper (several processes): DDP readies its gradient averaging only when a forward
    completes, so there the pass runs to the end (the later layers are frozen; only time is lost)."""
    captured: dict[str, torch.Tensor] = {}
    stop_early = extract_model_from_parallel(model) is model

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        if stop_early:
            raise _StopForward

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["h"].float()


def masked_mse(hidden: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """mean over non-padding tokens of mean over dims of (hidden − target)²."""
    per_token = (hidden - target).pow(2).mean(dim=-1)
    mask = attention_mask.float()
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def topic_splits(count: int) -> list[str]:
    """Split names of the extra forget topics (the forget set itself is topic 0)."""
    return [f"topic{i}" for i in range(1, count + 1)]


class RMULoss(CallCountingTerm):
    """The whole RMU objective (forget misdirection + α · retain activation matching) as one term."""

    name = "rmu"
    split = "forget"

    def __init__(self, layer: int, trained_layers: list[int], param_pattern: str, steering_coeff: float,
                 steering_norm_multiple: float, alpha: float, seed: int, extra_topics: int = 0) -> None:
        self.layer, self.param_pattern, self.alpha, self.seed = layer, param_pattern, alpha, seed
        self.trained_layers = default_trained_layers(layer, trained_layers)
        self.steering_norm_multiple = steering_norm_multiple
        self.topics = ["forget", *topic_splits(extra_topics)]
        self.steering_coeffs = [steering_coeff] * len(self.topics)
        self.control: torch.Tensor | None = None  # [topics, hidden size]
        self.starting_values: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.last: dict[str, float] = {}

    @property
    def reads(self) -> set[str]:
        return {*self.topics, "retain"} if self.alpha else set(self.topics)

    def sharding_limit(self, adapters: bool) -> str | None:
        return ("stops the forward pass at layer ℓ and swaps the trained weights for their starting values, which "
                "sharded (gathered-per-layer) weights do not allow")

    def trained_names(self, names: list[str]) -> list[str]:
        """The parameters that train: those matching the pattern in the trained layers or, with LoRA, the
        adapters of the modules whose weights match (their starting values give the starting model)."""
        layers = "|".join(str(i) for i in self.trained_layers)
        pattern = re.compile(rf"\.(?:layers|h)\.({layers})\..*{self.param_pattern}")
        adapters = [n for n in names if ADAPTER_WEIGHT.search(n)]
        return [n for n in adapters or names if pattern.search(ADAPTER_WEIGHT.sub(".weight", n))]

    @contextlib.contextmanager
    def starting_weights(self) -> Iterator[None]:
        """Swap the starting values into the trained parameters (no copy of the rest of the model)."""
        current = [parameter.data for parameter, _ in self.starting_values]
        for parameter, start in self.starting_values:
            parameter.data = start
        try:
            yield
        finally:
            for (parameter, _), data in zip(self.starting_values, current):
                parameter.data = data

    @torch.no_grad()
    def prepare(self, context: PrepareContext) -> None:
        model = context.model
        count = len(decoder_layers(model))
        if not layers_fit(self.layer, self.trained_layers, count):
            raise UserError(f"RMU layer {self.layer} / trained layers {self.trained_layers} outside the model's "
                            f"{count} layers; set unlearn.RMU.layer and unlearn.RMU.trained_layers")
        parameters = dict(model.named_parameters())
        names = self.trained_names(list(parameters))
        if not names:
            raise UserError(f"unlearn.RMU.param_pattern '{self.param_pattern}' matches no parameter of layers "
                            f"{self.trained_layers} (with LoRA: no adapter; add the module to lora.target_modules)")
        for name, parameter in parameters.items():
            parameter.requires_grad_(name in names)
        self.starting_values = [(parameters[n], parameters[n].detach().clone()) for n in names]
        generator = torch.Generator().manual_seed(self.seed)
        control = torch.rand(len(self.topics), model.config.hidden_size, generator=generator)
        self.control = (control / control.norm(dim=-1, keepdim=True)).to(context.device)
        if self.steering_norm_multiple > 0:
            self.steering_coeffs = [self.steering_norm_multiple * self._mean_norm(model, context, topic)
                                    for topic in self.topics]

    def _mean_norm(self, model: torch.nn.Module, context: PrepareContext, split: str) -> float:
        """Mean per-token ‖h_ℓ‖ of the starting model on a split's non-padding tokens."""
        norms, tokens = 0.0, 0.0
        for batch in context.datasets[split].loader(context.batch_size):
            batch = batch.to(context.device)
            mask = batch.attention_mask.float()
            norms += float((hidden_at_layer(model, batch, self.layer).norm(dim=-1) * mask).sum())
            tokens += float(mask.sum())
        return norms / tokens

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        if self.control is None:
            raise RuntimeError("RMULoss.prepare() must run before training")
        topic = self.calls % len(self.topics)
        self.calls += 1
        forget = batch[self.topics[topic]]
        forget_loss = masked_mse(hidden_at_layer(model, forget, self.layer),
                                 self.steering_coeffs[topic] * self.control[topic], forget.attention_mask)
        total = forget_loss
        self.last = {"rmu_forget": forget_loss.item(), "rmu_c": self.steering_coeffs[topic], "rmu_topic": topic}
        if self.alpha:
            retain = batch["retain"]
            with torch.no_grad(), self.starting_weights():
                reference = hidden_at_layer(model, retain, self.layer)
            retain_loss = masked_mse(hidden_at_layer(model, retain, self.layer), reference, retain.attention_mask)
            total = total + self.alpha * retain_loss
            self.last["rmu_retain"] = retain_loss.item()
        return total

    def extra_logs(self) -> dict[str, float]:
        return self.last

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {"rmu_u": self.control} if self.control is not None else {}


@METHODS.register("RMU")
class RMU(Method):
    """RMU: misdirect layer-ℓ activations of forget data to c·u, keep retain activations."""

    params = {
        "layer": Param(IntValue(low=0), "ℓ: decoder layer whose output is steered (zephyr-7b: 7)", default=7),
        "trained_layers": Param(ListValue(IntValue(low=0)), "layers whose matching parameters train "
                                "(empty = ℓ−2, ℓ−1, ℓ)", default=[]),
        "param_pattern": Param(StrValue(), "regex of trained parameter names within those layers",
                               default=r"mlp\.down_proj\.weight"),
        "steering_coeff": Param(FloatValue(low=0.0), "c, absolute (6.5 for the released zephyr-7b model)",
                                default=6.5),
        "steering_norm_multiple": Param(FloatValue(low=0.0), "if > 0: c = this × mean ‖h_ℓ‖ of the starting "
                                        "model on forget tokens (for models other than 7B)", default=0.0),
        "alpha": Param(FloatValue(low=0.0), "α: weight of retain activation matching (zephyr: 1200)",
                       default=1200.0),
        "seed": Param(IntValue(low=0), "seed of the random control vectors u", default=0),
        "extra_topics": Param(ListValue(StrValue()), "more forget data sets, each a topic with its own u "
                              "(the forget set is the first topic); micro-batches cycle through topics", default=[]),
    }

    @staticmethod
    def build(extra_topics: Sequence[str] = (), **values) -> Objective:
        return RMULoss(**values, extra_topics=len(extra_topics)) * 1.0

    def check(self, model: ModelFacts) -> None:
        layer, depth, name = self.values["layer"], model.depth, self.name
        trained = default_trained_layers(layer, self.values["trained_layers"])
        if not layers_fit(layer, trained, depth):
            raise UserError(f"unlearn.{name}.layer {layer} / trained_layers {trained} reach beyond the model's "
                            f"{depth} decoder layers (0 to {depth - 1}); set unlearn.{name}.layer and "
                            f"unlearn.{name}.trained_layers within them")

    def datasets(self) -> dict[str, str]:
        topics = self.values["extra_topics"]
        return dict(zip(topic_splits(len(topics)), topics))
