"""The model and PEFT configuration `frugal train` hands to TRL's SFTTrainer."""

from __future__ import annotations

import importlib.util
from typing import Any

from frugal.models import LoadedModel, load_model, resolve_model_path


def load_for_training(config: Any) -> LoadedModel:
    """The base model: 4-bit for QLoRA; for LoRA the frozen weights in `base_dtype`."""
    if config.method != "qlora":
        return load_model(config.model, dtype=base_dtype(config))
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


def base_dtype(config: Any) -> str:
    """LoRA's frozen base: bfloat16 on GPUs that support it, float32 elsewhere. On this
    project's AMX CPU a bfloat16 base trained only 3% faster on 256 GSM8K traces, with a 0.8%
    higher loss and a higher peak memory, so CPUs keep float32 unless asked."""
    if config.base_dtype != "auto":
        return config.base_dtype
    if config.method == "lora" and fast_bf16():
        return "bfloat16"
    return "float32"


def fast_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def score_supervised_positions_only() -> bool:
    """Make TRL's fused LM head score only the supervised positions on every device.

    TRL projects hidden states onto the vocabulary in tiles and, off CUDA/XPU, scores every
    position (prompt and padding included) so that accelerators that compile per shape see
    one shape. Eager CPUs do not recompile, and on SmolLM2 the 49k-word head is about a fifth
    of a step's work, so scoring only the positions with a label saves that share for every
    prompt token. The loss and its gradient are unchanged (ignored positions score zero either
    way). Returns False, changing nothing, when this TRL version has no such switch.
    """
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # pragma: no cover - TRL is a dependency
        return False
    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None or getattr(decide, "frugal_compact", False):
        return decide is not None

    def compact_everywhere(device: Any) -> bool:
        return device.type in ("cpu", "mps") or decide(device)

    compact_everywhere.frugal_compact = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_everywhere
    return True
