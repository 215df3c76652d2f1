"""Word n-grams and decontamination: the one rule curation and evaluation share.

Curation drops a training question that shares a word 8-gram with an evaluation set (s1's
rule); the evaluation guard warns about a benchmark question that shares one with the training
data. Both ask the same `Decontaminator`, so both ignore the same template wording.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Words are lowercase runs of \w (letters, digits, underscore). Punctuation and case therefore do
# not hide an overlap: "Tom's 3 apples," and "toms 3 APPLES" differ, but "tom's" gives the words
# "tom" and "s" in both the pool and the evaluation text, so copies that only change punctuation,
# case or white space are still caught.
_WORD = re.compile(r"\w+")
# Share of the indexed texts above which an n-gram is template wording, not a leak.
COMMON_SHARE = 0.01


def check_unique_ids(ids: Iterable[str]) -> None:
    # Results are keyed by id: a repeated id would make "drop x" ambiguous, so refuse it loudly.
    seen: set[str] = set()
    for item_id in ids:
        if item_id in seen:
            raise ValueError(f"duplicate item id {item_id!r}: every item needs its own id")
        seen.add(item_id)


def text_words(text: str) -> list[str]:
    """The lower-cased words of `text`, the unit of every n-gram."""
    return _WORD.findall(text.lower())


def word_ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    """All word n-grams of `text` (s1's decontamination unit is n = 8); empty if too short."""
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")
    words = text_words(text)
    return set(zip(*(words[k:] for k in range(n)), strict=False))


# --- Decontamination ---------------------------------------------------------------------------
#
# The index holds one 64-bit hash per distinct evaluation n-gram in a sorted numpy array (8 bytes
# per n-gram plus a small int per n-gram for the evaluation set; a Python set of tuples would cost
# ~150 bytes each). Hashes are deterministic, not Python's salted hash(): every word of the
# evaluation vocabulary gets a pseudo-random 64-bit code (splitmix64 of its index) and an n-gram
# hashes to a polynomial in those codes modulo 2**64. A pool word that is not in the evaluation
# vocabulary cannot be part of a shared n-gram, so windows containing one are skipped outright.
# A false match needs a 64-bit collision: with 10^6 evaluation and 10^7 pool n-grams that is a
# chance of about 10^-6 per run, and the reason quotes the pool's own words, so it can be checked.

_MASK64 = (1 << 64) - 1
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it is a bijection mod 2**64
# Pool texts are hashed in batches of this many items, so memory stays flat for any pool size.
_DECON_BATCH = 16_384


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Decontaminator:
    """Flags texts that share a word n-gram (default 8, as in s1) with any indexed set.

    `eval_sets` maps a set name (reported in reasons) to its texts, e.g. the questions and,
    if wanted, the solutions of a benchmark split. The one rule, for curation (pool against
    benchmarks) and for the evaluation guard (benchmark against training data) alike: an n-gram
    that more than `common_share` of the indexed texts (and more than two) contain is template
    wording ("how many days later is it"), not a leaked question, and is not indexed; a copied
    question shows up in one or two texts, a template in all of them.
    """

    def __init__(self, eval_sets: Mapping[str, Iterable[str]], n: int = 8,
                 common_share: float = COMMON_SHARE) -> None:
        if n < 1:
            raise ValueError(f"n-gram size must be at least 1, got {n}")
        self.n = n
        self.set_names: list[str] = list(eval_sets)
        self._vocab: dict[str, int] = {}
        hashes: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        holders: list[np.ndarray] = []  # which text each window comes from, across all sets
        texts_seen = 0
        for set_index, (name, texts) in enumerate(eval_sets.items()):
            if isinstance(texts, str):
                # A bare string would be indexed character by character, silently matching nothing.
                raise TypeError(f"evaluation set {name!r} must be a collection of texts, not a str")
            word_lists = [text_words(text) for text in texts]
            for words in word_lists:
                for word in words:
                    if word not in self._vocab:
                        # `| 1` keeps codes non-zero: 0 marks "not an evaluation word".
                        self._vocab[word] = _splitmix64(len(self._vocab) + 1) | 1
            set_hashes, starts = self._window_hashes(word_lists)
            offsets = np.concatenate(([0], np.cumsum([len(words) for words in word_lists])))
            holders.append(np.searchsorted(offsets, starts, side="right") - 1 + texts_seen)
            texts_seen += len(word_lists)
            hashes.append(set_hashes)
            owners.append(np.full(set_hashes.size, set_index, dtype=np.int32))
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        all_owners = np.concatenate(owners) if owners else np.empty(0, dtype=np.int32)
        all_holders = np.concatenate(holders) if holders else np.empty(0, dtype=np.int64)
        # np.unique sorts for binary search; return_index picks the first set (in the mapping's
        # order) that contains an n-gram, so the reason names a deterministic set.
        self._index, first = np.unique(all_hashes, return_index=True)
        self._owner = all_owners[first]
        common = self._common(all_hashes, all_holders, max(2.0, common_share * texts_seen))
        self._index, self._owner = self._index[~common], self._owner[~common]

    def _common(self, hashes: np.ndarray, holders: np.ndarray, limit: float) -> np.ndarray:
        """Which indexed n-grams (aligned with `self._index`) more than `limit` texts contain."""
        if hashes.size == 0:
            return np.zeros(self._index.size, dtype=bool)
        order = np.lexsort((holders, hashes))
        hashes, holders = hashes[order], holders[order]
        new_pair = np.ones(hashes.size, dtype=bool)  # the first window of each (n-gram, text)
        new_pair[1:] = (hashes[1:] != hashes[:-1]) | (holders[1:] != holders[:-1])
        _, texts_per_gram = np.unique(hashes[new_pair], return_counts=True)
        return texts_per_gram > limit

    @property
    def num_ngrams(self) -> int:
        """Distinct evaluation n-grams indexed."""
        return int(self._index.size)

    def _window_hashes(self, word_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every n-gram window made only of evaluation-vocabulary words.

        Returns (hashes, starts) where `starts` is each window's position in the flattened
        word list of all texts (windows never span two texts).
        """
        n = self.n
        vocab = self._vocab
        codes = np.fromiter(
            (vocab.get(word, 0) for words in word_lists for word in words), dtype=np.uint64
        )
        num_windows = codes.size - n + 1
        if num_windows <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
        lengths = np.fromiter((len(words) for words in word_lists), dtype=np.int64)
        text_of_word = np.repeat(np.arange(lengths.size), lengths)
        # A window is usable when it lies inside one text and has no unknown (code 0) word.
        unknown = np.concatenate(([0], np.cumsum(codes == 0)))
        valid = (text_of_word[:num_windows] == text_of_word[n - 1 :]) & (
            unknown[n:] - unknown[:num_windows] == 0
        )
        starts = np.flatnonzero(valid)
        hashes = np.zeros(starts.size, dtype=np.uint64)
        for k in range(n):  # Horner's rule; uint64 arithmetic wraps mod 2**64, as intended
            hashes = hashes * _BASE + codes[starts + k]
        return hashes, starts

    def _first_hits(self, texts: Sequence[str]) -> dict[int, str]:
        """{index into texts: reason} for texts sharing an n-gram; the earliest shared n-gram."""
        return {index: f"shares the {self.n}-gram '{ngram}' with evaluation set '{name}'"
                for index, (ngram, name) in self.first_shared(texts).items()}

    def first_shared(self, texts: Sequence[str]) -> dict[int, tuple[str, str]]:
        """{index into texts: (the earliest shared n-gram, the set holding it)}."""
        found: dict[int, tuple[str, str]] = {}
        if self._index.size == 0:
            return found
        for batch_start in range(0, len(texts), _DECON_BATCH):
            batch = texts[batch_start : batch_start + _DECON_BATCH]
            word_lists = [text_words(text) for text in batch]
            hashes, starts = self._window_hashes(word_lists)
            slot = np.minimum(np.searchsorted(self._index, hashes), self._index.size - 1)
            hit = np.flatnonzero(self._index[slot] == hashes)
            if hit.size == 0:
                continue
            offsets = np.concatenate(([0], np.cumsum([len(words) for words in word_lists])))
            hit_text = np.searchsorted(offsets, starts[hit], side="right") - 1
            # Windows are in text order, so the first hit of each text is its earliest n-gram.
            texts_hit, first = np.unique(hit_text, return_index=True)
            for text_index, h in zip(texts_hit.tolist(), hit[first].tolist(), strict=True):
                words = word_lists[text_index]
                position = int(starts[h] - offsets[text_index])
                ngram = " ".join(words[position : position + self.n])
                found[batch_start + text_index] = (ngram,
                                                   self.set_names[int(self._owner[slot[h]])])
        return found

    def check(self, text: str) -> str | None:
        """None if `text` is clean, else a reason naming the evaluation set and the n-gram."""
        return self._first_hits([text]).get(0)

    def filter(self, items: Sequence[tuple[str, str]]) -> dict[str, str]:
        """{id: reason} for every item sharing an n-gram with an evaluation set."""
        check_unique_ids(item_id for item_id, _ in items)
        hits = self._first_hits([text for _, text in items])
        return {items[i][0]: reason for i, reason in sorted(hits.items())}
