"""Matplotlib figures written to files: the one headless set-up and save every plot shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(*grid: int, **options: Any) -> tuple[Any, Any]:
    """`plt.subplots(*grid, **options)` on the file-only Agg backend (no display on servers
    and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*grid, **options)


def save_figure(figure: Any, path: Path, **options: Any) -> Path:
    """Lay `figure` out, write it to `path` (folders made), and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, **options)
    plt.close(figure)
    return path
