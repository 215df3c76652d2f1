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
from collections.abc import Sequence

import numpy as np
import torch

from frugal.ngrams import Decontaminator, check_unique_ids, word_ngrams
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



def normalize(text: str) -> str:
    """Casefold and collapse every run of white space (Unicode included) to one space; strip."""
    return " ".join(text.casefold().split())


def exact_duplicates(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Drop every item whose normalised text equals that of an earlier item (the first is kept)."""
    check_unique_ids(item_id for item_id, _ in items)
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
        check_unique_ids(item_id for item_id, _ in items)
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
    check_unique_ids(ids)
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
