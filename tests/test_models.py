"""Model sources: the embedded default, tiny-random-llama, folders and hub ids."""

import json

import pytest
import torch

from obliviate.errors import UserError
from obliviate.models.embedded import tiny_random_llama
from obliviate.models.loading import load_model, resolve_model


def test_embedded_default_answers_paris(smollm2_dir, cache_dir):
    model, tokenizer = load_model(resolve_model("smollm2-135m-instruct"), cache_dir, torch.device("cpu"), torch.float32)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1]:])


def test_prepared_folder_is_a_plain_safetensors_model(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and (smollm2_dir / "model.safetensors").is_file()
    assert resolve_model(str(smollm2_dir)).kind == "folder"


def test_tiny_random_llama_is_identical_every_time(tokenizer):
    first, second = tiny_random_llama(tokenizer), tiny_random_llama(tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert first.config.vocab_size == len(tokenizer)


def test_folder_without_config(tmp_path):
    with pytest.raises(UserError, match=r"model folder '.*' has no config\.json"):
        resolve_model(str(tmp_path))


def test_folder_that_is_not_a_causal_lm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(UserError, match=r"is a 'bert' model \(BertModel\), not a causal language model"):
        resolve_model(str(tmp_path))


def test_hub_id_while_offline_says_how_to_point_at_a_local_copy():
    with pytest.raises(UserError, match=r"model 'someone/absent-model' looks like a hub id but the hub is offline.*"
                                        r"pass the local folder as --overall.model_name"):
        resolve_model("someone/absent-model")


def test_name_that_is_nothing():
    with pytest.raises(UserError, match=r"model 'smollm3' is not an embedded model"):
        resolve_model("smollm3")
