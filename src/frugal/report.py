"""The run report: `report.md` and a self-contained `report.html` (images embedded).

Both are built from the same sections: what ran with which settings, the data funnel with the
reasons for every drop, the training curve, base vs tuned accuracy with 95% intervals, the
test-time-scaling plot, the cost ledger (total, per correct answer, per million tokens) and the
command that serves the result. Everything is read from the run directory's files.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal import break_even
from frugal.evaluate import read_summaries
from frugal.evaluation.table import comparison
from frugal.evaluation.waits import wait_verdict
from frugal.ledger import read_ledger
from frugal.recipes import Recipe, dump_recipe
from frugal.run_files import (
    BREAK_EVEN_PLOT,
    COMPARISON,
    CURATION_PLOT,
    EXPERTS_PLOT,
    LOSS_PLOT,
    REPORT_HTML,
    REPORT_MD,
    ROUTER_DIR,
    ROUTER_FILE,
    SCALING_PLOT,
    SELECTION,
    TRAIN_LOG,
    TRAIN_SUMMARY,
    EvalPoint,
    EvalSummary,
    read_json,
    read_stages,
    write_text_atomic,
)
from frugal.teacher_summary import summarize


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, caption)
    code: str | None = None
    code_folded: str | None = None  # HTML shows the code under this summary, closed


@dataclass
class Headline:
    """The base and the tuned model at their best budgets, and the gap in points."""

    base: EvalPoint
    tuned: EvalPoint
    questions: int
    rising: bool  # accuracy goes up somewhere along the tuned model's budgets

    @property
    def gain_points(self) -> float:
        return 100 * (self.tuned.accuracy - self.base.accuracy)


def headline(run_dir: Path, tuned: str) -> Headline | None:
    """Best accuracy of the base and the tuned model and the gap, in points."""
    summaries = read_summaries(run_dir)
    if "base" not in summaries or tuned not in summaries:
        return None
    base, trained = summaries["base"].best(), summaries[tuned].best()
    if base is None or trained is None:
        return None
    return Headline(base, trained, summaries[tuned].questions,
                    _rises(summaries[tuned].points))


def _rises(points: list[EvalPoint]) -> bool:
    """Whether accuracy goes up somewhere along increasing thinking budgets."""
    ordered = sorted(points, key=lambda p: (p.max_thinking_tokens, p.num_waits))
    return any(b.accuracy > a.accuracy for a, b in zip(ordered, ordered[1:], strict=False))


def costs(run_dir: Path, tuned: str) -> dict[str, Any]:
    ledger = read_ledger(run_dir)
    by_stage: dict[str, float] = Counter()
    seconds: dict[str, float] = Counter()
    for entry in ledger.entries:
        by_stage[entry.stage] += entry.dollars
        seconds[entry.stage] += entry.compute_seconds
    total = ledger.total_dollars
    summaries = read_summaries(run_dir)
    correct = None
    if tuned in summaries and summaries[tuned].points:
        correct = max(p.correct for p in summaries[tuned].points)
    served = [e for e in ledger.entries if e.stage == "serve"]
    evals = [e for e in ledger.entries if e.stage == "eval" and e.tokens]
    per_million = None
    source = None
    if served and served[-1].dollars_per_million_tokens:
        per_million, source = served[-1].dollars_per_million_tokens, "measured by frugal serve"
    elif evals:
        tokens = sum(e.tokens or 0 for e in evals)
        busy = sum(e.compute_seconds for e in evals)
        price = evals[-1].machine_price_per_hour or 0.0
        if tokens and busy:
            per_million = price / (tokens / busy * 3600) * 1e6
            source = "generation speed measured during evaluation"
    return {
        "total": total, "by_stage": dict(by_stage), "seconds": dict(seconds),
        "per_correct": (total / correct) if correct else None, "correct": correct,
        "per_million": per_million, "per_million_source": source,
    }


def sections(recipe: Recipe, run_dir: Path) -> list[Section]:
    tuned = recipe.train.name
    found: list[Section] = []
    summaries = read_summaries(run_dir)
    top = headline(run_dir, tuned)
    summary = Section("Headline")
    if top:
        base, best = top.base, top.tuned
        summary.paragraphs.append(
            f"On {top.questions} held-out questions, the tuned model reaches "
            f"**{100 * best.accuracy:.1f}%** (95% CI {100 * best.ci95[0]:.1f}-"
            f"{100 * best.ci95[1]:.1f}) at {best.budget}, against "
            f"**{100 * base.accuracy:.1f}%** (95% CI {100 * base.ci95[0]:.1f}-"
            f"{100 * base.ci95[1]:.1f}) for the base model at its best budget: "
            f"**{top.gain_points:+.1f} points**. Accuracy "
            f"{'rises' if top.rising else 'does not rise'} with the thinking budget "
            "somewhere on the tuned model's curve."
        )
        verdict = wait_verdict(summaries[tuned].points)
        if verdict:
            summary.paragraphs.append(verdict)
    else:
        summary.paragraphs.append("No base-vs-tuned evaluation in this run yet.")
    money = costs(run_dir, tuned)
    summary.paragraphs.append(
        f"Total cost **${money['total']:.4f}** at ${recipe.machine_price_per_hour}/hour of "
        "machine time" + (f"; ${money['per_correct']:.5f} per correct answer"
                          if money["per_correct"] else "") + "."
    )
    found.append(summary)

    settings = Section("What ran")
    settings.paragraphs.append(
        f"Recipe **{recipe.name}**: {recipe.description or '(no description)'} Base model "
        f"`{recipe.model}`; teacher `{recipe.distill.teacher}`; curation `{recipe.curate.strategy}`"
        f" to {recipe.curate.target} examples; training `{recipe.train.method}` for "
        f"{recipe.train.epochs} epoch(s) at learning rate {recipe.train.learning_rate}; "
        f"evaluation budgets {recipe.eval.max_thinking_tokens} thinking tokens."
    )
    stages = read_stages(run_dir)
    settings.tables.append((["stage", "seconds", "finished"], [
        [name, f"{record.seconds or 0:.1f}", record.finished or "(this report)"]
        for name, record in stages.items()
    ]))
    settings.code = dump_recipe(recipe)
    settings.code_folded = "The resolved recipe (defaults, recipe file and overrides)"
    found.append(settings)

    selection = _read_json(run_dir / SELECTION)
    if selection:
        funnel = Section("Data funnel")
        funnel.tables.append((["stage", "in", "dropped", "out"], [
            [s["stage"], str(s["in"]), str(s["dropped"]), str(s["out"])]
            for s in selection["funnel"]
        ]))
        reasons = Counter(d["reason"] for d in selection.get("dropped", {}).values())
        if reasons:
            funnel.tables.append((["why dropped", "items"], [
                [reason, str(count)] for reason, count in reasons.most_common(10)
            ]))
        if (run_dir / CURATION_PLOT).is_file():
            funnel.images.append((CURATION_PLOT, "Curation: domains and trace lengths"))
        found.append(funnel)

    teacher = summarize(run_dir)
    if teacher is not None:
        found.append(Section("Teacher", [teacher.sentence(
            recipe.distill.machine_price_per_hour or recipe.machine_price_per_hour)]))

    training = Section("Training")
    record = _read_json(run_dir / TRAIN_SUMMARY)
    if record:
        rate = record["tokens"] / max(record["seconds"], 1e-9)
        training.paragraphs.append(
            f"{record['steps']} steps on {record['examples']} examples "
            f"({record['left_out_too_long']} left out as longer than the maximum length), "
            f"{record['tokens']:,} tokens in {record['seconds']:.0f} s ({rate:,.0f} tokens/s); "
            f"final loss {record['final_loss']}. Adapter: `{record['output']}`."
        )
        plot = plot_loss(run_dir)
        if plot:
            training.images.append((LOSS_PLOT, "Training loss"))
    found.append(training)

    evaluation = Section("Evaluation")
    if summaries:
        evaluation.paragraphs.append(
            "Accuracy [95% Wilson interval] at each budget, with the mean thinking tokens "
            "actually used; s1's Control (share of generations within budget), Scaling (average "
            "slope, points per 1,000 thinking tokens) and Performance (best accuracy)."
        )
        evaluation.tables.append(comparison(summaries))
        if (run_dir / SCALING_PLOT).is_file():
            evaluation.images.append((SCALING_PLOT, "Test-time scaling"))
        domains = _domain_table(summaries)
        if domains:
            evaluation.tables.append(domains)
    found.append(evaluation)

    experts = _experts_section(run_dir)
    if experts:
        found.append(experts)
        summary.paragraphs.insert(0, f"Experts: {experts.paragraphs[0]}")

    ledger = Section("Cost ledger")
    ledger.tables.append((["stage", "compute seconds", "dollars"], [
        [stage, f"{money['seconds'].get(stage, 0):.1f}", f"{dollars:.6f}"]
        for stage, dollars in money["by_stage"].items()
    ] + [["total", f"{sum(money['seconds'].values()):.1f}", f"{money['total']:.6f}"]]))
    lines = [f"Machine price assumed: ${recipe.machine_price_per_hour}/hour. Teacher prices: "
             f"${recipe.distill.prices.input_per_million}/M input, "
             f"${recipe.distill.prices.output_per_million}/M output tokens."]
    if money["per_correct"] is not None:
        lines.append(f"Dollars per correct answer (whole run / {money['correct']} correct at "
                     f"the tuned model's best budget): ${money['per_correct']:.6f}.")
    elif money["correct"] == 0:
        lines.append("Dollars per correct answer: undefined, the tuned model answered none "
                     "correctly.")
    if money["per_million"] is not None:
        lines.append(f"Dollars per million tokens served: ${money['per_million']:.4f} "
                     f"({money['per_million_source']}).")
    ledger.paragraphs.extend(lines)
    found.append(ledger)

    worth = _break_even_section(recipe, run_dir)
    if worth:
        found.append(worth)
        summary.paragraphs.append(worth.paragraphs[-1])

    serve = Section("Serve it")
    serve.paragraphs.append("An OpenAI-compatible API with the adapter and thinking budgets:")
    serve.code = (
        f"frugal serve {run_dir} --machine-price-per-hour {recipe.machine_price_per_hour}\n"
        "curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f"  -d '{{\"model\": \"{tuned}\", \"messages\": [{{\"role\": \"user\", \"content\": "
        "\"What is 15% of 240?\"}], \"max_thinking_tokens\": 128}'"
    )
    found.append(serve)
    return found


def _break_even_section(recipe: Recipe, run_dir: Path) -> Section | None:
    """The specialist against the reference API (and a paid teacher): per request, per correct
    answer, and the requests after which its one-off cost is paid back."""
    found = break_even.measured(run_dir, recipe.train.name, recipe.reference_api, recipe.model)
    if found is None:
        return None
    reference = recipe.reference_api
    section = Section("Was it worth it?")
    section.paragraphs.append(
        f"Against {reference.name} at ${reference.prices.input_per_million}/M input and "
        f"${reference.prices.output_per_million}/M output tokens, with {found.prompt_tokens:.0f} "
        f"prompt tokens and {found.output_tokens:.0f} written tokens per request (the "
        "specialist's, at its best budget"
        + (f"; the API writes {reference.output_tokens}" if reference.output_tokens else "")
        + ")."
    )
    section.paragraphs.extend(found.sentences())
    break_even.plot_run(found, run_dir)
    section.images.append((BREAK_EVEN_PLOT, "Dollars spent against requests served"))
    return section


def _experts_section(run_dir: Path) -> Section | None:

    comparison = _read_json(run_dir / COMPARISON)
    if not comparison:
        return None
    section = Section("Experts")
    section.paragraphs.append(comparison["verdict"])
    tokens = comparison["training_tokens"]
    section.paragraphs.append(
        f"Training tokens: experts {tokens['experts']:,} in all, generalist "
        f"{tokens['generalist']:,}. Each contender at its best budget, with 95% intervals."
    )
    contenders = comparison["contenders"]
    domains = sorted({d for c in contenders.values() for d in c["by_domain"]})
    rows = []
    for label, row in contenders.items():
        low, high = row["overall"]["ci95"]
        rows.append([label, *(
            f"{100 * row['by_domain'][d]['accuracy']:.0f}% (n={row['by_domain'][d]['n']})"
            if d in row["by_domain"] else "-" for d in domains
        ), f"{100 * row['overall']['accuracy']:.1f}% [{100 * low:.1f}-{100 * high:.1f}]"])
    section.tables.append((["contender", *domains, "overall [95% CI]"], rows))
    routing = _read_json(run_dir / ROUTER_DIR / ROUTER_FILE)
    if routing:
        section.tables.append((["router", "held-out routing accuracy", "n"], [
            [kind + (" (chosen)" if kind == routing["chosen"] else ""),
             f"{100 * score['accuracy']:.1f}%", str(score["n"])]
            for kind, score in routing["routers"].items()
        ]))
    if (run_dir / EXPERTS_PLOT).is_file():
        section.images.append((EXPERTS_PLOT, "Experts comparison per domain"))
    return section


def _domain_table(summaries: dict[str, EvalSummary]
                  ) -> tuple[list[str], list[list[str]]] | None:
    best = {label: point for label, s in summaries.items() if (point := s.best()) is not None}
    domains = sorted({d for p in best.values() for d in p.by_domain})
    if len(domains) < 2:
        return None
    rows = [[domain] + [
        f"{100 * best[label].by_domain[domain].accuracy:.0f}% "
        f"(n={best[label].by_domain[domain].n})"
        if domain in best[label].by_domain else "-" for label in best
    ] for domain in domains]
    return ["domain (at each model's best budget)", *best], rows


def plot_loss(run_dir: Path) -> Path | None:
    log = run_dir / TRAIN_LOG
    if not log.is_file():
        return None
    points = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    points = [p for p in points if "loss" in p]
    if not points:
        return None
    from frugal.figures import new_figure, save_figure

    figure, axes = new_figure(figsize=(6.4, 3.6), dpi=110)
    axes.plot([p["step"] for p in points], [p["loss"] for p in points], marker=".")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    return save_figure(figure, run_dir / LOSS_PLOT)


def to_markdown(title: str, parts: list[Section]) -> str:
    out = [f"# {title}", "", f"Generated {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    for section in parts:
        out += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            out += [paragraph, ""]
        for headers, rows in section.tables:
            out.append("| " + " | ".join(headers) + " |")
            out.append("|" + "---|" * len(headers))
            out += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("")
        for path, caption in section.images:
            out += [f"![{caption}]({path})", ""]
        if section.code:
            out += ["```", section.code.rstrip(), "```", ""]
    return "\n".join(out)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d1d1f; line-height: 1.5; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d0d5; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f2f2f5; }
img { max-width: 100%; border: 1px solid #e5e5ea; margin: 0.5rem 0; }
pre { background: #f6f6f8; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
figcaption { color: #666; font-size: 0.85rem; }
"""


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in HTML, everything else escaped."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(title: str, parts: list[Section], run_dir: Path) -> str:
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>Generated {time.strftime('%Y-%m-%d %H:%M')}.</p>"]
    for section in parts:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [f"<p>{_inline(p)}</p>" for p in section.paragraphs]
        for headers, rows in section.tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        for path, caption in section.images:
            data = base64.b64encode((run_dir / path).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(caption)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>'
                        f"{html.escape(caption)}</figcaption></figure>")
        if section.code and section.code_folded:
            body.append(f"<details><summary>{html.escape(section.code_folded)}</summary>"
                        f"<pre>{html.escape(section.code)}</pre></details>")
        elif section.code:
            body.append(f"<pre>{html.escape(section.code)}</pre>")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write(recipe: Recipe, run_dir: Path) -> Path:
    """Write report.md and report.html; returns the HTML path."""
    run_dir = Path(run_dir)
    parts = sections(recipe, run_dir)
    title = f"frugal run: {recipe.name}"
    write_text_atomic(run_dir / REPORT_MD, to_markdown(title, parts))
    path = run_dir / REPORT_HTML
    write_text_atomic(path, to_html(title, parts, run_dir))
    return path


def _read_json(path: Path) -> Any:
    return read_json(path, default=None, fix="re-run the stage that writes it")
