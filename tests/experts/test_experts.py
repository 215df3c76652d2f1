"""`frugal experts` on a tiny model with three clearly distinct synthetic domains."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from frugal import evaluate
from frugal.adapters import load_with_adapters, run_adapters
from frugal.evaluation.benchmarks import BenchmarkSpec
from frugal.experts import stage
from frugal.experts.router import Router, load_router
from frugal.generation import BudgetConfig, BudgetForcingEngine
from frugal.questions import FieldMap
from frugal.settings.train import LoraSettings, TrainConfig

TEMPLATES = {
    "baking": [
        "How long should {n} loaves of sourdough bread bake at {m} degrees in the oven?",
        "How many grams of flour and yeast make {n} croissants with {m} grams of butter?",
        "For a cake recipe with {n} eggs, how many cups of sugar go into {m} cupcakes?",
    ],
    "football": [
        "Which striker scored {n} goals in the {m} league final at the stadium?",
        "How many penalties did the goalkeeper save in {n} matches of the {m} season?",
        "If a football club won {n} games and drew {m}, how many league points did it earn?",
    ],
    "astronomy": [
        "How many light years separate the star Vega from a galaxy {n} parsecs beyond {m}?",
        "What is the orbital period of a planet {n} astronomical units from a star of {m} suns?",
        "How many moons orbit a gas giant whose telescope images show {n} rings and {m} craters?",
    ],
}


def questions(seed: int, per_domain: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for domain, templates in TEMPLATES.items():
        for i in range(per_domain):
            text = templates[i % 3].format(n=rng.randint(2, 900), m=rng.randint(2, 900))
            rows.append({"id": f"{domain}-{seed}-{i}", "question": text, "answer": "7",
                         "domain": domain})
    return rows


@pytest.fixture(scope="module")
def experts_run(tmp_path_factory: pytest.TempPathFactory, lively_dir: Path) -> tuple[Path, Any]:
    run_dir = tmp_path_factory.mktemp("experts-run")
    train_rows = [dict(r, thinking=f"This is about {r['domain']}. Step by step.",
                       answer="Final Answer: 7") for r in questions(0, 12)]
    (run_dir / "selected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    held_out = run_dir / "held-out.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in questions(1, 10)))
    config = stage.ExpertsConfig(
        train=TrainConfig(model=str(lively_dir), max_steps=3, batch_size=4, learning_rate=0.02,
                          lora=LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
                          save_steps=10),
        benchmark=BenchmarkSpec(name="held-out", source=str(held_out),
                                fields=FieldMap(id="id", domain="domain")),
        max_thinking_tokens=[6], max_answer_tokens=4, batch_size=8,
        dtype="float32",  # batches match single rows exactly only in float32
    )
    return run_dir, stage.run(config, run_dir)


def test_router_reaches_95_percent_on_held_out_prompts(experts_run: tuple[Path, Any]) -> None:
    run_dir, result = experts_run
    assert result.routing["held_out"] == 30
    for kind in ("centroid", "logistic"):
        score = result.routing["routers"][kind]
        assert score["accuracy"] >= 0.95, (kind, score)
        assert sum(map(sum, score["confusion"])) == 30
    router = load_router(run_dir)
    assert router is not None and router.kind == result.routing["chosen"]
    assert router("How many goals did the striker score in the final?") == "expert-football"
    # The saved JSON gives back the same router.
    again = Router.load(run_dir / "router" / f"{router.kind}.json")
    assert again.route(["Bake the bread at 200 degrees"]) == ["expert-baking"]


def test_each_domain_has_its_own_adapter_and_they_differ(experts_run: tuple[Path, Any]) -> None:
    run_dir, result = experts_run
    adapters = run_adapters(run_dir)
    names = ["expert-astronomy", "expert-baking", "expert-football"]
    assert sorted(result.experts.values()) == names
    assert {"generalist", "merged-linear", "merged-ties"} <= set(adapters)
    weights = [load_file(adapters[n] / "adapter_model.safetensors") for n in names]
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert any(not weights[a][k].equal(weights[b][k]) for k in weights[a])
    # The generalist saw the union: as many tokens as the experts together.
    assert result.tokens["generalist"] == sum(result.tokens[n] for n in names)


def test_routed_generation_uses_the_adapter_the_router_named(
    experts_run: tuple[Path, Any], lively_dir: Path
) -> None:
    run_dir, _ = experts_run
    rows = [json.loads(line) for line in
            (run_dir / "eval" / "experts" / evaluate.RESULTS).read_text().splitlines()]
    assert len(rows) == 30
    adapters = run_adapters(run_dir)
    experts = sorted(n for n in adapters if n.startswith("expert-"))
    alone = {}
    for name in experts:
        loaded = load_with_adapters(str(lively_dir), {name: adapters[name]})
        engine = BudgetForcingEngine(loaded.model, loaded.tokenizer)
        alone[name] = {r.prompt: r.thinking for r in engine.generate(
            [row["prompt"].split("user\n", 1)[1].split("<|im_end|>")[0] for row in rows],
            BudgetConfig(max_thinking_tokens=6, max_answer_tokens=4))}
    differs = 0
    for row in rows:
        assert row["expert"] == f"expert-{row['domain']}"
        assert alone[row["expert"]][row["prompt"]] == row["thinking"]
        differs += any(alone[n][row["prompt"]] != row["thinking"] for n in experts
                       if n != row["expert"])
    assert differs > len(rows) // 2  # other experts would have written something else


def test_comparison_names_a_winner_with_intervals(experts_run: tuple[Path, Any]) -> None:
    run_dir, result = experts_run
    comparison = json.loads((run_dir / stage.COMPARISON).read_text())
    assert set(comparison["contenders"]) == {"base", "generalist", "merged-linear",
                                              "merged-ties", "experts"}
    for row in comparison["contenders"].values():
        low, high = row["overall"]["ci95"]
        assert 0 <= low <= row["overall"]["accuracy"] <= high <= 1
        assert set(row["by_domain"]) == {"astronomy", "baking", "football"}
    assert comparison["winner"] in comparison["contenders"] and "wins" in comparison["verdict"]
    assert (run_dir / stage.EXPERTS_PLOT).stat().st_size > 1000


def test_server_routes_model_auto_to_the_named_expert(experts_run: tuple[Path, Any]) -> None:
    from frugal.serve import ServeConfig

    from ..serving.conftest import client, start

    run_dir, _ = experts_run
    running = start(ServeConfig(target=str(run_dir), default_thinking_tokens=4,
                                max_answer_tokens=4))
    try:
        api = client(running)
        assert "auto" in {m.id for m in api.models.list().data}
        reply = api.chat.completions.create(model="auto", messages=[
            {"role": "user", "content": "How many goals did the striker score in the final?"}])
        assert reply.model == "expert-football"
    finally:
        running.stop()
