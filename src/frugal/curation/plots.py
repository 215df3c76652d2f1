"""The curation figure: domain histogram and trace-length distribution, pool vs selected."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from frugal.figures import new_figure, save_figure


def plot_selection(
    path: Path, pool: list[Any], candidates: list[Any], selected: list[Any]
) -> Path:
    """Write a two-panel PNG of curation items: domains of the candidates that reached the
    sampler against the selected ones, and trace lengths of the pool against the selected."""
    figure, (domains_axis, lengths_axis) = new_figure(1, 2, figsize=(11, 4))
    pool_domains = Counter(i.domain for i in candidates)
    chosen_domains = Counter(i.domain for i in selected)
    names = sorted(set(pool_domains) | set(chosen_domains))
    positions = range(len(names))
    domains_axis.bar([p - 0.2 for p in positions], [pool_domains[n] for n in names], 0.4,
                     label="candidates")
    domains_axis.bar([p + 0.2 for p in positions], [chosen_domains[n] for n in names], 0.4,
                     label="selected")
    domains_axis.set_xticks(list(positions), names, rotation=30, ha="right")
    domains_axis.set_ylabel("questions")
    domains_axis.set_title("Domains")
    domains_axis.legend()
    pool_lengths = [i.tokens for i in pool if i.trace]
    chosen_lengths = [i.tokens for i in selected]
    bins = 30
    if pool_lengths:
        lengths_axis.hist(pool_lengths, bins=bins, alpha=0.6, label="pool", density=True)
    if chosen_lengths:
        lengths_axis.hist(chosen_lengths, bins=bins, alpha=0.6, label="selected", density=True)
    lengths_axis.set_xlabel("trace tokens")
    lengths_axis.set_ylabel("density")
    lengths_axis.set_title("Trace length")
    if pool_lengths or chosen_lengths:
        lengths_axis.legend()
    return save_figure(figure, path, dpi=100)
