"""The server speaks the OpenAI API as its clients expect: raw completions (text or token ids)
continue the prompt as vLLM's do, budget forcing applies inside an opened thinking section,
`stop` ends the answer, unsupported fields are refused by name, errors carry string codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from frugal.reasoning_format import ReasoningFormat

from .conftest import API_KEY, Running, client

QUESTION = "What is 12 plus 30?"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def raw(server: Running, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/completions", headers=AUTH, timeout=60,
                      json={"model": "tiny"} | body)


def test_a_raw_prompt_continues_as_the_model_itself_would(server: Running,
                                                          lively_dir: Path) -> None:
    reply = raw(server, prompt=QUESTION, max_tokens=8, return_token_ids=True).json()
    choice = reply["choices"][0]
    # transformers' own greedy generation on the same weights: the reference continuation.
    model = AutoModelForCausalLM.from_pretrained(lively_dir, dtype=torch.float32)
    tokenizer = ReasoningFormat.for_tokenizer(server.server.serving.format.tokenizer)
    prompt_ids = tokenizer.encode(QUESTION)
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt_ids]), max_new_tokens=8, do_sample=False,
                                  min_new_tokens=8)[0, len(prompt_ids):].tolist()
    assert choice["prompt_token_ids"] == prompt_ids
    assert choice["token_ids"] == expected
    assert choice["text"] == tokenizer.tokenizer.decode(expected, skip_special_tokens=True)
    assert choice["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 8
    assert "reasoning" not in choice  # raw: the continuation is all in `text`

    # The same prompt as token ids gives the same continuation.
    by_ids = raw(server, prompt=prompt_ids, max_tokens=8, return_token_ids=True).json()
    assert by_ids["choices"][0]["token_ids"] == expected
    assert raw(server, prompt=[prompt_ids], max_tokens=8).json()["choices"][0]["text"] == \
        choice["text"]


def test_inside_an_opened_thinking_section_the_budget_is_forced(server: Running) -> None:
    fmt = server.server.serving.format
    s1_prompt = fmt.generation_prompt(QUESTION)  # ends with "<|im_start|>think\n", as s1's
    assert fmt.ends_inside_thinking(s1_prompt)
    reply = client(server).completions.create(
        model="tiny", prompt=s1_prompt, max_tokens=5, extra_body={"max_thinking_tokens": 7})
    usage = reply.usage
    # The random model never ends its thinking: the cap forces the end and the answer prefix.
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert "Final Answer:" in reply.choices[0].text
    assert reply.choices[0].text.index("answer\n") > 0  # the delimiter, its marker skipped

    # A client that stops on the marker drives the thinking itself: plain continuation.
    marker = fmt.stop_token_id
    driven = client(server).completions.create(
        model="tiny", prompt=s1_prompt, max_tokens=9,
        extra_body={"stop_token_ids": [marker], "max_thinking_tokens": 7})
    assert driven.usage.completion_tokens == 9
    assert driven.usage.completion_tokens_details.reasoning_tokens == 0
    assert "Final Answer:" not in driven.choices[0].text
    # Token-level stops other than the marker would be ignored by forcing: refused by name.
    refused = raw(server, prompt=s1_prompt, stop_token_ids=[5])
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stop_token_ids"


def test_stop_strings_end_the_answer_with_finish_reason_stop(server: Running) -> None:
    api = client(server)
    messages = [{"role": "user", "content": QUESTION}]
    whole = api.chat.completions.create(model="tiny", messages=messages, max_tokens=12,
                                        extra_body={"max_thinking_tokens": 4})
    answer = whole.choices[0].message.content
    stop = answer[len(answer) // 2:][:3]
    assert stop.strip() and answer.find(stop) > 0
    cut = api.chat.completions.create(model="tiny", messages=messages, max_tokens=12, stop=stop,
                                      extra_body={"max_thinking_tokens": 4})
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == answer[: answer.find(stop)].strip()
    assert cut.usage.completion_tokens < whole.usage.completion_tokens
    assert cut.choices[0].message.reasoning_content == whole.choices[0].message.reasoning_content
    streamed = api.chat.completions.create(model="tiny", messages=messages, max_tokens=12,
                                           stop=[stop, "never appears"], stream=True,
                                           extra_body={"max_thinking_tokens": 4})
    content, finish = "", None
    for chunk in streamed:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert content.strip() == cut.choices[0].message.content and finish == "stop"

    # On a raw continuation the stop applies to all of it.
    text = raw(server, prompt=QUESTION, max_tokens=10).json()["choices"][0]["text"]
    stop = text[4:7]
    cut_raw = raw(server, prompt=QUESTION, max_tokens=10, stop=stop).json()["choices"][0]
    assert cut_raw["text"] == text[: text.find(stop)] and cut_raw["finish_reason"] == "stop"
    assert cut_raw["stop_reason"] == stop


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"12": 5}),
    ("frequency_penalty", 0.5), ("presence_penalty", 1.0),
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("response_format", {"type": "json_object"}),
])
def test_fields_it_cannot_honour_are_refused_by_name(server: Running, field: str,
                                                     value: Any) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client(server).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=2,
            extra_body={field: value})
    body = error.value.body
    assert body["param"] == field and body["code"] == "unsupported_parameter"
    assert field in body["message"]


def test_neutral_values_of_those_fields_are_accepted(server: Running) -> None:
    reply = client(server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=2,
        logprobs=False, frequency_penalty=0, presence_penalty=0, response_format={"type": "text"},
        extra_body={"max_thinking_tokens": 2})
    assert reply.choices[0].message.content is not None
    echo = raw(server, prompt=QUESTION, max_tokens=2, echo=True)
    assert echo.status_code == 400 and echo.json()["error"]["param"] == "echo"


def test_errors_carry_openai_string_codes(server: Running) -> None:
    def error(response: httpx.Response) -> dict[str, Any]:
        return response.json()["error"]

    missing = raw(server, model="nope", prompt="hi")
    assert missing.status_code == 404 and error(missing)["code"] == "model_not_found"
    long = raw(server, prompt="word " * 2000)
    assert long.status_code == 400 and error(long)["code"] == "context_length_exceeded"
    bad = raw(server, prompt="hi", max_tokens="lots")
    assert bad.status_code == 400 and error(bad)["code"] == "invalid_value"
    assert error(bad)["param"] == "max_tokens"
    outside = raw(server, prompt=[1, 2, 10**9])
    assert outside.status_code == 400 and "vocabulary" in error(outside)["message"]
    key = httpx.post(f"{server.base_url}/completions", json={"model": "tiny", "prompt": "x"})
    assert key.status_code == 401 and error(key)["code"] == "invalid_api_key"
    for status, body in ((404, error(missing)), (400, error(long)), (401, error(key))):
        assert isinstance(body["code"], str) and body["type"], status
