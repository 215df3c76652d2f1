"""`frugal export`: merged directory and GGUF both give base + adapter's greedy tokens."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from frugal import export
from frugal.cli import app
from frugal.models import load_model

from .conftest import tiny_model


@pytest.fixture(scope="module")
def run_with_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("export-run")
    base = tiny_model()
    torch.manual_seed(3)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear",
                                            init_lora_weights=False))
    path = run_dir / "adapters" / "default"
    model.save_pretrained(path)
    (path / "frugal-train.json").write_text(json.dumps({"base_model": str(tiny_dir)}))
    return run_dir


def greedy(model: torch.nn.Module, ids: torch.Tensor) -> list[int]:
    return model.generate(ids, max_new_tokens=10, do_sample=False)[0].tolist()


def reference(run_dir: Path, tiny_dir: Path, ids: torch.Tensor) -> list[int]:
    loaded = load_model(str(tiny_dir))
    tuned = PeftModel.from_pretrained(loaded.model, str(run_dir / "adapters" / "default"))
    return greedy(tuned.eval(), ids)


def test_merged_model_matches_base_plus_adapter(run_with_adapter: Path, tiny_dir: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "merged"
    shown = CliRunner().invoke(app, ["export", str(run_with_adapter), "--merged", str(out)])
    assert shown.exit_code == 0, shown.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template  # the chat template travels with the tokenizer
    ids = tokenizer("What is 2 + 3?", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert greedy(merged, ids) == reference(run_with_adapter, tiny_dir, ids)


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_gguf_loads_back_with_the_same_greedy_tokens(run_with_adapter: Path, tiny_dir: Path,
                                                     tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"tiny-{kind}.gguf"
    shown = CliRunner().invoke(app, ["export", str(run_with_adapter), "--gguf", str(out),
                                     "--gguf-type", kind])
    assert shown.exit_code == 0, shown.output
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name,
                                                dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    ids = tokenizer("What is 2 + 3?", return_tensors="pt").input_ids
    assert ids.tolist() == AutoTokenizer.from_pretrained(tiny_dir)(
        "What is 2 + 3?", return_tensors="pt").input_ids.tolist()
    assert greedy(back, ids) == reference(run_with_adapter, tiny_dir, ids)


def test_q4_0_keeps_the_tied_embeddings_in_q8_0(run_with_adapter: Path, tmp_path: Path) -> None:
    """q4_0 quantizes every 2-D weight to 4 bits but the token embeddings, which are also the
    output layer (tied) and stay in q8_0; what loads back is the merged model within each
    type's rounding."""
    import gguf

    out = tmp_path / "tiny-q4_0.gguf"
    shown = CliRunner().invoke(app, ["export", str(run_with_adapter), "--gguf", str(out),
                                     "--gguf-type", "q4_0"])
    assert shown.exit_code == 0, shown.output
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors
             if len(t.shape) == 2}
    assert types.pop("token_embd.weight") == "Q8_0"
    assert set(types.values()) == {"Q4_0"} and len(types) == 7 * 2  # 7 matrices per layer
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name,
                                                dtype=torch.float32).state_dict()
    merged = export.load_merged(run_with_adapter).model.state_dict()
    for name, weight in merged.items():
        if weight.dim() != 2 or name == "lm_head.weight":
            continue
        error = ((back[name] - weight).norm() / weight.norm()).item()
        assert error < (0.01 if name.endswith("embed_tokens.weight") else 0.12), (name, error)


def test_a_tokenizer_llama_cpp_would_split_differently_is_refused_with_the_fix(
        run_with_adapter: Path, tmp_path: Path) -> None:
    from tokenizers import pre_tokenizers

    loaded = export.load_merged(run_with_adapter)
    loaded.tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel()])
    with pytest.raises(ValueError, match="Digits.*convert_hf_to_gguf"):
        export.save_gguf(loaded, tmp_path / "split.gguf")
    assert not (tmp_path / "split.gguf").exists()


def test_export_errors_are_clear(tmp_path: Path) -> None:
    nothing = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert nothing.exit_code == 1 and "nothing to export" in nothing.output
    empty = CliRunner().invoke(app, ["export", str(tmp_path), "--merged", str(tmp_path / "m")])
    assert empty.exit_code == 1 and "no adapters" in empty.output


def test_a_failed_gguf_export_leaves_no_partial_file(run_with_adapter: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    def disk_full(self: gguf.GGUFWriter, *args: object, **kwargs: object) -> None:
        for handle in self.fout or []:
            handle.write(b"\0" * 4096)  # part of the tensors reached the disk, then:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    loaded = export.load_merged(run_with_adapter)
    old = tmp_path / "old.gguf"
    old.write_bytes(b"the previous, complete export")
    with pytest.raises(OSError, match="No space"):
        export.save_gguf(loaded, old)
    assert old.read_bytes() == b"the previous, complete export"
    new = tmp_path / "new.gguf"
    shown = CliRunner().invoke(app, ["export", str(run_with_adapter), "--gguf", str(new)])
    assert shown.exit_code == 1 and isinstance(shown.exception, SystemExit)  # no traceback
    assert "error:" in shown.output and "No space left on device" in shown.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.gguf"]  # no new.gguf, no temp


def test_a_failed_merged_export_keeps_the_old_directory(run_with_adapter: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = export.load_merged(run_with_adapter)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text('{"previous": true}')

    def crash(directory: str | Path, *args: object, **kwargs: object) -> None:
        (Path(directory) / "tokenizer.json").write_text('{"half')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loaded.tokenizer, "save_pretrained", crash)
    with pytest.raises(OSError, match="No space"):
        export.save_merged(loaded, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert json.loads((out / "config.json").read_text()) == {"previous": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no staging left behind
    monkeypatch.undo()
    export.save_merged(loaded, out)  # a previous export is replaced whole
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert "previous" not in json.loads((out / "config.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not a model directory.*Fix: pass a new or empty"):
        export.save_merged(loaded, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
