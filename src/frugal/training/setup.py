"""The model and PEFT configuration `frugal train` hands to TRL's SFTTrainer."""

from __future__ import annotations

import importlib.util
from typing import Any

from frugal.models import LoadedModel, load_model, resolve_model_path


def load_for_training(config: Any) -> LoadedModel:
    """The base model: float32 on the CPU, or 4-bit for QLoRA on a CUDA machine."""
    if config.method != "qlora":
        return load_model(config.model)
    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            "QLoRA needs a CUDA GPU and the bitsandbytes package "
            f"(CUDA available: {torch.cuda.is_available()}, bitsandbytes installed: "
            f"{importlib.util.find_spec('bitsandbytes') is not None}). Fix: use --method lora, "
            "or on a GPU machine `pip install bitsandbytes`."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    path = resolve_model_path(config.model)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization)
    return LoadedModel(config.model, path, model, AutoTokenizer.from_pretrained(path))


def peft_config(config: Any) -> Any:
    """A PEFT LoraConfig for lora and qlora; None trains every weight."""
    if config.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
