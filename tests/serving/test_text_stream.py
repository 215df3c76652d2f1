"""Incremental text with stop strings, against the tokenizer's own whole-sequence decode."""

from __future__ import annotations

from typing import Any

from frugal.serving.text_stream import TextStream

TEXT = "Café au lait ☕ costs 3,50 €.\nThen: done. 日本語 too! END here, END again."


def pieces(stream: TextStream, ids: list[int]) -> list[str]:
    return [stream.add(i) for i in ids] + [stream.flush()]


def test_pieces_join_to_the_whole_decode_multibyte_characters_intact(
        smollm2_tokenizer: Any) -> None:
    ids = smollm2_tokenizer.encode(TEXT, add_special_tokens=False)
    stream = TextStream(smollm2_tokenizer)
    out = pieces(stream, ids)
    assert "".join(out) == smollm2_tokenizer.decode(ids) == TEXT
    assert not any("\ufffd" in piece for piece in out)  # no half characters sent
    assert stream.tokens == len(ids)


def test_special_tokens_are_skipped_or_kept_as_asked(smollm2_tokenizer: Any) -> None:
    ids = smollm2_tokenizer.encode("a<|im_end|>b", add_special_tokens=False)
    assert "".join(pieces(TextStream(smollm2_tokenizer), ids)) == "ab"
    kept = TextStream(smollm2_tokenizer, skip_special_tokens=False)
    assert "".join(pieces(kept, ids)) == "a<|im_end|>b"


def test_the_first_stop_ends_the_text_and_is_never_sent(smollm2_tokenizer: Any) -> None:
    ids = smollm2_tokenizer.encode(TEXT, add_special_tokens=False)
    stream = TextStream(smollm2_tokenizer, ["END", "done."])
    out = pieces(stream, ids)
    assert "".join(out) == stream.text == "Café au lait ☕ costs 3,50 €.\nThen: "
    assert stream.stopped_on == "done."
    # The stream stopped at the token that completed the stop, not at the end.
    assert stream.tokens < len(ids)
    assert not any("d" in piece and "done" in piece for piece in out)


def test_a_stop_split_across_tokens_is_held_back_until_decided(smollm2_tokenizer: Any) -> None:
    ids = smollm2_tokenizer.encode("abc xyz STOP tail", add_special_tokens=False)
    stream = TextStream(smollm2_tokenizer, [" STOP"], include_stop=True)
    sent = ""
    for token_id in ids:
        sent += stream.add(token_id)
        assert " STO" not in sent or stream.stopped_on  # never a prefix without its decision
    assert sent + stream.flush() == "abc xyz STOP"


def test_stops_watched_from_the_middle_ignore_the_text_before(smollm2_tokenizer: Any) -> None:
    encode = smollm2_tokenizer.encode
    stream = TextStream(smollm2_tokenizer)
    before = "".join(stream.add(i) for i in encode("x = 1\n", add_special_tokens=False))
    stream.watch(["\n"])
    after = "".join(stream.add(i) for i in encode("answer 2\nmore", add_special_tokens=False))
    assert before == "x = 1\n" and after + stream.flush() == "answer 2"
    assert stream.stopped_on == "\n"
