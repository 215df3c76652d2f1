"""Benchmark `frugal curate` (the s1K funnel) on a synthetic 50,000-item pool with traces.

Measures the wall-clock seconds and items per second of every funnel stage of one
`frugal.curate.run` call: counting trace tokens, the quality checks (reference, has trace,
correct, length, formatting, exact duplicates, embedding near-duplicates), decontamination
against an evaluation file, domains (MiniLM embeddings + k-means for questions without a
domain) and the s1 selection, plus the whole call (reading the pool and traces, writing
`selected.jsonl`, `selection.json` and the plot). The difficulty generations (reference models)
are excluded: they are model generation, benchmarked elsewhere.

The synthetic pool is seeded and made so that every stage does real work: word problems of
10-45 words (mean ~30) from 18 templates with a random context sentence, names, objects, places
and numbers (so that near-duplicates at cosine 0.95 are a few percent); 6 domains for ~70%
of the items and none for ~30% (so k-means runs on ~15,000 embeddings); ~2% exact duplicates
that differ only in case and white space; ~1% with a formatting problem ("As shown in the
figure below, ..."); ~5% traces graded incorrect; thinking of 20-600 words and ~4% of
900-1,500 words (above the default 1,024-token limit); ~0.5% of questions copying an 8-word run
from a 2,000-question evaluation file; ~0.5% without a trace and ~0.2% with a placeholder
reference answer.

Target: all stages together (the whole `run` call) finish in under 300 s on this machine.
Run: `.venv/bin/python bench/curate.py` (flags: --help; `--items 3000` for a quick check).
Keep other processes idle: on 2 cores they skew the embedding and tokenizer timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from frugal.curate import CurateConfig, run
from frugal.events import RichEvents
from frugal.questions import Question, write_questions
from frugal.run_files import POOL, TRACES

TARGET_SECONDS = 300.0
EVAL_FILE = "eval.jsonl"

DOMAINS = ("arithmetic", "algebra", "geometry", "probability", "number theory", "combinatorics")
NAMES = (
    "Ava", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kofi",
    "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor",
    "Wen", "Ximena", "Yusuf", "Zoe",
)
OBJECTS = (
    "apples", "marbles", "pencils", "stickers", "books", "cookies", "coins", "stamps", "shells",
    "cards", "beads", "tickets", "oranges", "notebooks", "candles", "buttons", "plants", "kites",
)
PLACES = (
    "at the market", "at school", "in the garden", "at the fair", "in the library",
    "at the bakery", "on the farm", "at the museum", "in the workshop", "at the harbour",
)
OPENERS = (
    "", "", "", "On Monday, ", "After lunch, ", "During the holidays, ", "Last week, ",
    "Early in the morning, ", "For a class project, ", "Before the game, ",
)
# A sentence of context before most questions: word problems vary in more than their numbers.
CONTEXTS = (
    "{m} is saving money for a new bicycle.", "{m} just moved to a new town.",
    "{m} loves solving puzzles with friends.", "The weather is rainy and cold today.",
    "{m} is preparing for a science competition.", "The school is organising a charity sale.",
    "{m} collects things from every trip abroad.", "A new shop opened near the station.",
    "{m} keeps careful notes in a small diary.", "The village holds a festival every summer.",
    "{m} is helping a younger cousin with homework.", "The team practises twice a week.",
    "{m} has recently started a vegetable garden.", "The museum offers free entry on Sundays.",
    "{m} wants to surprise the whole family.", "The library is running a reading challenge.",
    "{m} is planning a birthday party.", "A storm closed the roads for two days.",
    "{m} works part time at the cafe.", "The class is learning about ancient Egypt.",
    "{m} builds model ships as a hobby.", "The orchestra is rehearsing for a concert.",
    "{m} enjoys long walks along the river.", "The town council approved a new park.",
)
SHAPES = ("rectangle", "garden plot", "playground", "table top", "picture frame", "field")
EVENTS = ("red", "blue", "green", "yellow", "white", "black", "striped", "spotted")

# Problem templates per domain; {o} openers, {n}/{m} names, {x} objects, {p} places, {a}.. numbers.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "arithmetic": (
        "{o}{n} has {a} {x} {p} and buys {b} more, then gives {c} of them to {m}. "
        "How many {x} does {n} have now?",
        "{o}{n} sells {x} {p} for {a} dollars each and sells {b} of them before noon and {c} "
        "after noon. How many dollars does {n} earn in total?",
        "{o}a box holds {a} {x}. {n} fills {b} boxes and {m} fills {c} boxes {p}. "
        "How many {x} do they pack together?",
    ),
    "algebra": (
        "{o}{n} thinks of a number, multiplies it by {a}, adds {b} and gets {d}. "
        "What number did {n} think of?",
        "{o}{n} has {a} more {x} than {m}, and together they have {d} {x} {p}. "
        "How many {x} does {m} have?",
        "{o}the sum of two consecutive multiples of {a} is {d}. What is the larger of the two "
        "numbers?",
    ),
    "geometry": (
        "{o}a {s} is {a} metres long and {b} metres wide. {n} wants to put a fence around it. "
        "How many metres of fence are needed?",
        "{o}{n} draws a right triangle whose legs measure {a} cm and {b} cm {p}. What is the "
        "area of the triangle in square centimetres?",
        "{o}{n} paces around a square {s} {p} and finds that its perimeter is {d} metres. "
        "What is its area in square metres?",
    ),
    "probability": (
        "{o}a bag {p} contains {a} {e} {x} and {b} {f} {x}. {n} draws one at random. What is "
        "the probability, as a fraction, that it is {e}?",
        "{o}{n} rolls two fair dice with {a} faces each. What is the probability that both "
        "dice show the same number?",
        "{o}{n} flips a fair coin {a} times {p}. How many different sequences of heads and "
        "tails are possible?",
    ),
    "number theory": (
        "{o}what is the remainder when {d} is divided by {a}?",
        "{o}{n} arranges {d} {x} into equal rows of more than one {p}. What is the greatest "
        "common divisor of {d} and {b}?",
        "{o}how many positive divisors does the number {d} have, counting 1 and {d} itself?",
    ),
    "combinatorics": (
        "{o}{n} has {a} different {x} and wants to pick {c} of them to take {p}. In how many "
        "ways can {n} choose them?",
        "{o}in how many ways can {a} friends, including {n} and {m}, stand in a line {p} if "
        "{n} must stand first?",
        "{o}a club for fans of {x} {p} has {a} members, {n} among them. In how many ways can "
        "they choose a president and a secretary who are different people?",
    ),
}
# Evaluation questions use a vocabulary of their own, so only the planted copies share 8-grams.
EVAL_SUBJECTS = (
    "locomotive", "cyclist", "submarine", "glider", "caravan", "ferry", "tractor", "balloon",
)
EVAL_CITIES = (
    "Vantor", "Quillby", "Marrowgate", "Elsdon", "Pemberlake", "Oxwick", "Thornvale", "Ardley",
)
EVAL_TEMPLATES = (
    "A {v} departs {c1} heading toward {c2} travelling {a} kilometres hourly while a second {w} "
    "leaves {c2} simultaneously travelling {b} kilometres hourly; the towns lie {d} kilometres "
    "apart. After how many hours do they meet?",
    "Warehouse inventory at {c1} records {a} crates of copper wire, {b} crates of brass fittings "
    "and {d} crates of ceramic insulators. What fraction of all crates contain brass fittings?",
    "Meteorologists near {c1} observed rainfall totalling {a} millimetres across {b} consecutive "
    "days, then {d} millimetres over the following fortnight. What was the mean daily rainfall?",
)
# Reasoning words of the synthetic thinking traces.
THINKING_WORDS = (
    "so", "the", "we", "need", "to", "find", "first", "then", "let", "me", "check", "this",
    "that", "means", "because", "total", "number", "each", "multiply", "add", "subtract",
    "divide", "gives", "equals", "wait", "actually", "again", "carefully", "step", "count",
    "which", "is", "of", "and", "it", "answer", "should", "be", "hmm", "right", "verify",
    "remaining", "sum", "product", "difference", "case", "both", "all", "possible", "ways",
)


def _question(rng: random.Random, domain: str) -> tuple[str, str]:
    """A word problem of the domain and a numeric reference answer (not checked: no solver)."""
    template = rng.choice(TEMPLATES[domain])
    name, other = rng.sample(NAMES, 2)
    numbers = {k: rng.randint(2, 60) for k in "abc"}
    first, second = rng.sample(EVENTS, 2)
    text = template.format(
        o=rng.choice(OPENERS), n=name, m=other, x=rng.choice(OBJECTS), p=rng.choice(PLACES),
        s=rng.choice(SHAPES), e=first, f=second, d=rng.randint(60, 9999), **numbers,
    )
    text = text[0].upper() + text[1:]
    if rng.random() < 0.8:
        text = rng.choice(CONTEXTS).format(m=other) + " " + text
    return text, str(rng.randint(1, 5000))


def _eval_question(rng: random.Random) -> str:
    vehicle, other = rng.sample(EVAL_SUBJECTS, 2)
    city, city2 = rng.sample(EVAL_CITIES, 2)
    return rng.choice(EVAL_TEMPLATES).format(
        v=vehicle, w=other, c1=city, c2=city2, a=rng.randint(10, 990), b=rng.randint(10, 990),
        d=rng.randint(100, 9990),
    )


def _shout_and_space(rng: random.Random, text: str) -> str:
    """The same text after case and white-space changes only (an exact duplicate to curate)."""
    cased = rng.choice((text.upper(), text.lower(), text.swapcase()))
    return "  ".join(cased.split(" ")) + rng.choice(("", " ", "\n", "\t"))


def _thinking(rng: random.Random, answer: str, long: bool) -> str:
    words = rng.randint(900, 1500) if long else int(20 + 580 * rng.random() ** 1.5)
    body = rng.choices(THINKING_WORDS, k=words)
    for k in range(0, words, 12):  # numbers, as in real arithmetic reasoning
        body[k] = str(rng.randint(1, 999))
    return " ".join(body) + f". So the answer is {answer}."


def write_synthetic(run_dir: Path, items: int, seed: int) -> dict[str, int]:
    """Write pool.jsonl, traces.jsonl and eval.jsonl into run_dir; return the planted counts."""
    rng = random.Random(seed)
    evals = [_eval_question(rng) for _ in range(2000)]
    with (run_dir / EVAL_FILE).open("w", encoding="utf-8") as handle:
        for text in evals:
            handle.write(json.dumps({"question": text, "answer": str(rng.randint(1, 99))}) + "\n")
    planted = dict.fromkeys(
        ("no domain", "duplicate", "formatting", "incorrect", "long trace", "contaminated",
         "no trace", "placeholder"), 0,
    )
    questions: list[Question] = []
    traces: list[dict[str, Any]] = []
    for index in range(items):
        roll = rng.random()
        if questions and roll < 0.02:
            original = rng.choice(questions)
            text, answer, domain = (
                _shout_and_space(rng, original.question), original.answer, original.domain
            )
            planted["duplicate"] += 1
        else:
            domain = rng.choice(DOMAINS)
            text, answer = _question(rng, domain)
            if roll < 0.03:
                text = "As shown in the figure below, " + text[0].lower() + text[1:]
                planted["formatting"] += 1
            elif roll < 0.035:
                words = " ".join(rng.choice(evals).split())
                run_of = words.split(" ")
                start = rng.randrange(len(run_of) - 8)
                text = f"{' '.join(run_of[start : start + 8])} Now, {text[0].lower()}{text[1:]}"
                planted["contaminated"] += 1
            elif roll < 0.037:
                answer = rng.choice(("n/a", "?", "unknown"))
                planted["placeholder"] += 1
            if rng.random() < 0.3:
                domain = None
        planted["no domain"] += domain is None
        item_id = f"syn-{index:06d}"
        questions.append(Question(
            id=item_id, question=text, answer=answer, domain=domain, source="synthetic"
        ))
        if rng.random() < 0.005:
            planted["no trace"] += 1
            continue
        correct = rng.random() >= 0.05
        planted["incorrect"] += not correct
        extracted = answer if correct else str(rng.randint(1, 5000))
        long = rng.random() < 0.04
        planted["long trace"] += long
        thinking = _thinking(rng, extracted, long)
        traces.append({
            "id": item_id, "domain": domain, "thinking": thinking,
            "answer": f"The answer is {extracted}.", "extracted": extracted, "correct": correct,
            "teacher": "synthetic", "model": "synthetic-teacher",
            "tokens": {"input": 20 + len(text) // 4, "output": len(thinking) // 4,
                       "cached_input": 0},
        })
    write_questions(run_dir / POOL, questions)
    with (run_dir / TRACES).open("w", encoding="utf-8") as handle:
        for trace in traces:
            handle.write(json.dumps(trace, ensure_ascii=False) + "\n")
    return planted


def verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000, help="pool size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--target", type=int, default=1000, help="items to select")
    parser.add_argument("--max-trace-tokens", type=int, default=1024)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument(
        "--near-duplicates", action=argparse.BooleanOptionalAction, default=True,
        help="run the embedding near-duplicate stage (cosine >= --near-duplicate-threshold)",
    )
    parser.add_argument("--near-duplicate-threshold", type=float, default=0.95)
    parser.add_argument(
        "--run-dir", type=Path, default=None,
        help="write the synthetic run here and keep it (default: a temporary directory)",
    )
    return parser.parse_args(argv)


def bench(args: argparse.Namespace, run_dir: Path, console: Console) -> None:
    started = time.perf_counter()
    planted = write_synthetic(run_dir, args.items, args.seed)
    console.print(
        f"synthetic pool: {args.items} items in {run_dir} "
        f"({time.perf_counter() - started:.1f} s to write, not timed); planted: "
        + ", ".join(f"{name} {count}" for name, count in planted.items())
    )
    config = CurateConfig(
        target=args.target,
        eval_sets=[str(run_dir / EVAL_FILE)],
        near_duplicate_threshold=args.near_duplicate_threshold if args.near_duplicates else None,
        max_trace_tokens=args.max_trace_tokens,
        clusters=args.clusters,
    )
    started = time.perf_counter()
    result = run(config, run_dir, RichEvents(console))
    total = time.perf_counter() - started

    table = Table(title=f"frugal curate on {args.items} synthetic items (wall clock per stage)")
    for column in ("stage", "in", "dropped", "out", "seconds", "items/s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for step in result.funnel.steps:
        rate = step["items_per_second"]
        table.add_row(
            step["stage"], str(step["in"]), str(step["dropped"]), str(step["out"]),
            f"{step['seconds']:.2f}", "-" if rate is None else f"{rate:,.0f}",
        )
    console.print(table)
    stages = sum(step["seconds"] for step in result.funnel.steps)
    console.print(
        f"total: {total:.1f} s for the whole run call ({stages:.1f} s in the stages, "
        f"{total - stages:.1f} s reading the pool and traces and writing the outputs)"
    )
    console.print(
        f"target: all stages together < {TARGET_SECONDS:.0f} s: {total:.1f} s  "
        f"{verdict(total < TARGET_SECONDS)}"
    )
    console.print(f"selected: {len(result.selected)} of {args.target} asked")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console()
    load = os.getloadavg()[0]
    console.print(f"load average before the run: {load:.2f} ({os.cpu_count()} cores)")
    if load > 0.5:
        console.print(
            f"[yellow]warning: load average {load:.2f} > 0.5; other processes on these cores "
            "slow the tokenizer, the embeddings and k-means and skew every timing[/yellow]"
        )
    if args.run_dir is not None:
        args.run_dir.mkdir(parents=True, exist_ok=True)
        bench(args, args.run_dir, console)
    else:
        with tempfile.TemporaryDirectory(prefix="frugal-bench-curate-") as tmp:
            bench(args, Path(tmp), console)


if __name__ == "__main__":
    main()
