"""What the tests of real engines (vLLM, llama.cpp) share: the prompts, a random LoRA adapter
for SmolLM2, and the budget-forcing invariants every engine must keep."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from frugal.generation import BudgetConfig, GenerationResult

from .conftest import SMOLLM2

QUESTIONS = [
    f"What is {a} {op} {b}?" for a, b in [(74, 54), (12, 9), (130, 45), (7, 8)]
    for op in ("+", "-", "times", "divided by")
] + [f"How many days are in {n} weeks?" for n in range(2, 18)]  # 32 prompts

# For a model that often tries to end its thinking and its turn early (conftest's
# early_stopper): together these take every branch of budget forcing.
BRANCH_QUESTIONS = [f"What is {i} plus {3 * i + 1}?" for i in range(8)]
BRANCH_BUDGETS = [
    BudgetConfig(max_thinking_tokens=40, min_thinking_tokens=10, num_waits=1,
                 max_answer_tokens=12),
    BudgetConfig(max_thinking_tokens=6, max_answer_tokens=5),  # the cap forces the answer
    BudgetConfig(max_thinking_tokens=30, num_waits=3, max_answer_tokens=12),
    BudgetConfig(max_thinking_tokens=12, min_thinking_tokens=12, max_answer_tokens=2,
                 answer_prefix="Final Answer:"),  # a prefix longer than the answer cap
]
BRANCH_IDS = ["min-and-wait", "cap", "waits", "prefix-cap"]

INVARIANT_BUDGETS = {
    "minimum": BudgetConfig(max_thinking_tokens=48, min_thinking_tokens=24,
                            max_answer_tokens=16),
    "two-waits": BudgetConfig(max_thinking_tokens=64, num_waits=2, max_answer_tokens=16),
    # SmolLM2 before training closes its thinking at once: a minimum up to the cap makes it
    # think until the cap forces the answer.
    "cap": BudgetConfig(max_thinking_tokens=12, min_thinking_tokens=12, max_answer_tokens=8),
}


def random_adapter(directory: Path, smollm2: Any) -> Path:
    """A real PEFT LoRA adapter for SmolLM2 with random weights large enough to show."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(smollm2.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
    ))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    path = directory / "shouty"
    model.save_pretrained(path)
    config = json.loads((path / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = SMOLLM2
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def check_budget_invariants(results: list[GenerationResult], budget: BudgetConfig) -> None:
    for result in results:
        assert result.thinking_tokens <= budget.max_thinking_tokens
        assert result.answer_tokens <= budget.max_answer_tokens
        if not result.forced_max:
            # The model stopped on its own: the minimum was reached first, and it was sent
            # back to thinking exactly num_waits times (plus any the minimum needed).
            assert result.thinking_tokens >= budget.min_thinking_tokens
            if budget.min_thinking_tokens == 0:
                assert result.waits == budget.num_waits
        assert result.text.count(budget.wait_text) >= result.waits
        if result.forced_max:  # the cap: thinking ends exactly there, the prefix is forced
            assert result.thinking_tokens == budget.max_thinking_tokens
            assert result.answer.startswith(budget.answer_prefix[: len(result.answer)])
    if budget.min_thinking_tokens == budget.max_thinking_tokens:
        assert all(r.forced_max for r in results)
    print(f"\n{budget.max_thinking_tokens}/{budget.min_thinking_tokens}/{budget.num_waits}: "
          f"thinking {[r.thinking_tokens for r in results]}, waits {[r.waits for r in results]}")


def check_eval_on_engine(run_dir: Path, engine_options: list[str]) -> None:
    """`frugal eval` on an engine writes what a local evaluation writes: the same rows, near
    the same answers (float32 greedy on two engines: at most a near-tie apart), the summary
    and the plot."""
    from typer.testing import CliRunner

    from frugal.cli import app
    from frugal.run_files import EVAL_DIR, RESULTS, SCALING_PLOT, SUMMARY

    common = ["eval", "--run", str(run_dir), "--model", SMOLLM2, "--limit", "6",
              "--max-thinking-tokens", "16,32", "--max-answer-tokens", "12"]
    local = CliRunner().invoke(app, [*common, "--label", "local", "--dtype", "float32",
                                     "--batch-size", "1"])
    assert local.exit_code == 0, local.output
    remote = CliRunner().invoke(app, [*common, "--label", "remote", *engine_options])
    assert remote.exit_code == 0, remote.output

    def rows(label: str) -> list[dict[str, Any]]:
        lines = (run_dir / EVAL_DIR / label / RESULTS).read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: (r["budget"], r["id"]))

    assert len(rows("remote")) == len(rows("local")) == 12
    keys = ("id", "budget", "reference")
    assert [[r[k] for k in keys] for r in rows("remote")] == [
        [r[k] for k in keys] for r in rows("local")]
    same = sum(a["thinking"] == b["thinking"] and a["answer"] == b["answer"]
               for a, b in zip(rows("remote"), rows("local"), strict=True))
    assert same >= 10
    summary = json.loads((run_dir / EVAL_DIR / "remote" / SUMMARY).read_text())
    assert [p["max_thinking_tokens"] for p in summary["points"]] == [16, 32]
    assert (run_dir / SCALING_PLOT).is_file()


def split(result: GenerationResult) -> tuple[Any, ...]:
    """What must agree between two engines: the thinking/answer split and its counts."""
    return (result.thinking, result.answer, result.thinking_tokens, result.answer_tokens,
            result.waits, result.forced_max)


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two generations share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))
