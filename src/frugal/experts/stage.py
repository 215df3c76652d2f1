"""`frugal experts`: one LoRA per domain, a router, merged contenders, and a fair comparison.

From the curated set: one adapter per domain (`expert-<domain>`), and one generalist on the
union with the same epochs, hence the same total training tokens. A nearest-centroid router and
a logistic-regression router are fitted on the experts' training prompts and scored on held-out
questions; the better one serves `model: "auto"`. The experts are also merged into single
adapters (linear and TIES). Then base, generalist, each merge and experts + router are
evaluated on the same held-out questions with budget forcing, per domain and overall, with 95%
intervals; `experts/comparison.json` and `plots/experts.png` hold the result.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugal.evaluation import metrics
from frugal.evaluation.benchmarks import BenchmarkSpec, load_questions, resolve
from frugal.events import Events, QuietEvents
from frugal.experts.naming import expert_names
from frugal.experts.router import Router
from frugal.run_files import (
    ADAPTERS,
    COMPARISON,
    EXPERTS_PLOT,
    ROUTER_DIR,
    ROUTER_FILE,
    TRAIN_RECORD,
    SelectedItem,
    read_selected,
    write_json,
)
from frugal.run_lock import locks_run_dir
from frugal.settings.experts import ExpertsConfig

GENERALIST = "generalist"


@dataclass
class ExpertsResult:
    experts: dict[str, str]  # domain -> adapter name
    routing: dict[str, Any]
    comparison: dict[str, Any] | None
    tokens: dict[str, int]


@locks_run_dir
def run(config: ExpertsConfig, run_dir: Path, events: Events | None = None) -> ExpertsResult:
    from frugal import train
    from frugal.adapters import run_adapters
    from frugal.experts.merge import merge_experts

    run_dir = Path(run_dir)
    events = events or QuietEvents()
    records = read_selected(run_dir)
    by_domain: dict[str, list[SelectedItem]] = defaultdict(list)
    for record in records:
        by_domain[record.domain or "(none)"].append(record)
    domains = sorted(d for d, rows in by_domain.items() if len(rows) >= config.min_examples)
    if len(domains) < 2:
        raise ValueError(
            f"experts need at least two domains with {config.min_examples}+ curated examples; "
            f"found {dict((d, len(r)) for d, r in by_domain.items())}"
        )
    experts = expert_names(domains)
    tokens: dict[str, int] = {}
    existing = run_adapters(run_dir)
    for domain, name in experts.items():
        tokens[name] = _train(train, config, run_dir, name, by_domain[domain], existing, events)
    # Same epochs over the union of the experts' data: the same total training tokens. A step
    # cap is per adapter, so the generalist gets the experts' steps added up.
    union = [r for d in domains for r in by_domain[d]]
    steps = config.train.max_steps * len(experts) if config.train.max_steps > 0 else -1
    tokens[GENERALIST] = _train(train, config, run_dir, GENERALIST, union, existing, events,
                                max_steps=steps)

    benchmark = resolve(config.benchmark)
    held_out = [q for q in load_questions(benchmark) if q.domain in experts]
    routing = fit_routers(run_dir, by_domain, experts, held_out)
    adapters = run_adapters(run_dir)
    merge_experts(config.train.model, {n: adapters[n] for n in experts.values()},
                  run_dir / ADAPTERS, config.merges)
    comparison = compare(config, run_dir, benchmark, experts, tokens,
                         events) if config.compare else None
    return ExpertsResult(experts, routing, comparison, tokens)


def _train(train: Any, config: ExpertsConfig, run_dir: Path, name: str,
           records: list[SelectedItem], existing: dict[str, Path], events: Events,
           max_steps: int | None = None) -> int:
    record = run_dir / ADAPTERS / name / TRAIN_RECORD
    if name in existing and record.is_file():  # finished before: keep it
        return int(json.loads(record.read_text()).get("tokens", 0))
    events.note(f"training {name} on {len(records)} examples")
    update: dict[str, Any] = {"name": name}
    if max_steps is not None:
        update["max_steps"] = max_steps
    settings = config.train.model_copy(update=update)
    result = train.run(settings, run_dir, resume=True, records=records, events=events)
    return result.tokens


def fit_routers(run_dir: Path, by_domain: dict[str, list[SelectedItem]],
                experts: dict[str, str], held_out: list[Any]) -> dict[str, Any]:
    """Fit both routers on the experts' training prompts and keep the better one (the
    baseline on a tie) in router/router.json. The choice is made on a fifth of the training
    prompts held back for it, not on the held-out questions the comparison then scores, so the
    experts' row is not favoured by the choice; held-out accuracy is reported for both."""
    texts = [r.question for d in experts for r in by_domain[d]]
    labels = [experts[d] for d in experts for r in by_domain[d]]
    choose = [i % 5 == 0 for i in range(len(texts))]
    truth = [experts[q.domain] for q in held_out]
    scores: dict[str, Any] = {}
    validation: dict[str, float] = {}
    directory = run_dir / ROUTER_DIR
    for kind in ("centroid", "logistic"):
        trial = Router.fit([t for t, c in zip(texts, choose, strict=True) if not c],
                           [x for x, c in zip(labels, choose, strict=True) if not c], kind=kind)
        validation[kind] = trial.evaluate(
            [t for t, c in zip(texts, choose, strict=True) if c],
            [x for x, c in zip(labels, choose, strict=True) if c])["accuracy"]
        router = Router.fit(texts, labels, kind=kind)
        router.save(directory)
        scores[kind] = router.evaluate([q.question for q in held_out], truth)
    chosen = max(("centroid", "logistic"), key=lambda k: (validation[k], k == "centroid"))
    summary = {"chosen": chosen, "chosen_by": "accuracy on a fifth of the training prompts",
               "validation_accuracy": validation, "held_out": len(held_out), "routers": scores}
    write_json(directory / ROUTER_FILE, summary)
    return summary


def compare(config: ExpertsConfig, run_dir: Path, benchmark: BenchmarkSpec,
            experts: dict[str, str], tokens: dict[str, int], events: Events) -> dict[str, Any]:
    from frugal import evaluate
    from frugal.tasks import FAMILIES

    families = sorted(d for d in experts if d in FAMILIES)  # held-out questions of each expert
    spec = benchmark.model_copy(update={"families": families}) \
        if benchmark.source == "tasks" and families else benchmark
    contenders: dict[str, dict[str, Any]] = {
        "base": {}, GENERALIST: {"adapter": GENERALIST},
        **{f"merged-{m}": {"adapter": f"merged-{m}"} for m in config.merges},
        "experts": {"route": True},
    }
    table: dict[str, Any] = {}
    for label, how in contenders.items():
        evaluation = evaluate.EvalConfig(
            model=config.train.model, label=label, benchmark=spec,
            max_thinking_tokens=config.max_thinking_tokens,
            max_answer_tokens=config.max_answer_tokens, batch_size=config.batch_size,
            system=config.train.system, machine_price_per_hour=config.machine_price_per_hour,
            dtype=config.dtype, engine=config.engine, **how,
        )
        result = evaluate.run(evaluation, run_dir, events)
        best = result.summary.best()
        assert best is not None  # every contender answered the held-out questions
        table[label] = {"overall": best.model_dump(include={"accuracy", "ci95", "correct",
                                                            "generations", "budget"}),
                        "by_domain": {d: s.model_dump() for d, s in best.by_domain.items()}}
    ranked = sorted(table, key=lambda k: table[k]["overall"]["accuracy"], reverse=True)
    winner, runner_up = ranked[0], ranked[1]
    gap = 100 * (table[winner]["overall"]["accuracy"] - table[runner_up]["overall"]["accuracy"])
    experts_acc = table["experts"]["overall"]
    generalist_acc = table[GENERALIST]["overall"]
    diff = _difference_interval(experts_acc, generalist_acc)
    comparison = {
        "contenders": table, "winner": winner, "runner_up": runner_up, "gap_points": gap,
        "experts_minus_generalist_points": diff,
        "training_tokens": {"experts": sum(v for k, v in tokens.items() if k != GENERALIST),
                            "generalist": tokens.get(GENERALIST, 0)},
        "verdict": _verdict(winner, runner_up, gap, diff),
    }
    path = run_dir / COMPARISON
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, comparison)
    plot_comparison(table, run_dir / EXPERTS_PLOT)
    return comparison


def _difference_interval(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Experts minus generalist in points, with a 95% normal interval (independent samples)."""
    pa, na = a["accuracy"], a["generations"]
    pb, nb = b["accuracy"], b["generations"]
    se = (pa * (1 - pa) / max(na, 1) + pb * (1 - pb) / max(nb, 1)) ** 0.5
    diff = pa - pb
    return {"points": 100 * diff, "low": 100 * (diff - metrics.Z_95 * se),
            "high": 100 * (diff + metrics.Z_95 * se)}


def _verdict(winner: str, runner_up: str, gap: float, diff: dict[str, float]) -> str:
    significant = diff["low"] > 0 or diff["high"] < 0
    versus = (f"experts + router vs generalist: {diff['points']:+.1f} points "
              f"(95% CI {diff['low']:+.1f} to {diff['high']:+.1f}), "
              + ("a real difference" if significant else "within noise"))
    return f"{winner} wins, {gap:.1f} points ahead of {runner_up}; {versus}."


def plot_comparison(table: dict[str, Any], path: Path) -> Path:
    import numpy as np

    from frugal.figures import new_figure, save_figure

    domains = sorted({d for row in table.values() for d in row["by_domain"]})
    groups = [*domains, "overall"]
    width = 0.8 / len(table)
    figure, axes = new_figure(figsize=(8, 4), dpi=110)
    for i, (label, row) in enumerate(table.items()):
        values = [row["by_domain"].get(d, {}) for d in domains] + [row["overall"]]
        heights = [100 * v.get("accuracy", 0.0) for v in values]
        errors = [[max(0.0, 100 * (v.get("accuracy", 0) - v.get("ci95", [0, 0])[0]))
                   for v in values],
                  [max(0.0, 100 * (v.get("ci95", [0, 0])[1] - v.get("accuracy", 0)))
                   for v in values]]
        axes.bar(np.arange(len(groups)) + i * width, heights, width, yerr=errors, capsize=2,
                 label=label)
    axes.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)
