"""Model resolution is offline: the embedded SmolLM2 converts once and generates; missing models fail clearly."""

import json

import pytest

from botlab.models import ModelNotFound, resolve_model


def test_builtin_folder_is_plain_hf(builtin_model_dir):
    config = json.loads((builtin_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (builtin_model_dir / "model.safetensors").is_file()
    assert resolve_model("builtin:smollm2-135m") == builtin_model_dir


@pytest.mark.slow
def test_builtin_generates_offline(builtin_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    model = AutoModelForCausalLM.from_pretrained(builtin_model_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt"
    )
    if not hasattr(ids, "shape"):
        ids = ids["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text


def test_unknown_builtin():
    with pytest.raises(ModelNotFound, match="unknown builtin model 'builtin:gpt5'"):
        resolve_model("builtin:gpt5")


def test_uncached_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="not in the Hugging Face cache and botlab never downloads"):
        resolve_model("nobody/no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model(str(tmp_path))
