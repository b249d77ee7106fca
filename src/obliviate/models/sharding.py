"""Sharded weights with torch's FSDP2 (``overall.sharding fsdp``): every process holds 1/N of each parameter,
its gradient and its optimiser state; a layer's weights are gathered only while it runs.

:func:`shard` applies ``torch.distributed.fsdp.fully_shard`` to each decoder layer and then to the root module
(embeddings, final norm and head, tied or not), over all processes of the run (gloo on CPU, NCCL on GPU). On
CUDA the compute runs in bf16 with fp32 master weights and fp32 gradient reduction (``MixedPrecisionPolicy``);
on CPU in fp32 (bf16 is slower than fp32 on our CPUs). We use torch's FSDP2 directly rather than accelerate's
plugin: accelerate never makes a CPU run FSDP (so it could not be tested here), and FSDP2's module-level API lets
the same code serve LoRA adapters (sharded with their layer), masks (applied to each local shard) and every
evaluation (every process takes part in every forward). The model is left out of ``accelerator.prepare``.

Parameters keep their names; each becomes a ``DTensor`` whose ``to_local()`` is this process's shard, and
:func:`full_state` gathers the whole weights to the CPU of the main process (for ``save_pretrained``).
"""

from __future__ import annotations

import tempfile

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from obliviate.models.anatomy import decoder_layers


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(module, FSDPModule) for module in model.modules())


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` sharded over every process (in place: its layers and the causal LM become FSDP modules). One process
    without a launcher gets a process group of its own (FSDP on one GPU)."""
    device = next(model.parameters()).device
    if not dist.is_initialized():
        with tempfile.NamedTemporaryFile(prefix="obliviate-group-") as rendezvous:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    init_method=f"file://{rendezvous.name}", rank=0, world_size=1)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if device.type == "cuda"
              else MixedPrecisionPolicy())
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    # The root unit is the causal LM itself (inside a peft wrapper: peft's generate calls it directly, so hooks on
    # the wrapper would not run). It too is resharded after each forward: FSDP2 keeps it gathered otherwise, and a
    # forward without a backward (every evaluation) would leave it holding whole tensors in place of its shards.
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    fully_shard(root, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    return model


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of ``model`` whole, on the CPU of the main process (empty elsewhere); every process calls it.
    A tied weight appears once, under its first name, as ``save_pretrained`` writes it."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    tied = ({name for name, _ in model.named_parameters(remove_duplicate=False)}
            - {name for name, _ in model.named_parameters()})
    return {name: tensor for name, tensor in state.items() if name not in tied}


def local_like(full: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """A whole tensor laid out as ``parameter``: its local shard's DTensor when the parameter is sharded (a tensor
    laid out already is returned as it is)."""
    if isinstance(parameter, DTensor) and not isinstance(full, DTensor):
        return distribute_tensor(full.to(parameter.device), parameter.device_mesh, parameter.placements)
    return full.to(parameter.device)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole (every process calls it); a plain tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gradient_sync(model: torch.nn.Module, enabled: bool) -> None:
    """Whether the next backward reduces gradients across processes (off on all but the last micro-batch of an
    accumulated step, as DDP's ``no_sync``)."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)
