"""The selection step: s1's diversity sampler and the ablation baselines of its Table 2.

s1 (section 2): repeatedly pick a domain uniformly at random, then take one of its questions
with probability proportional to 2^-rank, where rank 0 is the longest trace among the domain's
remaining questions; a domain with nothing left drops out. The baselines pick the same number of
items differently: `random` (uniformly), `longest` (longest traces), `diverse` (uniform domain,
then uniform question). All are deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from frugal.settings.curate import Strategy


@dataclass(frozen=True)
class Candidate:
    id: str
    domain: str
    length: int  # trace length in tokens: s1's second difficulty signal


def select(
    candidates: Sequence[Candidate], target: int, strategy: Strategy = "s1", seed: int = 0
) -> list[str]:
    """Ids of at most `target` candidates, in the order they were picked."""
    rng = random.Random(seed)
    if strategy == "random":
        return [c.id for c in rng.sample(list(candidates), min(target, len(candidates)))]
    if strategy == "longest":
        ranked = sorted(candidates, key=lambda c: (-c.length, c.id))
        return [c.id for c in ranked[:target]]
    return _domain_sampler(candidates, target, rng, length_weighted=strategy == "s1")


def _domain_sampler(
    candidates: Sequence[Candidate], target: int, rng: random.Random, *, length_weighted: bool
) -> list[str]:
    by_domain: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_domain.setdefault(candidate.domain, []).append(candidate)
    for items in by_domain.values():
        items.sort(key=lambda c: (-c.length, c.id))  # rank 0 = longest; ties broken by id
    picked: list[str] = []
    while len(picked) < target and by_domain:
        domains = sorted(by_domain)
        domain = domains[int(rng.random() * len(domains))]
        items = by_domain[domain]
        index = _weighted_rank(len(items), rng.random()) if length_weighted else int(
            rng.random() * len(items)
        )
        picked.append(items.pop(index).id)
        if not items:
            del by_domain[domain]
    return picked


def _weighted_rank(n: int, draw: float) -> int:
    """The rank whose cumulative share of the weights 2^-0, 2^-1, ... first exceeds `draw`."""
    total = 2.0 * (1.0 - 2.0**-n)  # the geometric series 2^-0 + ... + 2^-(n-1)
    cumulative = 0.0
    for rank in range(n):
        cumulative += 2.0**-rank / total
        if draw < cumulative:
            return rank
    return n - 1
