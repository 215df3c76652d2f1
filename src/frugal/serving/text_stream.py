"""Text of generated tokens as it grows, with stop strings: what streaming and `stop` need.

Each token is detokenised once, by the tokenizers library's `DecodeStream` (linear in the
length, and it keeps characters that span several tokens whole), instead of decoding the whole
section again on every token. With stop strings, text that could still turn out to be the start
of one is held back until it cannot, and the first stop that appears ends the text there (the
OpenAI semantics: the stop itself is not returned unless asked for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers.decoders import DecodeStream


class TextStream:
    """One section's text, token by token; `add` returns what may be sent now."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = (), *,
                 skip_special_tokens: bool = True, include_stop: bool = False) -> None:
        self._backend = tokenizer.backend_tokenizer
        self._decoder = DecodeStream(skip_special_tokens=skip_special_tokens)
        self._include_stop = include_stop
        self._floor = 0  # stops are looked for from here (where they were switched on)
        self.text = ""
        self.sent = 0  # characters of `text` already handed out
        self.tokens = 0  # tokens added before the text ended (the stop's token included)
        self.stopped_on: str | None = None
        self.watch(stops)

    @property
    def watching(self) -> bool:
        return bool(self._stops)

    def watch(self, stops: Sequence[str]) -> None:
        """Look for `stops` in the text that comes from now on."""
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._floor = len(self.text)

    def add(self, token_id: int) -> str:
        if self.stopped_on is not None:
            return ""
        self.tokens += 1
        piece = self._decoder.step(self._backend, token_id)
        if not piece:
            return ""  # half a character: wait for the rest
        searched_from = max(self._floor, len(self.text) - self._hold)
        self.text += piece
        if self._stops:
            found = [(index, stop) for stop in self._stops
                     if (index := self.text.find(stop, searched_from)) >= 0]
            if found:
                index, stop = min(found)
                self.stopped_on = stop
                self.text = self.text[: index + (len(stop) if self._include_stop else 0)]
                return self._release(len(self.text))
            return self._release(max(self._floor, len(self.text) - self._hold))
        return self._release(len(self.text))

    def flush(self) -> str:
        """Whatever was held back, once no more tokens will come."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent : upto], upto
        return piece
