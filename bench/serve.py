"""Serving throughput: `frugal serve` on SmolLM2 under 1, 4 and 16 concurrent clients, on
each engine (frugal's local decode loop, llama.cpp's server behind frugal).

One `frugal serve` process per engine on 127.0.0.1 (loopback only); each client is a thread
with the official `openai` client sending a fixed number of chat requests one after another
(greedy, a thinking budget with an optional minimum, an answer cap, GSM8K questions from
../shared/data). For each engine and level of concurrency it prints generated tokens per second
(reasoning + answer tokens from `usage`, over the wall time of the level), p50 and p95 request
latency, and dollars per million tokens at the stated 2-vCPU hourly price; then the ratios:
16-client / 1-client on the local engine (target >= 4), llama.cpp / local at 1 client (>= 3)
and 16 clients (>= 2), llama.cpp's $/M tokens at 16 clients (<= 0.14), and what forcing costs
on llama.cpp: frugal's budget-forced requests against llama.cpp's server generating the same
number of tokens for the same prompts without forcing (>= 0.85). Not a test: run it on an idle
machine, `python bench/serve.py`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from frugal.models import inference_dtype
from frugal.settings.engines import GGUF_TYPES

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
# An on-demand 2-vCPU cloud machine (the class of c7i.large / e2-standard-2) costs about this.
PRICE_PER_HOUR = 0.09
LEVELS = (1, 4, 16)


def questions(count: int) -> list[str]:
    with GSM8K.open() as handle:
        lines = itertools.islice(handle, count)
        return [json.loads(line)["question"] for line in lines]


def start_server(args: argparse.Namespace, engine: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "frugal.cli", "serve", args.model, "--port", str(args.port),
        "--max-batch-size", str(max(LEVELS)), "--machine-price-per-hour", str(PRICE_PER_HOUR),
        "--dtype", args.dtype, "--engine", engine, "--llama-cpp-weights", args.gguf,
        "--llama-cpp-slots", str(max(LEVELS)),
    ]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"frugal-bench-serve-{engine}.log"
    with log.open("wb") as sink:  # the server's log, for when a level fails
        server = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                                  env=os.environ | {"COLUMNS": "200"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{args.port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError("frugal serve exited during start-up")
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("frugal serve did not come up in 300 s")


def one_request(api: OpenAI, model: str, question: str, args: argparse.Namespace) -> tuple[
        float, int]:
    started = time.perf_counter()
    reply = api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}],
        max_tokens=args.max_answer_tokens, temperature=0,
        extra_body={"max_thinking_tokens": args.max_thinking_tokens,
                    "min_thinking_tokens": args.min_thinking_tokens},
    )
    return time.perf_counter() - started, reply.usage.completion_tokens


def level(send: Any, clients: int, pool: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """`clients` threads, each sending its share of `pool` one request after another through
    `send(question index) -> (seconds, tokens)`."""
    def client(index: int) -> list[tuple[int, float, int]]:
        mine = [(index * args.requests + k) % len(pool) for k in range(args.requests)]
        return [(q, *send(q)) for q in mine]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as executor:
        done = [r for rs in executor.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    latencies = sorted(seconds for _, seconds, _ in done)
    tokens = sum(count for _, _, count in done)
    rate = tokens / wall
    return {
        "clients": clients, "requests": len(done), "tokens": tokens, "seconds": wall,
        "tokens_of": {q: count for q, _, count in done},
        "tokens_per_second": rate,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "dollars_per_million": PRICE_PER_HOUR / (rate * 3600) * 1e6,
    }


def frugal_levels(args: argparse.Namespace, engine: str, pool: list[str]) -> list[dict]:
    server = start_server(args, engine)
    try:
        api = OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="none",
                     timeout=600, max_retries=0)
        model = api.models.list().data[0].id
        one_request(api, model, pool[0], args)  # warm-up: first-call allocations

        def send(q: int) -> tuple[float, int]:
            return one_request(api, model, pool[q], args)

        return [level(send, clients, pool, args) | {"engine": engine} for clients in LEVELS]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def plain_llama_cpp(args: argparse.Namespace, pool: list[str], forced: list[dict]) -> list[dict]:
    """llama.cpp's own server, no frugal in front and no forcing: each question's prompt,
    generating exactly as many tokens as the forced request for it did, at the fewest and the
    most clients (what frugal's figures are bounded by)."""
    from frugal.llama_cpp_server import serve_with_llama_cpp
    from frugal.models import load_tokenizer
    from frugal.reasoning_format import ReasoningFormat
    from frugal.settings.engines import LlamaCppConfig

    fmt = ReasoningFormat.for_tokenizer(load_tokenizer(args.model))
    prompts = [fmt.encode(fmt.generation_prompt(q)) for q in pool]
    config = LlamaCppConfig(weights=args.gguf, slots=max(LEVELS))
    context = 512 + args.max_thinking_tokens + args.max_answer_tokens
    with serve_with_llama_cpp(args.model, {}, config=config,
                              context_tokens=context) as endpoint, httpx.Client() as http:
        url = endpoint.base_url.removesuffix("/v1") + "/completion"

        def sender(tokens_of: dict[int, int]) -> Any:
            def send(q: int) -> tuple[float, int]:
                started = time.perf_counter()
                reply = http.post(url, timeout=600, json={
                    "prompt": prompts[q], "n_predict": tokens_of[q], "temperature": 0,
                    "ignore_eos": True, "cache_prompt": True}).json()
                return time.perf_counter() - started, reply["tokens_predicted"]
            return send

        sender({0: 8})(0)  # warm-up
        return [level(sender(row["tokens_of"]), row["clients"], pool, args)
                | {"engine": "llama.cpp plain"} for row in (forced[0], forced[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-thinking-tokens", type=int, default=64)
    parser.add_argument("--min-thinking-tokens", type=int, default=32,
                        help="so that forcing (Waits) happens on every request")
    parser.add_argument("--max-answer-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="local engine weights (auto: bfloat16 "
                        "on GPUs and AMX CPUs, else float32)")
    parser.add_argument("--gguf", default="q8_0", choices=GGUF_TYPES,
                        help="llama.cpp's weights")
    parser.add_argument("--engines", default="local,llama.cpp")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}; other work on these cores skews the ratios")
    pool = questions(max(LEVELS) * args.requests)
    engines = args.engines.split(",")
    results = {engine: frugal_levels(args, engine, pool) for engine in engines}
    if "llama.cpp" in results:
        results["llama.cpp plain"] = plain_llama_cpp(args, pool, results["llama.cpp"])

    print(f"frugal serve {args.model} on 127.0.0.1, {args.requests} requests per client, "
          f"thinking {args.min_thinking_tokens}-{args.max_thinking_tokens}, answer <= "
          f"{args.max_answer_tokens} tokens, greedy; local weights {inference_dtype(args.dtype)}"
          f", llama.cpp {args.gguf}; price ${PRICE_PER_HOUR}/h (an on-demand 2-vCPU machine)")
    print(f"{'engine':>16} {'clients':>7} {'requests':>8} {'tokens':>7} {'seconds':>8} "
          f"{'tok/s':>7} {'p50 s':>7} {'p95 s':>7} {'$/M tok':>8}")
    for rows in results.values():
        for r in rows:
            print(f"{r['engine']:>16} {r['clients']:>7} {r['requests']:>8} {r['tokens']:>7} "
                  f"{r['seconds']:>8.1f} {r['tokens_per_second']:>7.1f} {r['p50']:>7.2f} "
                  f"{r['p95']:>7.2f} {r['dollars_per_million']:>8.3f}")

    def check(name: str, value: float, target: str, ok: bool) -> None:
        print(f"{name} = {value:.2f}  (target {target})  {'PASS' if ok else 'FAIL'}")

    if "local" in results:
        local = results["local"]
        ratio = local[-1]["tokens_per_second"] / local[0]["tokens_per_second"]
        check("local: 16-client / 1-client tokens/s", ratio, ">= 4", ratio >= 4)
    if "llama.cpp" in results:
        llama = results["llama.cpp"]
        if "local" in results:
            for i, target in ((0, 3), (-1, 2)):
                ratio = llama[i]["tokens_per_second"] / results["local"][i]["tokens_per_second"]
                check(f"llama.cpp / local at {llama[i]['clients']} client(s)", ratio,
                      f">= {target}", ratio >= target)
        price = llama[-1]["dollars_per_million"]
        check("llama.cpp $ per million tokens at 16 clients", price, "<= 0.14", price <= 0.14)
        plain = results["llama.cpp plain"]
        ratio = llama[-1]["tokens_per_second"] / plain[-1]["tokens_per_second"]
        check("forced through frugal / plain llama.cpp, same tokens, 16 clients", ratio,
              ">= 0.85", ratio >= 0.85)
        if "local" in results:  # not a target: the most llama.cpp alone gives these ratios
            for i in (0, -1):
                ceiling = plain[i]["tokens_per_second"] / results["local"][i]["tokens_per_second"]
                print(f"(plain llama.cpp / local at {plain[i]['clients']} client(s) = "
                      f"{ceiling:.2f}: the ceiling of llama.cpp / local)")
    if args.json:
        for rows in results.values():
            for r in rows:
                r.pop("tokens_of")
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
