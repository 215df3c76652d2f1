"""Rows that decode together over one KV cache, with slots that rows can join and leave.

This is the tensor side of the generation engine; the budget-forcing policy lives in
`frugal.generation`. A `SlotBatch` holds the model's cache, a 2-D attention mask (batch x cache
columns) and the next-token logits of every slot. It does four things:

- `admit`: prefill new prompts and place them in free slots while other rows keep decoding
  (continuous batching: a finished row's slot is refilled at once instead of idling until the
  longest row of a static batch ends);
- `step`: feed one token per slot and keep the cache;
- `hide`: mask cache columns out of a row's attention (a refused end-of-thinking marker);
- `compact`: drop empty slots and leading columns that no live row attends to.

A new row is written right-aligned into the cache columns that precede the next step, so every
slot appends at the same column; the columns to its left are masked, exactly like left padding.
Joining a running cache needs plain full-attention layers; for other caches (sliding windows)
new rows wait until the batch drains, which is ordinary static batching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class SlotBatch:
    """The cache, mask and logits of up to `capacity` rows; `owners[slot]` is a row or None."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        capacity: int,
        adapter_of: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.model = model
        # A row's PEFT adapter name (None: the model's active one); rows of several adapters
        # then share the batch through PEFT's mixed-batch forward (`adapter_names`).
        self.adapter_of = adapter_of
        self.pad_id = pad_id
        self.capacity = capacity
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self.logits: torch.Tensor | None = None
        self.owners: list[Any | None] = []
        # Columns are numbered once and for all; tensor index = column + offset, so padding on
        # the left or dropping leading columns never renumbers what rows remember.
        self.offset = 0
        self.starts: list[int] = []  # first column of each slot's prompt

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def next_column(self) -> int:
        """The column the next `step` writes."""
        return self.mask.shape[1] - self.offset

    @property
    def live(self) -> int:
        return sum(owner is not None for owner in self.owners)

    def free_slots(self) -> int:
        if self.live == 0:
            return self.capacity
        if not self._can_join():
            return 0
        return self.capacity - self.live

    def admit(self, prompts: list[list[int]], owners: list[Any]) -> None:
        """Prefill `prompts` and seat their `owners`; at most `free_slots()` of them."""
        cache, mask, logits = self._prefill(prompts, owners)
        if self.live == 0:
            self.cache, self.mask, self.logits = cache, mask, logits
            self.owners, self.offset = list(owners), 0
            self.starts = [mask.shape[1] - len(p) for p in prompts]
            return
        self._join(cache, mask, logits, prompts, owners)

    def step(self, tokens: list[int | None], positions: list[int]) -> None:
        """Feed one token per slot (None: the slot sits this step out) and keep the logits."""
        device = self.device
        fed = torch.tensor([0 if t is None else 1 for t in tokens], device=device)
        ids = torch.tensor([self.pad_id if t is None else t for t in tokens], device=device)
        self.mask = torch.cat([self.mask, fed[:, None]], dim=1)
        out = self.model(
            input_ids=ids[:, None],
            attention_mask=self.mask,
            position_ids=torch.tensor(positions, device=device)[:, None],
            past_key_values=self.cache,
            use_cache=True,
            **self._adapter_names(self.owners),
        )
        self.logits = out.logits[:, -1, :].float()

    def hide(self, slot: int, columns: list[int]) -> None:
        """Remove cache columns from a slot's attention, as if those tokens were never fed."""
        self.mask[slot, [c + self.offset for c in columns]] = 0

    def release(self, slot: int) -> None:
        self.owners[slot] = None

    def compact(self) -> None:
        """Drop empty slots, and leading columns that no remaining row attends to."""
        keep = [s for s, owner in enumerate(self.owners) if owner is not None]
        if not keep:
            self.owners, self.starts, self.cache = [], [], None
            return
        if len(keep) < len(self.owners):
            index = torch.tensor(keep, device=self.device)
            self.cache.batch_select_indices(index)
            self.mask, self.logits = self.mask[index], self.logits[index]
            self.owners = [self.owners[s] for s in keep]
            self.starts = [self.starts[s] for s in keep]
        self._drop_leading_columns()

    # -- internals -----------------------------------------------------------------------------

    def _can_join(self) -> bool:
        if self.cache is None:
            return False
        return all(type(layer) is DynamicLayer for layer in self.cache.layers)

    def _adapter_names(self, owners: list[Any]) -> dict[str, list[str]]:
        """`adapter_names` for the forward pass when some row names its adapter, else nothing."""
        if self.adapter_of is None:
            return {}
        names = [self.adapter_of(owner) if owner is not None else None for owner in owners]
        if all(name is None for name in names):
            return {}
        active = getattr(self.model, "active_adapter", None) or "__base__"
        default = active if isinstance(active, str) else active[0]
        return {"adapter_names": [name or default for name in names]}

    def _prefill(
        self, prompts: list[list[int]], owners: list[Any]
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, prompt in enumerate(prompts):  # left padding: every row's next token is at `width`
            ids[r, width - len(prompt) :] = torch.tensor(prompt)
            mask[r, width - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapter_names(owners),
        )
        return cache, mask, out.logits[:, -1, :].float()

    def _join(
        self,
        cache: DynamicCache,
        mask: torch.Tensor,
        logits: torch.Tensor,
        prompts: list[list[int]],
        owners: list[Any],
    ) -> None:
        assert self.cache is not None and self.logits is not None
        width = mask.shape[1]
        if width > self.mask.shape[1]:  # the newcomers' prompts are longer than the cache so far
            self._pad_left(width - self.mask.shape[1])
        free = [s for s, owner in enumerate(self.owners) if owner is None]
        if len(owners) > len(free):
            # Compacted earlier (no work was waiting then); open new slots for the newcomers.
            missing = len(owners) - len(free)
            if len(self.owners) + missing > self.capacity:
                raise ValueError(f"{len(owners)} rows cannot join {len(free)} free slots")
            free += self._grow(missing)
        slots = torch.tensor(free[: len(owners)], device=self.device)
        total = self.mask.shape[1]
        for layer, new in zip(self.cache.layers, cache.layers, strict=True):
            layer.keys[slots, :, total - width :, :] = new.keys
            layer.values[slots, :, total - width :, :] = new.values
        self.mask[slots] = 0
        self.mask[slots, total - width :] = mask
        self.logits[slots] = logits
        for slot, owner, prompt in zip(slots.tolist(), owners, prompts, strict=True):
            self.owners[slot] = owner
            self.starts[slot] = total - len(prompt) - self.offset
        self._drop_leading_columns()

    def _grow(self, n: int) -> list[int]:
        """Add `n` empty slots at the end of the batch; returns their indices."""
        assert self.cache is not None and self.logits is not None
        for layer in self.cache.layers:
            pad = layer.keys.new_zeros(n, *layer.keys.shape[1:])
            layer.keys = torch.cat([layer.keys, pad], dim=0)
            layer.values = torch.cat([layer.values, pad], dim=0)
        self.mask = torch.cat([self.mask, self.mask.new_zeros(n, self.mask.shape[1])], dim=0)
        self.logits = torch.cat([self.logits, self.logits.new_zeros(n, self.logits.shape[1])])
        first = len(self.owners)
        self.owners += [None] * n
        self.starts += [0] * n
        return list(range(first, first + n))

    def _pad_left(self, n: int) -> None:
        assert self.cache is not None
        for layer in self.cache.layers:
            pad = layer.keys.new_zeros(*layer.keys.shape[:2], n, layer.keys.shape[3])
            layer.keys = torch.cat([pad, layer.keys], dim=2)
            layer.values = torch.cat([pad, layer.values], dim=2)
        self.mask = torch.cat([self.mask.new_zeros(self.mask.shape[0], n), self.mask], dim=1)
        self.offset += n

    def _drop_leading_columns(self) -> None:
        # Only full-attention layers index columns the same way as the mask.
        if not self._can_join():
            return
        seated = zip(self.starts, self.owners, strict=True)
        first = min(start for start, owner in seated if owner is not None)
        drop = first + self.offset
        if drop <= 0:
            return
        for layer in self.cache.layers:
            layer.keys = layer.keys[:, :, drop:, :]
            layer.values = layer.values[:, :, drop:, :]
        self.mask = self.mask[:, drop:]
        self.offset -= drop
