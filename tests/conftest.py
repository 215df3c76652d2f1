"""Shared fixtures: real tokenizers and tiny random-weight models built from real configs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from frugal.models import load_tokenizer, resolve_model_path

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"


@pytest.fixture(scope="session", autouse=True)
def _no_gguf_left_behind() -> Any:
    """GGUF exports the tests cause (llama.cpp's tests) are cached by the fingerprints of
    models and adapters made for this session alone, so the cache would gain about 1 GB per
    run: those files go at the end. The packaged models' own files stay, reused next time."""
    from frugal.models import ALIASES, cache_dir

    folder = cache_dir() / "gguf"
    before = set(folder.glob("*.gguf")) if folder.is_dir() else set()
    yield
    for path in set(folder.glob("*.gguf")) - before if folder.is_dir() else ():
        if "+" in path.name or not path.name.startswith(tuple(ALIASES)):
            path.unlink(missing_ok=True)


def tiny_model(spec: str = SMOLLM2, seed: int = 0) -> Any:
    """A 2-layer, hidden-size-64 model of the same architecture and vocabulary as `spec`."""
    config = AutoConfig.from_pretrained(resolve_model_path(spec))
    config.num_hidden_layers = 2
    config.hidden_size = 64
    config.intermediate_size = 128
    config.num_attention_heads = 4
    config.num_key_value_heads = 2
    config.head_dim = 16
    if hasattr(config, "layer_types") and config.layer_types:
        config.layer_types = config.layer_types[:2]
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def lively_model() -> Any:
    """The tiny model with larger random weights (normal, 0.15), which writes varied tokens."""
    model = tiny_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.15)
    return model


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    return load_tokenizer(SMOLLM2)


@pytest.fixture(scope="session")
def gemma3_tokenizer() -> Any:
    return load_tokenizer(GEMMA3)


@pytest.fixture(scope="session")
def think_tokenizer(smollm2_tokenizer: Any) -> Any:
    """SmolLM2's tokenizer with native <think>/</think> tokens added, as Qwen3 and R1 have."""
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    return tokenizer


@pytest.fixture(scope="session")
def smollm2() -> Any:
    """The real SmolLM2 in float32: the model the engine tests compare servers against."""
    from frugal.models import load_model

    return load_model(SMOLLM2, dtype="float32")


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, smollm2: Any) -> Path:
    """A real PEFT LoRA adapter for SmolLM2 with random weights large enough to show."""
    from .engine_cases import random_adapter

    return random_adapter(tmp_path_factory.mktemp("adapters"), smollm2)


@pytest.fixture(scope="session")
def tiny_smollm2() -> Any:
    return tiny_model(SMOLLM2)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    """The tiny SmolLM2-shaped model saved as a Hugging Face directory (a model spec)."""
    path = tmp_path_factory.mktemp("tiny-base")
    tiny_model().save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def lively_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    """The tiny model with larger random weights: the default initialisation writes nothing but
    newlines, which would make every reply the same empty text."""
    model = lively_model()
    path = tmp_path_factory.mktemp("lively-base")
    model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def early_stopper(smollm2_tokenizer: Any) -> Any:
    """A model that often tries to end its thinking and its turn early."""
    model = lively_model()
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for marker in ("<|im_start|>", "<|im_end|>"):
            head[smollm2_tokenizer.convert_tokens_to_ids(marker)] *= 2.5
    return model


@pytest.fixture(scope="session")
def early_dir(tmp_path_factory: pytest.TempPathFactory, early_stopper: Any,
              smollm2_tokenizer: Any) -> Any:
    """The early stopper saved with SmolLM2's tokenizer, as a model directory."""
    path = tmp_path_factory.mktemp("early-stopper")
    early_stopper.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path
