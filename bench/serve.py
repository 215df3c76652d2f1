"""Serving throughput: `frugal serve` on SmolLM2 under 1, 4 and 16 concurrent clients.

One `frugal serve` process on 127.0.0.1 (loopback only); each client is a thread with the
official `openai` client sending a fixed number of chat requests one after another (greedy,
a thinking budget and an answer cap, GSM8K questions from ../shared/data). For each level of
concurrency it prints generated tokens per second (reasoning + answer tokens from `usage`, over
the wall time of the level), p50 and p95 request latency, and dollars per million tokens at the
stated 2-vCPU hourly price; then the ratio of 16-client to 1-client tokens/s (target >= 4).
Not a test: run it on an idle machine, `python bench/serve.py`.
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

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
# An on-demand 2-vCPU cloud machine (the class of c7i.large / e2-standard-2) costs about this.
PRICE_PER_HOUR = 0.09
LEVELS = (1, 4, 16)


def questions(count: int) -> list[str]:
    with GSM8K.open() as handle:
        lines = itertools.islice(handle, count)
        return [json.loads(line)["question"] for line in lines]


def start_server(args: argparse.Namespace) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "frugal.cli", "serve", args.model, "--port", str(args.port),
        "--max-batch-size", str(max(LEVELS)), "--machine-price-per-hour", str(PRICE_PER_HOUR),
        "--dtype", args.dtype,
    ]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=os.environ | {"COLUMNS": "200"})
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
        extra_body={"max_thinking_tokens": args.max_thinking_tokens},
    )
    return time.perf_counter() - started, reply.usage.completion_tokens


def level(api: OpenAI, model: str, clients: int, pool: list[str],
          args: argparse.Namespace) -> dict[str, Any]:
    def client(index: int) -> list[tuple[float, int]]:
        mine = [pool[(index * args.requests + k) % len(pool)] for k in range(args.requests)]
        return [one_request(api, model, q, args) for q in mine]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as executor:
        done = [r for rs in executor.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    latencies = sorted(seconds for seconds, _ in done)
    tokens = sum(count for _, count in done)
    rate = tokens / wall
    return {
        "clients": clients, "requests": len(done), "tokens": tokens, "seconds": wall,
        "tokens_per_second": rate,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "dollars_per_million": PRICE_PER_HOUR / (rate * 3600) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-thinking-tokens", type=int, default=64)
    parser.add_argument("--max-answer-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="server weights (auto: bfloat16 on "
                        "GPUs and AMX CPUs, else float32)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}; other work on these cores skews the ratios")
    server = start_server(args)
    try:
        api = OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="none",
                     timeout=600, max_retries=0)
        model = api.models.list().data[0].id
        pool = questions(max(LEVELS) * args.requests)
        one_request(api, model, pool[0], args)  # warm-up: first-call allocations
        results = [level(api, model, clients, pool, args) for clients in LEVELS]
        metrics = httpx.get(f"http://127.0.0.1:{args.port}/metrics").text
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    print(f"frugal serve {args.model} on 127.0.0.1, {args.requests} requests per client, "
          f"thinking <= {args.max_thinking_tokens}, answer <= {args.max_answer_tokens} tokens, "
          f"greedy, weights {inference_dtype(args.dtype)}; price ${PRICE_PER_HOUR}/h "
          "(an on-demand 2-vCPU machine)")
    print(f"{'clients':>7} {'requests':>8} {'tokens':>7} {'seconds':>8} {'tok/s':>7} "
          f"{'p50 s':>7} {'p95 s':>7} {'$/M tok':>8}")
    for r in results:
        print(f"{r['clients']:>7} {r['requests']:>8} {r['tokens']:>7} {r['seconds']:>8.1f} "
              f"{r['tokens_per_second']:>7.1f} {r['p50']:>7.2f} {r['p95']:>7.2f} "
              f"{r['dollars_per_million']:>8.3f}")
    ratio = results[-1]["tokens_per_second"] / results[0]["tokens_per_second"]
    verdict = "PASS" if ratio >= 4 else "FAIL"
    print(f"16-client / 1-client tokens/s = {ratio:.2f}  (target >= 4)  {verdict}")
    batch = [line for line in metrics.splitlines() if line.startswith("frugal_batch_size_")]
    count = next(float(x.split()[1]) for x in batch if x.startswith("frugal_batch_size_count"))
    total = next(float(x.split()[1]) for x in batch if x.startswith("frugal_batch_size_sum"))
    print(f"server: {count:.0f} decode steps, {total / count:.1f} rows per step on average")
    if args.json:
        args.json.write_text(json.dumps({"levels": results, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
