"""s1's Figure 1 style plot: accuracy against mean thinking tokens, one line per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from frugal.figures import new_figure, save_figure
from frugal.run_files import EvalPoint


def plot_scaling(curves: Mapping[str, Sequence[EvalPoint]], path: Path, title: str) -> Path:
    """Write a PNG; `curves` maps a model label to its summary points (mean thinking tokens,
    accuracy and its 95% interval), drawn with error bars in order of thinking tokens."""
    figure, axes = new_figure(figsize=(6.4, 4.2), dpi=120)
    for label, points in curves.items():
        ordered = sorted(points, key=lambda p: p.mean_thinking_tokens)
        xs = [p.mean_thinking_tokens for p in ordered]
        ys = [100 * p.accuracy for p in ordered]
        low = [max(0.0, 100 * (p.accuracy - p.ci95[0])) for p in ordered]
        high = [max(0.0, 100 * (p.ci95[1] - p.accuracy)) for p in ordered]
        axes.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=label)
    axes.set_xlabel("average thinking tokens")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)
