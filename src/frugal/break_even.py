"""Was it worth it? The specialist's dollars against a hosted API's, per request and per
correct answer, and the number of requests after which its one-off cost has paid for itself.

The specialist pays once (distillation and training, from the ledger) and then its machine
time per request (its own generation speed and length, measured in evaluation); an API pays
per token. The reference API is the recipe's `reference_api` (prices; its accuracy is not
measured here, so it is assumed, by default 100%: the case most favourable to the API); a
teacher that was an API is a second alternative, with what it really billed per call and the
share of its answers that were right.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from frugal.figures import new_figure, save_figure
from frugal.ledger import read_ledger
from frugal.run_files import (
    BREAK_EVEN_PLOT,
    EVAL_DIR,
    RESULTS,
    TRACES,
    EvalRow,
    Ledger,
    Trace,
    read_records,
)
from frugal.settings.reference import ReferenceApi

ONE_OFF_STAGES = ("pool", "distill", "curate", "train")  # paid before the first request


@dataclass(frozen=True)
class Offer:
    """One way to get questions answered: what it costs up front and per request."""

    name: str
    one_off: float
    per_request: float
    accuracy: float
    assumed: bool = False  # accuracy assumed, not measured

    @property
    def per_correct(self) -> float:
        return self.per_request / self.accuracy if self.accuracy else float("inf")

    def dollars(self, requests: float) -> float:
        return self.one_off + requests * self.per_request


@dataclass(frozen=True)
class BreakEven:
    specialist: Offer
    alternatives: list[Offer]
    prompt_tokens: float  # per request
    output_tokens: float  # per request, the specialist's (and the reference's unless set)

    def requests_to_pay_off(self, other: Offer) -> float | None:
        """Requests after which the specialist is cheaper in all; None when never."""
        saved = other.per_request - self.specialist.per_request
        extra = self.specialist.one_off - other.one_off
        if extra <= 0:
            return 0.0
        return extra / saved if saved > 0 else None

    def sentences(self) -> list[str]:
        me = self.specialist
        per_correct = (f"${me.per_correct:.7f} per correct answer at {100 * me.accuracy:.1f}% "
                       "right" if me.accuracy else "no price per correct answer (none was right)")
        found = [
            f"The specialist costs ${me.per_request:.7f} per request (its machine time) and "
            f"{per_correct}; it cost ${me.one_off:.4f} once (distillation and training)."
        ]
        for other in self.alternatives:
            accuracy = (f"assumed {100 * other.accuracy:.0f}% right" if other.assumed
                        else f"{100 * other.accuracy:.1f}% right")
            pays = self.requests_to_pay_off(other)
            verdict = (f"pays for itself after **{pays:,.0f} requests**" if pays is not None
                       else "**never pays for itself** against it: each request costs more here")
            found.append(
                f"Against {other.name}: ${other.per_request:.7f} per request, "
                f"${other.per_correct:.7f} per correct answer ({accuracy}); the specialist "
                f"{verdict}."
            )
        return found


def reference_offer(reference: ReferenceApi, prompt_tokens: float, output_tokens: float
                    ) -> Offer:
    written = reference.output_tokens or output_tokens
    per_request = reference.prices.cost(round(prompt_tokens), round(written))
    return Offer(reference.name, 0.0, per_request, reference.accuracy, assumed=True)


def measured(run_dir: Path, tuned: str, reference: ReferenceApi, tokenizer_model: str
             ) -> BreakEven | None:
    """The break-even of a finished run, or None before its tuned model was evaluated."""
    from frugal.evaluate import read_summaries
    from frugal.models import load_tokenizer

    summary = read_summaries(run_dir).get(tuned)
    best = summary.best() if summary else None
    ledger = read_ledger(run_dir)
    evals = [e for e in ledger.entries if e.stage == "eval" and getattr(e, "name", None) == tuned]
    busy = sum(e.compute_seconds for e in evals)
    generated = sum(e.tokens or 0 for e in evals)
    if best is None or not busy or not generated:
        return None
    price = evals[-1].machine_price_per_hour or 0.0
    output_tokens = best.mean_thinking_tokens + best.mean_answer_tokens
    per_request = price / 3600 * busy / generated * output_tokens
    one_off = sum(e.dollars for e in ledger.entries if e.stage in ONE_OFF_STAGES)
    specialist = Offer("specialist", one_off, per_request, best.accuracy)

    rows = read_records(run_dir / EVAL_DIR / tuned / RESULTS, EvalRow,
                        fix=f"delete {EVAL_DIR}/{tuned} and evaluate again")
    prompts = list(dict.fromkeys(row.prompt for row in rows if row.prompt))
    tokenizer = load_tokenizer(tokenizer_model)
    prompt_tokens = statistics.fmean(len(ids) for ids in tokenizer(prompts)["input_ids"]) \
        if prompts else 0.0
    alternatives = [reference_offer(reference, prompt_tokens, output_tokens)]
    teacher = _teacher_offer(run_dir, ledger)
    if teacher:
        alternatives.append(teacher)
    return BreakEven(specialist, alternatives, prompt_tokens, output_tokens)


def _teacher_offer(run_dir: Path, ledger: Ledger) -> Offer | None:
    """The teacher as an alternative, when it was a paid API: billed dollars per call and the
    share of its traces that were right."""
    paid = [e for e in ledger.entries if e.stage == "distill" and e.teacher_dollars]
    calls = sum(getattr(e, "calls", 0) or 0 for e in paid)
    if not paid or not calls or not (run_dir / TRACES).is_file():
        return None
    traces = read_records(run_dir / TRACES, Trace, fix="run distill again")
    accuracy = sum(t.correct for t in traces) / len(traces) if traces else 0.0
    model = getattr(paid[-1], "model", None) or "the teacher"
    return Offer(f"teacher API ({model})", 0.0, sum(e.teacher_dollars for e in paid) / calls,
                 accuracy)


def plot(found: BreakEven, path: Path) -> Path:
    """Cumulative dollars against requests for the specialist and each alternative."""
    paid_off = [n for other in found.alternatives
                if (n := found.requests_to_pay_off(other)) is not None]
    horizon = max([2 * n for n in paid_off] + [1000.0])
    xs = [horizon * i / 50 for i in range(51)]
    figure, axes = new_figure(figsize=(6.4, 4.0), dpi=120)
    for offer in (found.specialist, *found.alternatives):
        axes.plot(xs, [offer.dollars(x) for x in xs], label=offer.name)
    for other in found.alternatives:
        n = found.requests_to_pay_off(other)
        if n:
            axes.axvline(n, color="grey", linestyle=":", linewidth=1)
            axes.annotate(f"{n:,.0f}", (n, found.specialist.dollars(n)),
                          textcoords="offset points", xytext=(4, -12), fontsize=8)
    axes.set_xlabel("requests")
    axes.set_ylabel("dollars spent in all")
    axes.set_title("When the specialist pays for itself")
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def plot_run(found: BreakEven, run_dir: Path) -> Path:
    return plot(found, Path(run_dir) / BREAK_EVEN_PLOT)
