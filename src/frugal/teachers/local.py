"""Teachers that run a local transformers model through frugal's generation engine.

- `hf`: a (usually stronger) local model answers each question once, with budget forcing.
- `self`: rejection sampling (STaR): the student samples k answers per question; distill grades
  them, keeps a correct one as the trace and records the pass rate, a difficulty signal for
  curation (s1 drops what the model already solves; open-r1 keeps a pass-rate band).

Responses go to the sink as soon as a question's rows finish, so an interrupted run keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from frugal.generation import BudgetForcingEngine, Engine, GenerationResult
from frugal.questions import Question
from frugal.settings.teachers import LocalTeacherConfig
from frugal.teachers.base import (
    SYSTEM_PROMPT,
    Completion,
    ResponseSink,
    Teacher,
    TeacherResponse,
)


class HFTeacher(Teacher):
    kind = "hf"

    def __init__(self, config: LocalTeacherConfig, loaded: Any | None = None) -> None:
        self.config = config
        self._loaded = loaded

    @property
    def model(self) -> str:
        return self.config.model

    def cache_params(self) -> dict[str, Any]:
        from frugal.endpoint_config import engine_key
        from frugal.models import fingerprint

        return {
            "budget": self.config.budget.model_dump(),
            "samples": self._samples,
            "weights": fingerprint(self.config.model),
            # A server's weights are its own: answers from it are not the local model's.
            **({"engine": engine_key(self.config.engine, self.config.llama_cpp)}
               if self.config.engine else {}),
        }

    @property
    def _samples(self) -> int:
        return 1

    def _engine(self, resources: ExitStack) -> Engine:
        """The local engine, or an endpoint engine on the configured server (one started
        here, and stopped with `resources`, for vllm / llama.cpp)."""
        endpoint = self.config.engine
        if endpoint is not None:
            from frugal.endpoint_engine import EndpointEngine
            from frugal.models import load_tokenizer

            tokenizer = load_tokenizer(self.config.model)
            if isinstance(endpoint, str):
                from frugal.engine_servers import (
                    PROMPT_TOKENS_BOUND,
                    context_length,
                    managed_endpoint,
                )

                budget = self.config.budget
                endpoint = resources.enter_context(managed_endpoint(
                    endpoint, self.config.model, {}, dtype="auto",
                    llama_cpp=self.config.llama_cpp, context_tokens=context_length(
                        PROMPT_TOKENS_BOUND, budget.max_thinking_tokens,
                        budget.max_answer_tokens)))
            return EndpointEngine(endpoint, tokenizer)
        if self._loaded is None:
            from frugal.models import load_model

            self._loaded = load_model(self.config.model)
        return BudgetForcingEngine(self._loaded.model, self._loaded.tokenizer)

    def run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        with ExitStack() as resources:
            self._run(self._engine(resources), questions, sink)

    def _run(self, engine: Engine, questions: Sequence[Question], sink: ResponseSink) -> None:
        k = self._samples
        admitted: list[Question] = []
        for question in questions:
            prompt_tokens = len(engine.format.encode(engine.format.generation_prompt(
                question.question, SYSTEM_PROMPT
            )))
            limit = self.config.budget.max_thinking_tokens + self.config.budget.max_answer_tokens
            if not sink.admit(question, prompt_tokens * k, limit * k):
                break
            admitted.append(question)
        if not admitted:
            return
        finished: dict[int, list[GenerationResult]] = {}

        def on_row_done(result: GenerationResult) -> None:
            # Row i*k + j is sample j of question i: a question is complete after its k rows.
            question_index = result.index // k
            rows = finished.setdefault(question_index, [])
            rows.append(result)
            if len(rows) == k:
                rows.sort(key=lambda r: r.index)
                sink.put(admitted[question_index], self._response(engine, rows))

        texts = [q.question for q in admitted for _ in range(k)]
        # Sample j of a question is seeded by the question and j, not by its place in this
        # run, so a resumed or limited run draws the same samples as an uninterrupted one.
        seeds = [_seed(q.id, j) for q in admitted for j in range(k)]
        engine.generate(
            texts,
            self.config.budget,
            system=SYSTEM_PROMPT,
            batch_size=self.config.batch_size,
            on_row_done=on_row_done,
            seeds=seeds,
        )

    def _response(
        self, engine: Engine, rows: list[GenerationResult]
    ) -> TeacherResponse:
        prompt_tokens = len(engine.format.encode(rows[0].prompt))
        completions = [
            Completion(r.thinking, r.answer, len(r.token_ids)) for r in rows
        ]
        return TeacherResponse(
            completions=completions,
            input_tokens=prompt_tokens * len(rows),
            output_tokens=sum(c.output_tokens for c in completions),
            model=self.model,
            extra={"waits": [r.waits for r in rows], "forced_max": [r.forced_max for r in rows]},
        )


class SelfTeacher(HFTeacher):
    """STaR: k sampled answers from the student itself; distill keeps the correct ones."""

    kind = "self"

    def __init__(self, config: LocalTeacherConfig, loaded: Any | None = None) -> None:
        if config.budget.temperature == 0 and config.samples > 1:
            # k greedy samples would all be the same answer: sample instead.
            config = config.model_copy(
                update={"budget": config.budget.model_copy(update={"temperature": 0.8})}
            )
        super().__init__(config, loaded)

    @property
    def _samples(self) -> int:
        return self.config.samples


def _seed(question_id: str, sample: int) -> int:
    import hashlib

    return int(hashlib.sha256(f"{question_id}:{sample}".encode()).hexdigest()[:8], 16)
