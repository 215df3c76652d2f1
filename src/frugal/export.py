"""`frugal export`: the trained model as a merged Hugging Face directory or a GGUF file.

Merged: PEFT folds the LoRA weights into the base (`merge_and_unload`) and transformers saves
safetensors, the tokenizer and its chat template. GGUF: the merged weights are written with the
`gguf` package (f32, f16, q8_0 or q4_0 for the 2-D weights) under llama.cpp's tensor names,
with the model's hyper-parameters and its BPE tokenizer (and how it splits text) as metadata, so
llama.cpp-based runtimes and transformers' `gguf_file=` loader read it. GGUF export covers the
Llama architecture (SmolLM2, Llama, and the like).

Both are written under a temporary name next to the destination and renamed into place when
complete, so a full disk, a crash or an error never leaves a truncated `.gguf` or a half-written
model directory at the path a runtime would load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from frugal.run_files import atomic_dir, atomic_path
from frugal.settings.engines import GGUF_TYPES

# Raised whenever what save_gguf writes changes, so GGUF caches keyed by it export again.
GGUF_EXPORT_VERSION = 2


def load_merged(run_dir: Path, adapter: str | None = None, model: str | None = None) -> Any:
    """Base + adapter merged into one plain transformers model (LoadedModel)."""
    from frugal.adapters import base_model_of, find_adapter, run_adapters
    from frugal.models import LoadedModel, load_model

    run_dir = Path(run_dir)
    known = run_adapters(run_dir)
    if adapter is None:
        if not known:
            raise FileNotFoundError(f"{run_dir} has no adapters/ to export. Fix: run "
                                    "`frugal train` first.")
        adapter = "default" if "default" in known else next(iter(known))
    name, path = find_adapter(run_dir, adapter)
    loaded = load_model(model or base_model_of(path))
    from peft import PeftModel

    merged = PeftModel.from_pretrained(loaded.model, str(path)).merge_and_unload()
    merged.eval()
    return LoadedModel(spec=f"{loaded.spec}+{name}", path=loaded.path, model=merged,
                       tokenizer=loaded.tokenizer)


def save_merged(loaded: Any, directory: Path) -> Path:
    """Write the merged model to `directory`, which it replaces whole: refused when that is a
    file or a non-empty directory other than a model (no config.json), so nothing else in it
    is deleted."""
    directory = Path(directory)
    if directory.is_file() or (directory.is_dir() and any(directory.iterdir())
                               and not (directory / "config.json").is_file()):
        raise ValueError(
            f"{directory} exists and is not a model directory; the export replaces the whole "
            "directory. Fix: pass a new or empty --merged directory."
        )
    with atomic_dir(directory) as staging:
        loaded.model.save_pretrained(staging, safe_serialization=True)
        loaded.tokenizer.save_pretrained(staging)  # carries the chat template
    return directory


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder the rows of a q/k projection from Hugging Face's rotary layout (halves) to
    llama.cpp's (interleaved pairs); GGUF readers undo exactly this."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def save_gguf(loaded: Any, path: Path, kind: str = "f16") -> Path:
    import gguf

    if kind not in GGUF_TYPES:
        raise ValueError(f"GGUF type {kind!r} is not supported; choose one of {GGUF_TYPES}")
    config = loaded.model.config
    if config.model_type != "llama":
        raise ValueError(
            f"GGUF export supports the llama architecture; this model is {config.model_type!r}. "
            "Fix: export --merged and convert with llama.cpp's convert_hf_to_gguf.py."
        )
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
        raise ValueError(
            f"GGUF export does not write rope scaling ({scaling}). Fix: export --merged and "
            "convert with llama.cpp's convert_hf_to_gguf.py."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as staging:
        writer = gguf.GGUFWriter(str(staging), "llama")
        try:
            _write_gguf(writer, loaded, kind)
        finally:
            writer.close()
    return path


def _write_gguf(writer: Any, loaded: Any, kind: str) -> None:
    """Hyper-parameters, tokenizer and tensors of the merged model, through `writer`."""
    import gguf

    config = loaded.model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    writer.add_name(Path(str(loaded.spec)).name)
    layers = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_block_count(layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None)
                                    or config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[kind]
    writer.add_file_type(file_type)
    _add_tokenizer(writer, loaded.tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, tensor in loaded.model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # readers tie it back to the embeddings
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if data.ndim == 1 or kind == "f32":  # norms stay float32, as llama.cpp writes them
            writer.add_tensor(name, data.astype(np.float32))
        elif kind == "f16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            # q4_0 keeps the token embeddings in q8_0: tied, they are also the output layer,
            # whose rounding moves every logit (llama.cpp's own quantizer keeps that layer at
            # higher precision too).
            target = "q8_0" if name in ("token_embd.weight", "output.weight") else kind
            quant = gguf.GGMLQuantizationType[target.upper()]
            quantized = gguf.quants.quantize(data.astype(np.float32), quant)
            writer.add_tensor(name, quantized, raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """The byte-level BPE vocabulary, merges, special ids and chat template, as llama.cpp
    stores GPT-2-style tokenizers (SmolLM2, Llama 3, Qwen)."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ValueError(
            "GGUF export writes byte-level (GPT-2 style) BPE tokenizers; this one is "
            f"{model.get('type')}{' with byte fallback' if model.get('byte_fallback') else ''}. "
            "Fix: export --merged and convert with llama.cpp's convert_hf_to_gguf.py."
        )
    vocab: dict[str, int] = dict(model["vocab"])
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    size = max(max(vocab.values()) + 1, vocab_size)  # embedding rows beyond the vocab
    tokens = [f"[PAD{i}]" for i in range(size)]
    for token, index in vocab.items():
        tokens[index] = token
    special = {a["id"] for a in data.get("added_tokens", []) if a.get("special")}
    # 1: normal, 3: control (llama.cpp's token types).
    types = [3 if i in special else 1 for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(data))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            setter(token_id)
    writer.add_add_bos_token(False)  # the chat template writes its own start tokens
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _pre_tokenizer(data: dict[str, Any]) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE. Without it llama.cpp
    falls back to its own default split, which tokenizes text differently (SmolLM2's "74 + 54"
    and "don't" among others): frugal sends token ids, but a runtime given text would not."""
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get(
            "add_prefix_space"):
        return "gpt-2"  # GPT-2's regular expression, as SmolLM2's tokenizer has it
    raise ValueError(
        "GGUF export writes tokenizers that split text as GPT-2 does (byte-level, its regular "
        f"expression); this one splits with {json.dumps(pre)[:300]}. Fix: export --merged and "
        "convert with llama.cpp's convert_hf_to_gguf.py."
    )
