"""The quantization attack's rounding against hand-computed values: 8-bit is round-to-nearest with one
symmetric scale per output channel, 4-bit has at most 16 levels per group; output heads are untouched."""

import torch

from obliviate.attacks import quantize_weights
from obliviate.models.embedded import tiny_random_llama

DOWN = "model.layers.0.mlp.down_proj.weight"  # 64 outputs × 128 inputs in the tiny model


def test_eight_bits_is_round_to_nearest_per_output_channel(tokenizer):
    model = tiny_random_llama(tokenizer)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    quantize_weights(model, 8)
    scale = before[DOWN].abs().amax(dim=1, keepdim=True) / 127  # s = max|w| / 127 per row
    expected = torch.round(before[DOWN] / scale) * scale
    assert torch.allclose(model.state_dict()[DOWN], expected, atol=1e-7)
    assert not torch.equal(model.state_dict()[DOWN], before[DOWN])
    assert torch.equal(model.state_dict()["lm_head.weight"], before["lm_head.weight"])  # tied: embeddings too
    assert torch.equal(model.state_dict()["model.norm.weight"], before["model.norm.weight"])


def test_four_bits_has_sixteen_levels_per_group_within_half_a_step(tokenizer):
    model = tiny_random_llama(tokenizer)
    weight = model.state_dict()[DOWN].clone()
    quantize_weights(model, 4)
    rounded = model.state_dict()[DOWN]
    for row, original in zip(rounded, weight):  # 128 inputs: one group per row
        step = (original.max() - original.min()) / 15  # affine: 16 levels from the minimum to the maximum
        assert len(row.unique()) <= 16
        assert (row - original).abs().max() <= step / 2 + 1e-6
