"""EndpointEngine: budget forcing driven from the client over a real completions server.

The server (`tests.completions_server`) runs a real model over real sockets; the same weights run
in the local engine, so the client-side forcing must give the very same tokens, forced flags,
sections and counts. The model is the tiny random one with the end-of-thinking and end-of-turn
rows of its output layer scaled up, so it tries to stop early often: every branch (Waits for the
minimum and for num_waits, the cap, its own end of thinking, an end of turn inside thinking, the
answer cap) is taken.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from frugal.endpoint_engine import EndpointConfig, EndpointEngine
from frugal.events import RecordedEvents
from frugal.generation import BudgetConfig, BudgetForcingEngine, GenerationResult
from frugal.serve import ServeConfig

from .completions_server import CompletionsServer
from .conftest import lively_model
from .engine_cases import BRANCH_BUDGETS as BUDGETS
from .engine_cases import BRANCH_IDS
from .engine_cases import BRANCH_QUESTIONS as QUESTIONS


@pytest.fixture(scope="module")
def server(early_stopper: Any, smollm2_tokenizer: Any) -> Any:
    with CompletionsServer(early_stopper, smollm2_tokenizer, name="tiny") as running:
        yield running


def endpoint(server: CompletionsServer, tokenizer: Any) -> EndpointEngine:
    return EndpointEngine(EndpointConfig(base_url=server.base_url, model="tiny", concurrency=4),
                          tokenizer)


def fields(result: GenerationResult) -> tuple[Any, ...]:
    return (result.token_ids, result.forced, result.sections, result.thinking_tokens,
            result.answer_tokens, result.waits, result.forced_max, result.finish_reason,
            result.thinking, result.answer)


@pytest.mark.parametrize("budget", BUDGETS, ids=BRANCH_IDS)
def test_the_endpoint_gives_the_local_engines_tokens(
    server: CompletionsServer, early_stopper: Any, smollm2_tokenizer: Any, budget: BudgetConfig
) -> None:
    local = BudgetForcingEngine(early_stopper, smollm2_tokenizer).generate(
        QUESTIONS, budget, batch_size=1
    )
    remote = endpoint(server, smollm2_tokenizer).generate(QUESTIONS, budget)
    assert [r.index for r in remote] == list(range(len(QUESTIONS)))
    for mine, theirs in zip(remote, local, strict=True):
        assert fields(mine) == fields(theirs)
        # The invariants, whatever the model does.
        assert mine.thinking_tokens <= budget.max_thinking_tokens
        assert mine.answer_tokens <= budget.max_answer_tokens
        if not mine.forced_max:
            assert mine.thinking_tokens >= budget.min_thinking_tokens
            assert mine.waits >= budget.num_waits


def test_every_branch_was_taken(server: CompletionsServer, smollm2_tokenizer: Any) -> None:
    engine = endpoint(server, smollm2_tokenizer)
    results = [r for budget in BUDGETS for r in engine.generate(QUESTIONS, budget)]
    assert any(r.waits for r in results) and any(r.forced_max for r in results)
    assert any(not r.forced_max and "delimiter" in r.sections for r in results)
    assert {r.finish_reason for r in results} == {"end_of_turn", "max_answer_tokens"}


def test_requests_carry_token_ids_and_continue_the_same_prefix(
    server: CompletionsServer, smollm2_tokenizer: Any
) -> None:
    before = len(server.requests)
    budget = BUDGETS[2]
    (result,) = endpoint(server, smollm2_tokenizer).generate(QUESTIONS[:1], budget)
    sent = server.requests[before:]
    assert len(sent) >= 2 + result.waits  # one request per Wait, plus the answer
    for body in sent:
        assert all(isinstance(t, int) for t in body["prompt"])
        assert body["return_token_ids"] is True and body["stop_token_ids"]
    # Each continuation starts with everything sent before: the server's prefix cache applies.
    for earlier, later in zip(sent, sent[1:], strict=False):
        assert later["prompt"][: len(earlier["prompt"])] == earlier["prompt"]
    assert sent[-1]["max_tokens"] <= budget.max_answer_tokens


def test_a_plain_text_marker_is_refused_with_the_fix(gemma3_tokenizer: Any) -> None:
    config = EndpointConfig(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ValueError, match="local engine"):
        EndpointEngine(config, gemma3_tokenizer)


def test_eval_on_an_endpoint_writes_what_a_local_eval_writes(
    server: CompletionsServer, early_dir: Any, tmp_path: Any
) -> None:
    import json

    from typer.testing import CliRunner

    from frugal.cli import app

    common = ["eval", "--run", str(tmp_path), "--model", str(early_dir), "--limit", "6",
              "--max-thinking-tokens", "8,24", "--num-waits", "0,2", "--max-answer-tokens", "6"]
    local = CliRunner().invoke(app, [*common, "--label", "local", "--batch-size", "1",
                                     "--dtype", "float32"])
    assert local.exit_code == 0, local.output
    remote = CliRunner().invoke(app, [*common, "--label", "remote", "--engine", server.base_url,
                                      "--engine-model", "tiny"])
    assert remote.exit_code == 0, remote.output

    def rows(label: str) -> list[dict[str, Any]]:
        lines = (tmp_path / "eval" / label / "results.jsonl").read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: (r["budget"], r["id"]))

    assert rows("remote") == rows("local") and len(rows("local")) == 6 * 4
    summaries = {label: json.loads((tmp_path / "eval" / label / "summary.json").read_text())
                 for label in ("local", "remote")}
    assert summaries["remote"]["points"] == summaries["local"]["points"]
    from frugal.evaluate import SCALING_PLOT

    assert (tmp_path / SCALING_PLOT).is_file()  # one plot with both curves


def test_curation_reference_models_and_teachers_run_on_an_endpoint(
    early_stopper: Any, smollm2_tokenizer: Any, early_dir: Any, tmp_path: Any
) -> None:

    from frugal.curation.difficulty import solved_by
    from frugal.questions import Question

    questions = [Question(id=f"q{i}", question=q, answer=str(4 * i + 1), source="test")
                 for i, q in enumerate(QUESTIONS)]
    budget = BudgetConfig(max_thinking_tokens=16, max_answer_tokens=6)
    quiet = RecordedEvents()
    local = solved_by(questions, str(early_dir), budget, tmp_path / "local", batch_size=1,
                      events=quiet)
    # A server that serves the reference model under its own name (the spec).
    with CompletionsServer(early_stopper, smollm2_tokenizer, name=str(early_dir)) as server:
        engine = EndpointConfig(base_url=server.base_url, model="ignored")
        remote = solved_by(questions, str(early_dir), budget, tmp_path / "remote",
                           events=quiet, engine=engine)
        assert server.requests and {r["model"] for r in server.requests} == {str(early_dir)}
    assert remote == local and len(local) == len(questions)
    # Both passes reported through the events channel: one bar each, every question counted.
    assert [bar.done for bar in quiet.bars] == [len(questions)] * 2

    def answers(run_dir: Any) -> list[tuple[str, str]]:
        from frugal.teacher_cache import TeacherCache

        with TeacherCache(run_dir / "teacher-cache.sqlite") as cache:
            rows = cache._db.execute("SELECT question_id, response FROM responses").fetchall()
        return sorted((qid, response) for qid, response in rows)

    # The very answers the local engine wrote, not just the same verdicts.
    local_answers = [(q, json.loads(r)["completions"]) for q, r in answers(tmp_path / "local")]
    remote_answers = [(q, json.loads(r)["completions"]) for q, r in answers(tmp_path / "remote")]
    assert remote_answers == local_answers and len(local_answers) == len(questions)


def test_generate_on_an_endpoint_prints_thinking_and_answer(
    server: CompletionsServer, early_dir: Any, early_stopper: Any, smollm2_tokenizer: Any
) -> None:
    import json

    from typer.testing import CliRunner

    from frugal.cli import app

    options = ["--model", str(early_dir), "--max-thinking-tokens", "24",
               "--min-thinking-tokens", "8", "--max-answer-tokens", "6", "--json"]
    result = CliRunner().invoke(app, ["generate", QUESTIONS[0], *options,
                                      "--engine", server.base_url, "--engine-model", "tiny"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    budget = BudgetConfig(max_thinking_tokens=24, min_thinking_tokens=8, max_answer_tokens=6)
    (local,) = BudgetForcingEngine(early_stopper, smollm2_tokenizer).generate(
        QUESTIONS[:1], budget)
    assert printed["thinking"] == local.thinking and printed["answer"] == local.answer
    bad = CliRunner().invoke(app, ["generate", "hi", "--engine", "ftp://x"])
    assert bad.exit_code == 1 and "local" in bad.output


def test_a_refused_row_fails_alone_when_it_can_be_told(
    server: CompletionsServer, smollm2_tokenizer: Any
) -> None:
    import openai

    from frugal.generation import Job, ListSource

    engine = endpoint(server, smollm2_tokenizer)
    budget = BudgetConfig(max_thinking_tokens=8, max_answer_tokens=4)
    errors: list[BaseException] = []
    jobs = [Job(engine.format.generation_prompt(q), budget, index=i,
                adapter="not-served" if i == 1 else None, on_error=errors.append)
            for i, q in enumerate(QUESTIONS[:3])]
    done: list[GenerationResult] = []
    engine.run_jobs(ListSource(jobs, engine.format.encode), 3, done.append)
    assert sorted(r.index for r in done) == [0, 2]  # the others finished
    assert len(errors) == 1 and isinstance(errors[0], openai.NotFoundError)
    # Without a place to report it (an evaluation), the failure ends the run, never a silent gap.
    jobs = [Job(engine.format.generation_prompt(QUESTIONS[0]), budget, adapter="not-served")]
    with pytest.raises(openai.NotFoundError):
        engine.run_jobs(ListSource(jobs, engine.format.encode), 1, done.append)


def test_a_row_whose_client_left_stops_mid_request(smollm2_tokenizer: Any) -> None:
    import time

    from frugal.generation import Job, ListSource

    # The plain lively model almost never ends its thinking: 6,000 tokens take seconds.
    with CompletionsServer(lively_model(), smollm2_tokenizer, name="slow") as slow:
        engine = EndpointEngine(EndpointConfig(base_url=slow.base_url, model="slow"),
                                smollm2_tokenizer)
        started = time.monotonic()
        job = Job(engine.format.generation_prompt("Count to ten thousand."),
                  BudgetConfig(max_thinking_tokens=6000, max_answer_tokens=4),
                  cancelled=lambda: time.monotonic() > started + 0.3)
        done: list[GenerationResult] = []
        engine.run_jobs(ListSource([job], engine.format.encode), 1, done.append)
        took = time.monotonic() - started
        deadline = time.monotonic() + 5
        while not slow.aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.aborted == 1  # the server saw the hang-up and stopped generating
    assert done[0].finish_reason == "cancelled" and done[0].token_ids == []
    assert took < 2.0, f"the row waited {took:.1f} s for a reply nobody wanted"


def test_frugal_serve_is_itself_an_endpoint(early_stopper: Any, early_dir: Any,
                                             smollm2_tokenizer: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint engine driving `frugal serve`'s /v1/completions (token-id prompts, stops on
    the end-of-thinking marker, so the server only continues) gives the local engine's tokens."""
    from .serving.conftest import start

    monkeypatch.setenv("FRUGAL_ENGINE_API_KEY", "served-key")
    running = start(ServeConfig(target=str(early_dir), served_name="tiny", api_key="served-key",
                                dtype="float32", max_thinking_tokens=64,
                                max_answer_tokens=16))
    try:
        engine = EndpointEngine(EndpointConfig(base_url=running.base_url, model="tiny",
                                               concurrency=4), smollm2_tokenizer)
        local = BudgetForcingEngine(early_stopper, smollm2_tokenizer)
        results = []
        for budget in BUDGETS:
            remote = engine.generate(QUESTIONS[:4], budget)
            alone = local.generate(QUESTIONS[:4], budget, batch_size=1)
            assert [fields(r) for r in remote] == [fields(r) for r in alone]
            results += remote
        assert any(r.waits for r in results) and any(r.forced_max for r in results)
    finally:
        running.stop()


def test_only_rows_whose_tokens_are_awaited_are_asked_for_a_few_at_a_time(
    lively_dir: Any, smollm2_tokenizer: Any
) -> None:
    """`frugal serve` in front of a completions server: a plain chat asks for a whole section
    per request (each request costs a round trip, and the row misses a batch step while it
    is away); a streaming chat, and one with stop strings (which end the row when their text
    appears), ask STREAM_CHUNK tokens at a time. All three get the same greedy text."""
    from openai import OpenAI

    from frugal.endpoint_engine import STREAM_CHUNK

    from .serving.conftest import start

    # The lively model almost never ends its thinking or its turn: every section runs to its cap.
    with CompletionsServer(lively_model(), smollm2_tokenizer, name="lively") as backend:
        running = start(ServeConfig(target=str(lively_dir), served_name="tiny",
                                    engine=backend.base_url, engine_model="lively",
                                    max_thinking_tokens=64, max_answer_tokens=32))
        try:
            client = OpenAI(base_url=running.base_url, api_key="none", max_retries=0)

            def asked(**options: Any) -> tuple[str, list[int]]:
                before = len(backend.requests)
                reply = client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": QUESTIONS[0]}],
                    max_tokens=24, temperature=0, extra_body={"max_thinking_tokens": 40},
                    **options)
                if options.get("stream"):
                    text = "".join(chunk.choices[0].delta.content or "" for chunk in reply
                                   if chunk.choices)
                else:
                    text = reply.choices[0].message.content
                return text, [body["max_tokens"] for body in backend.requests[before:]]

            plain_text, plain = asked()
            streamed_text, streamed = asked(stream=True)
            stopped_text, stopped = asked(stop=["never in this text"])
        finally:
            running.stop()
    # The thinking to its cap, then the answer: 24 tokens less the forced answer prefix.
    assert len(plain) == 2 and plain[0] == 40 and 16 < plain[1] <= 24
    in_chunks = [min(STREAM_CHUNK, section - start) for section in plain
                 for start in range(0, section, STREAM_CHUNK)]
    assert streamed == stopped == in_chunks
    assert plain_text and streamed_text == stopped_text == plain_text
