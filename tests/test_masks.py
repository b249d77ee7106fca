"""Masks: exact streaming selection, each score against an independent computation, files, application."""

import json
import pickle

import pytest
import torch
from accelerate import Accelerator

from obliviate.config.sections import Mask
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat, encode_dataset
from obliviate.errors import UserError
from obliviate.masks import selection
from obliviate.masks.build import build_mask, select_names
from obliviate.masks.mask import ParameterMask
from obliviate.masks.scores import MASK_SCORES, ScoringInputs
from obliviate.methods import METHODS
from obliviate.methods.objective import PrepareContext
from obliviate.models.embedded import tiny_random_llama
from obliviate.models.loading import shapes_of
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig


def dataset(tokenizer, offset, n=6):
    examples = [Example(f"Who is person {i}?", f"Person {i} bakes {i * 7} pies.") for i in range(offset, offset + n)]
    return encode_dataset(tokenizer, examples, PromptFormat(), 32)


@pytest.fixture
def tiny(tokenizer):
    return tiny_random_llama(tokenizer), dataset(tokenizer, 0), dataset(tokenizer, 100)


LINEARS = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]


def inputs_for(model, forget, retain, names=LINEARS, mu=1e-3):
    parameters = dict(model.named_parameters())
    return ScoringInputs(model, {n: parameters[n] for n in names}, forget, retain, batch_size=4, mu=mu, seed=0)


def hf_loss_gradients(model, data, batches, names):
    """Independent G: Σ over batches of ∇ of transformers' own loss (mean token NLL), with torch.autograd.grad."""
    parameters = dict(model.named_parameters())
    total = {n: torch.zeros_like(parameters[n]) for n in names}
    for rows in batches:
        batch = data.collate([data[row] for row in rows])
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        for n, g in zip(names, torch.autograd.grad(loss, [parameters[n] for n in names])):
            total[n] += g
    return total


def wagle_pairing(forget_size, retain_size, batch_size=4, seed=0):
    """WAGLE's generate_mask.py pairing (a data set as long as the forget set, each forget example with a random
    retain one), by the documented recipe: forget order randperm, partners randint, both from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(forget_size, generator=generator).tolist()
    partners = torch.randint(retain_size, (forget_size,), generator=generator).tolist()
    cut = range(0, forget_size, batch_size)
    return [order[i:i + batch_size] for i in cut], [partners[i:i + batch_size] for i in cut]


# ---------------------------------------------------------------- selection
@pytest.mark.parametrize("ratio", [0.0, 0.001, 0.3, 0.8, 0.999, 1.0])
def test_global_selection_is_exact_even_with_ties(monkeypatch, ratio):
    monkeypatch.setattr(selection, "MAX_CANDIDATES", 500)  # force several histogram rounds
    generator = torch.Generator().manual_seed(1)
    scores = [torch.randn(300, 70, generator=generator).abs(),
              torch.randint(0, 4, (9000,), generator=generator).float(), torch.rand(333, generator=generator)]
    masks = selection.top_fraction(scores, ratio)
    values, kept = torch.cat([s.flatten() for s in scores]), torch.cat([m.flatten() for m in masks])
    k = round(ratio * values.numel())
    assert int(kept.sum()) == k
    if 0 < k < values.numel():
        kth = torch.sort(values, descending=True).values[k - 1]
        assert values[kept].min() >= kth and values[~kept].max() <= kth


def test_row_selection_keeps_the_top_of_every_row():
    score = torch.tensor([[1.0, 5.0, 3.0, 2.0], [9.0, 0.0, 8.0, 7.0]])
    expected = [[False, True, True, False], [True, False, True, False]]
    assert selection.top_fraction_per_row(score, 0.5).tolist() == expected


def test_name_patterns():
    names = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.input_layernorm.weight"]
    assert select_names(names, [], ["embed", "norm"]) == ["model.layers.0.mlp.up_proj.weight"]
    assert select_names(names, ["mlp"], []) == ["model.layers.0.mlp.up_proj.weight"]
    with pytest.raises(UserError, match="select no parameter"):
        select_names(names, ["attn"], [])


# ---------------------------------------------------------------- scores
def test_magnitude_and_random_scores(tiny):
    model, forget, retain = tiny
    inputs = inputs_for(model, forget, retain)
    magnitude = MASK_SCORES.get("magnitude")(inputs)
    assert all(torch.equal(magnitude[n], dict(model.named_parameters())[n].detach().abs()) for n in LINEARS)
    first, second = MASK_SCORES.get("random")(inputs), MASK_SCORES.get("random")(inputs)
    assert all(torch.equal(first[n], second[n]) and 0 <= first[n].min() and first[n].max() < 1 for n in LINEARS)


def test_grad_score_is_abs_forget_gradient(tiny):
    model, forget, retain = tiny
    expected = hf_loss_gradients(model, forget, wagle_pairing(len(forget), len(retain))[0], LINEARS)
    scores = MASK_SCORES.get("grad")(inputs_for(model, forget, retain))
    for name in LINEARS:
        assert torch.allclose(scores[name], expected[name].abs(), atol=1e-7)
        assert dict(model.named_parameters())[name].grad is None  # no gradient left behind


def test_wagle_score_follows_wagle_pairing(tokenizer):
    """|(θ − G_r/μ) ⊙ G_f| with G_r summed over as many retain batches as forget batches, as WAGLE's
    generate_mask.py (OPTML-Group/WAGLE src/unlearn/generate_mask.py, snip_advanced over UnlearnDataset, whose
    length is the forget set's and whose retain item is drawn at random): a retain set 4x the forget set."""
    model = tiny_random_llama(tokenizer)
    forget, retain = dataset(tokenizer, 0, n=6), dataset(tokenizer, 100, n=24)
    forget_batches, retain_batches = wagle_pairing(len(forget), len(retain))
    assert len(retain_batches) == len(forget_batches) == 2  # not the 6 batches of the whole retain set
    g_forget = hf_loss_gradients(model, forget, forget_batches, LINEARS)
    g_retain = hf_loss_gradients(model, retain, retain_batches, LINEARS)
    parameters = dict(model.named_parameters())
    scores = MASK_SCORES.get("wagle")(inputs_for(model, forget, retain, mu=1e-3))
    for name in LINEARS:
        expected = ((parameters[name].detach() - g_retain[name] / 1e-3) * g_forget[name]).abs()
        assert torch.allclose(scores[name], expected, rtol=1e-4, atol=1e-9)
        assert scores[name].dtype == torch.float32


def test_wagle_scores_are_fp32_for_a_bf16_model(tiny):
    model, forget, retain = tiny
    scores = MASK_SCORES.get("wagle")(inputs_for(model.to(torch.bfloat16), forget, retain))
    assert all(scores[n].dtype == torch.float32 for n in LINEARS)


def test_wanda_score_uses_input_norms_over_real_tokens_only(tiny):
    model, forget, retain = tiny
    name = "model.layers.0.self_attn.q_proj.weight"
    layer = model.model.layers[0]
    squares = torch.zeros(model.config.hidden_size)
    with torch.no_grad():
        for encoded, _ in forget:  # one unpadded sequence at a time: no padding at all
            hidden = layer.input_layernorm(model.model.embed_tokens(torch.tensor([encoded.input_ids])))
            squares += hidden[0].pow(2).sum(0)
    score = MASK_SCORES.get("wanda")(inputs_for(model, forget, retain, names=[name]))[name]
    expected = layer.self_attn.q_proj.weight.detach().abs() * squares.sqrt()[None, :]
    assert torch.allclose(score, expected, rtol=1e-4)


def test_wanda_refuses_non_linear_parameters(tiny):
    model, forget, retain = tiny
    with pytest.raises(ValueError, match="Linear weights only"):
        MASK_SCORES.get("wanda")(inputs_for(model, forget, retain, names=["model.norm.weight"]))


# ---------------------------------------------------------------- files and checks
def test_safetensors_round_trip_with_metadata(tiny, tmp_path):
    model, forget, retain = tiny
    options = Mask(score="magnitude", ratio=0.5, granularity="tensor", include=["mlp"], exclude=[], mu=1e-6, out="",
                   overwrite=False)
    mask = build_mask(model, forget, retain, options, 4, 0, {"model": "tiny"})
    mask.save(tmp_path / "m.safetensors")
    loaded = ParameterMask.load(tmp_path / "m.safetensors")
    assert loaded.metadata["score"] == "magnitude" and loaded.metadata["model"] == "tiny"
    assert loaded.masks.keys() == mask.masks.keys()
    assert all(torch.equal(loaded.masks[n], mask.masks[n]) for n in mask.masks)
    assert all(m.float().mean() == 0.5 for m in loaded.masks.values())
    loaded.check(shapes_of(model), "m")


def test_wagle_pt_files_load_safely(tiny, tmp_path):
    model, _, _ = tiny
    masks = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in model.named_parameters() if "mlp" in n}
    torch.save(masks, tmp_path / "tofu_0.8.pt")
    assert ParameterMask.load(tmp_path / "tofu_0.8.pt").masks.keys() == masks.keys()

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled arbitrary code",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(UserError, match="is not a plain dict of tensors"):
        ParameterMask.load(tmp_path / "evil.pt")


def test_mask_that_does_not_fit_lists_the_differences(tiny):
    model, _, _ = tiny
    mask = ParameterMask({"model.layers.0.mlp.up_proj.weight": torch.ones(3, 3, dtype=torch.bool),
                          "model.layers.9.mlp.up_proj.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(UserError, match=r"mask 'x' does not fit the model: 1 names not in the model \(e\.g\. "
                                        r"model\.layers\.9.*1 shapes differ "
                                        r"\(model\.layers\.0\.mlp\.up_proj\.weight \(3, 3\) vs \(128, 64\)"):
        mask.check(shapes_of(model), "'x'")


# ---------------------------------------------------------------- application
def train_with(tokenizer, method, mask, weight_decay=0.1):
    torch.manual_seed(0)
    model = tiny_random_llama(tokenizer)
    forget, retain = dataset(tokenizer, 0), dataset(tokenizer, 100)
    params = {"GradDiff": dict(gamma=1.0, alpha=1.0), "NPO": dict(beta=0.1, gamma=1.0, alpha=1.0, retain_loss="nll")}
    objective = METHODS.get(method).build(**params[method])
    datasets = {"forget": forget, "retain": retain}
    objective.prepare(PrepareContext(model, datasets, 4, torch.device("cpu")))
    config = TrainingConfig(lr=1e-2, num_epochs=1, max_steps=3, gradient_accumulation_steps=1,
                            weight_decay=weight_decay, warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0,
                            logging_steps=1, batch_size=2)
    train(model, objective, datasets, "forget", config, Accelerator(cpu=True), 0, mask=mask)
    return model


@pytest.mark.parametrize("method", ["GradDiff", "NPO"])
def test_masked_weights_stay_bit_identical_with_weight_decay(tokenizer, method):
    start = {n: p.detach().clone() for n, p in tiny_random_llama(tokenizer).named_parameters()}
    generator = torch.Generator().manual_seed(5)
    masks = {n: torch.rand(p.shape, generator=generator) < 0.5
             for n, p in start.items() if "layers" in n and p.ndim == 2}
    trained = dict(train_with(tokenizer, method, ParameterMask(masks)).named_parameters())
    for name, before in start.items():
        after = trained[name].detach()
        if name in masks:
            assert torch.equal(after[~masks[name]], before[~masks[name]]), name  # masked: bit-identical
            assert not torch.equal(after[masks[name]], before[masks[name]]), name  # trainable: moved
        else:
            assert torch.equal(after, before), name  # not in the mask file: frozen


def test_weight_decay_inside_masked_tensors_respects_the_no_decay_groups():
    """Norms and biases take no decay (the optimiser's own groups, as HF Trainer), masked or not; matrices do,
    on their trainable elements only: θ ← θ − lr·wd·θ ⊙ mask."""
    model = torch.nn.Module()
    model.proj = torch.nn.Linear(2, 2)
    model.norm = torch.nn.LayerNorm(2)
    torch.nn.init.constant_(model.proj.weight, 2.0)
    masks = {"proj.weight": torch.tensor([[True, False], [False, True]]), "proj.bias": torch.tensor([True, False]),
             "norm.weight": torch.tensor([True, False])}
    mask = ParameterMask(masks)
    mask.attach(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask.before_step(lr=0.1, weight_decay=0.5)
    after = dict(model.named_parameters())
    assert torch.allclose(after["proj.weight"], torch.tensor([[2.0 * (1 - 0.05), 2.0], [2.0, 2.0 * (1 - 0.05)]]))
    assert torch.equal(after["proj.bias"], before["proj.bias"])  # a bias: no decay
    assert torch.equal(after["norm.weight"], before["norm.weight"])  # a norm: no decay
    assert not after["norm.bias"].requires_grad  # not in the mask file: frozen


def test_ratio_one_equals_no_mask(tokenizer):
    full = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in tiny_random_llama(tokenizer).named_parameters()}
    with_mask = train_with(tokenizer, "GradDiff", ParameterMask(full)).state_dict()
    without = train_with(tokenizer, "GradDiff", None).state_dict()
    assert all(torch.equal(with_mask[n], without[n]) for n in without)


def test_statistics(tiny):
    model, _, _ = tiny
    shapes = shapes_of(model)
    name = "model.layers.1.mlp.down_proj.weight"
    mask = ParameterMask({name: torch.ones(shapes[name], dtype=torch.bool)})
    stats = mask.statistics(shapes)
    size = torch.Size(shapes[name]).numel()
    assert stats["trainable_fraction"] == pytest.approx(size / sum(torch.Size(s).numel() for s in shapes.values()))
    assert stats["per_module"]["mlp.down_proj.weight"] == pytest.approx(0.5)  # one of the two layers
    assert stats["per_layer"]["0"] == 0.0 and stats["per_layer"]["other"] == 0.0
    json.dumps(stats)
