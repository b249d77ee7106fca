"""The quantization attack's rounding: torchao's weight-only integers are round-to-nearest symmetric ones per
group of inputs, as computed here by hand; the output head is untouched."""

import pytest
import torch

from obliviate.attacks import QUANTIZATION_GROUP, quantize_weights
from obliviate.models.embedded import tiny_random_llama


def round_to_nearest(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """By hand, torchao's symmetric mapping: per group of inputs, scale = max|w| / ((q_max − q_min) / 2) and
    w ≈ scale · clamp(round(w / scale), q_min, q_max). Also the scale and w / scale of every weight."""
    q_min, q_max = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    groups = weight.reshape(weight.shape[0], -1, QUANTIZATION_GROUP)
    scale = groups.abs().amax(dim=-1, keepdim=True) / ((q_max - q_min) / 2)
    rounded = torch.clamp(torch.round(groups / scale), q_min, q_max) * scale
    return rounded.reshape(weight.shape), scale.expand_as(groups).reshape(weight.shape), (groups / scale).reshape(
        weight.shape)


@pytest.mark.parametrize("bits", [8, 4])
def test_weights_are_rounded_per_group_and_the_head_is_kept(tokenizer, bits):
    model = tiny_random_llama(tokenizer)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    quantize_weights(model, bits)
    down = "model.layers.0.mlp.down_proj.weight"
    expected, scale, ratio = round_to_nearest(before[down], bits)
    differs = (model.state_dict()[down] - expected).abs() > 1e-6
    # equal except where w / scale is a tie (x.5: the group's extreme is exactly −(q_max + 0.5)), which may round
    # either way: one step apart there
    assert ((ratio.abs() - ratio.abs().floor() - 0.5).abs()[differs] < 1e-3).all()
    assert ((model.state_dict()[down] - expected).abs()[differs] <= scale[differs] * 1.001).all()
    assert differs.float().mean() < 0.05 and not torch.equal(model.state_dict()[down], before[down])
    assert all(len(group.unique()) <= 2 ** bits for group in model.state_dict()[down].reshape(-1, QUANTIZATION_GROUP))
    assert torch.equal(model.state_dict()["lm_head.weight"], before["lm_head.weight"])  # tied: embeddings too
    assert torch.equal(model.state_dict()["model.norm.weight"], before["model.norm.weight"])

