"""Pure-text quality filters of the s1K curation: duplicates, decontamination, formatting.

Each filter takes items, identified by string ids, and returns `{dropped_id: reason}`; the
caller records the reasons (docs/design.md, "Curation": record why every item was dropped).
Items are `(id, text)` pairs, except for `near_duplicates`, which works on precomputed
sentence embeddings.

- `exact_duplicates`: the same text after case folding and collapsing white space; the first
  occurrence is kept.
- `Decontaminator`: s1's rule, a question sharing any word 8-gram with an evaluation set is dropped.
- `FormattingFilter`: questions that point at material the text does not contain (a figure "shown
  below", Asymptote code, an image tag).
- `near_duplicates`: greedy, in order, cosine similarity to an earlier kept item.

All of them are meant for pools of ~50,000 questions: the text filters are linear in the pool
size and take about a second at that size; `near_duplicates` is quadratic by nature but runs as
blocked matrix products with bounded memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from frugal.settings.curate import DEFAULT_FORMAT_PATTERNS

__all__ = [
    "DEFAULT_FORMAT_PATTERNS",
    "Decontaminator",
    "FormattingFilter",
    "exact_duplicates",
    "near_duplicates",
    "normalize",
    "word_ngrams",
]

# Words are lowercase runs of \w (letters, digits, underscore). Punctuation and case therefore do
# not hide an overlap: "Tom's 3 apples," and "toms 3 APPLES" differ, but "tom's" gives the words
# "tom" and "s" in both the pool and the evaluation text, so copies that only change punctuation,
# case or white space are still caught.
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Casefold and collapse every run of white space (Unicode included) to one space; strip."""
    return " ".join(text.casefold().split())


def _check_unique_ids(ids: Iterable[str]) -> None:
    # Results are keyed by id: a repeated id would make "drop x" ambiguous, so refuse it loudly.
    seen: set[str] = set()
    for item_id in ids:
        if item_id in seen:
            raise ValueError(f"duplicate item id {item_id!r}: every item needs its own id")
        seen.add(item_id)


def exact_duplicates(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Drop every item whose normalised text equals that of an earlier item (the first is kept)."""
    _check_unique_ids(item_id for item_id, _ in items)
    kept_by_text: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for item_id, text in items:
        key = normalize(text)
        kept = kept_by_text.setdefault(key, item_id)
        if kept != item_id:
            dropped[item_id] = (
                f"exact duplicate of {kept} (same text after normalising case and white space)"
            )
    return dropped


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    """All word n-grams of `text` (s1's decontamination unit is n = 8); empty if too short."""
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")
    words = _words(text)
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
    """Flags texts that share a word n-gram (default 8, as in s1) with any evaluation set.

    `eval_sets` maps a set name (reported in reasons) to its texts, e.g. the questions and,
    if wanted, the solutions of a benchmark split.
    """

    def __init__(self, eval_sets: Mapping[str, Iterable[str]], n: int = 8) -> None:
        if n < 1:
            raise ValueError(f"n-gram size must be at least 1, got {n}")
        self.n = n
        self.set_names: list[str] = list(eval_sets)
        self._vocab: dict[str, int] = {}
        hashes: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        for set_index, (name, texts) in enumerate(eval_sets.items()):
            if isinstance(texts, str):
                # A bare string would be indexed character by character, silently matching nothing.
                raise TypeError(f"evaluation set {name!r} must be a collection of texts, not a str")
            word_lists = [_words(text) for text in texts]
            for words in word_lists:
                for word in words:
                    if word not in self._vocab:
                        # `| 1` keeps codes non-zero: 0 marks "not an evaluation word".
                        self._vocab[word] = _splitmix64(len(self._vocab) + 1) | 1
            set_hashes, _ = self._window_hashes(word_lists)
            hashes.append(set_hashes)
            owners.append(np.full(set_hashes.size, set_index, dtype=np.int32))
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        all_owners = np.concatenate(owners) if owners else np.empty(0, dtype=np.int32)
        # np.unique sorts for binary search; return_index picks the first set (in the mapping's
        # order) that contains an n-gram, so the reason names a deterministic set.
        self._index, first = np.unique(all_hashes, return_index=True)
        self._owner = all_owners[first]

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
        found: dict[int, str] = {}
        if self._index.size == 0:
            return found
        for batch_start in range(0, len(texts), _DECON_BATCH):
            word_lists = [_words(text) for text in texts[batch_start : batch_start + _DECON_BATCH]]
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
                name = self.set_names[int(self._owner[slot[h]])]
                found[batch_start + text_index] = (
                    f"shares the {self.n}-gram '{ngram}' with evaluation set '{name}'"
                )
        return found

    def check(self, text: str) -> str | None:
        """None if `text` is clean, else a reason naming the evaluation set and the n-gram."""
        return self._first_hits([text]).get(0)

    def filter(self, items: Sequence[tuple[str, str]]) -> dict[str, str]:
        """{id: reason} for every item sharing an n-gram with an evaluation set."""
        _check_unique_ids(item_id for item_id, _ in items)
        hits = self._first_hits([text for _, text in items])
        return {items[i][0]: reason for i, reason in sorted(hits.items())}


# --- Formatting ----------------------------------------------------------------------------------

# Questions that depend on material a text-only model never sees (s1 drops "broken formatting").
# Deliberately narrow: "the table below" is often followed by the table written out in text, so
# only phrases that point at a picture-like object above/below, and raw picture markup, count.


class FormattingFilter:
    """Drops texts matching any of the given case-insensitive regular expressions."""

    def __init__(self, patterns: Sequence[str] = DEFAULT_FORMAT_PATTERNS) -> None:
        if isinstance(patterns, str):
            raise TypeError("patterns must be a sequence of regular expressions, not one str")
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._compiled: list[re.Pattern[str]] = []
        for pattern in self.patterns:
            try:
                self._compiled.append(re.compile(pattern, re.IGNORECASE))
            except re.error as err:
                raise ValueError(f"invalid formatting pattern {pattern!r}: {err}") from err

    def check(self, text: str) -> str | None:
        """None if no pattern matches, else a reason naming the first pattern that does."""
        for pattern, compiled in zip(self.patterns, self._compiled, strict=True):
            match = compiled.search(text)
            if match is not None:
                snippet = match.group(0)
                if len(snippet) > 60:
                    snippet = snippet[:57] + "..."
                return f"broken formatting: matches pattern {pattern!r} (found {snippet!r})"
        return None

    def filter(self, items: Sequence[tuple[str, str]]) -> dict[str, str]:
        """{id: reason} for every item that matches a pattern."""
        _check_unique_ids(item_id for item_id, _ in items)
        dropped: dict[str, str] = {}
        for item_id, text in items:
            reason = self.check(text)
            if reason is not None:
                dropped[item_id] = reason
        return dropped


# --- Near duplicates -----------------------------------------------------------------------------

# Kept items are compared in chunks of this many rows, so one similarity tile is at most
# block_size x _KEPT_CHUNK floats (32 MiB at the default block of 1024), whatever the pool size.
_KEPT_CHUNK = 8192
# Rows must be unit vectors: raw (unnormalised) embeddings give dot products far above 1 and would
# silently drop most of the pool.
_NORM_TOLERANCE = 1e-2


def near_duplicates(
    ids: Sequence[str],
    embeddings: np.ndarray | torch.Tensor,
    threshold: float,
    *,
    block_size: int = 1024,
) -> dict[str, str]:
    """Greedy near-duplicate removal over L2-normalised embeddings, in the given order.

    An item is dropped when its cosine similarity to an earlier *kept* item is >= `threshold`
    (an item similar only to a dropped item stays). The reason names the most similar earlier
    kept item. Rows are processed `block_size` at a time against the kept set, so memory is
    O(n * dim) for the kept rows plus one block_size x 8192 similarity tile.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if threshold != threshold:  # NaN would make every comparison false without saying so
        raise ValueError("threshold must be a number, got NaN")
    x = torch.as_tensor(embeddings)
    if x.dim() != 2:
        raise ValueError(
            f"embeddings must be a 2-D (items x dim) array, got shape {tuple(x.shape)}"
        )
    if x.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but {x.shape[0]} embedding rows")
    _check_unique_ids(ids)
    if x.dtype != torch.float64:
        x = x.to(torch.float32)  # half precision matmuls are slow on CPU and too coarse here

    n = x.shape[0]
    dropped: dict[str, str] = {}
    kept_rows = torch.empty_like(x)  # kept embeddings, packed at the front
    kept_index = torch.empty(n, dtype=torch.long)  # kept_rows[k] is item kept_index[k]
    num_kept = 0

    for start in range(0, n, block_size):
        block = x[start : start + block_size]
        size = block.shape[0]
        norms = block.norm(dim=1)
        bad = torch.nonzero(~((norms - 1).abs() <= _NORM_TOLERANCE)).flatten()
        if bad.numel():
            row = start + int(bad[0])
            raise ValueError(
                f"embedding of {ids[row]!r} has norm {float(norms[bad[0]]):.4f}; "
                "near_duplicates needs L2-normalised rows (normalize_embeddings=True)"
            )

        # Best match of each row among items kept in earlier blocks.
        best_sim = torch.full((size,), -float("inf"), dtype=x.dtype)
        best_item = torch.full((size,), -1, dtype=torch.long)
        for k0 in range(0, num_kept, _KEPT_CHUNK):
            k1 = min(k0 + _KEPT_CHUNK, num_kept)
            sims, where = (block @ kept_rows[k0:k1].T).max(dim=1)
            sims, where = sims.cpu(), where.cpu()
            better = sims > best_sim
            best_sim = torch.where(better, sims, best_sim)
            best_item = torch.where(better, kept_index[k0:k1][where], best_item)

        # Within the block, order matters: row i may only be dropped by an earlier row of the
        # block that was itself kept. Rows with no earlier block row above the threshold and no
        # earlier-block match are kept for certain; only the rest need the sequential pass.
        within = (block @ block.T).cpu().numpy()
        within[np.triu_indices(size)] = -np.inf  # only strictly earlier rows count
        prior_sim = best_sim.numpy()
        prior_item = best_item.numpy()
        undecided = (within >= threshold).any(axis=1) | (prior_sim >= threshold)
        keep = ~undecided
        for i in np.flatnonzero(undecided).tolist():
            sim, item = float(prior_sim[i]), int(prior_item[i])
            earlier_kept = np.flatnonzero(keep[:i])
            if earlier_kept.size:
                j = int(earlier_kept[np.argmax(within[i, earlier_kept])])
                if within[i, j] > sim:
                    sim, item = float(within[i, j]), start + j
            if sim >= threshold:
                dropped[ids[start + i]] = (
                    f"near duplicate of {ids[item]} (cosine similarity {sim:.3f} >= {threshold})"
                )
            else:
                keep[i] = True

        kept_local = torch.from_numpy(np.flatnonzero(keep))
        count = kept_local.numel()
        kept_rows[num_kept : num_kept + count] = block[kept_local.to(block.device)]
        kept_index[num_kept : num_kept + count] = kept_local + start
        num_kept += count
    return dropped
