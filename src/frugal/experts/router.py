"""The router of `frugal experts`: which domain expert should answer a prompt.

Both routers work on sentence embeddings of the prompt (the packaged all-MiniLM-L6-v2 by
default, offline): the baseline is the nearest centroid of each expert's training prompts
(cosine), the contender scikit-learn's logistic regression on the same embeddings. The fitted
router is saved under `router/` as JSON (centroids, or coefficients and intercepts), never as a
pickle, so loading it runs no code from the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from frugal.embeddings import DEFAULT_EMBEDDER, embed
from frugal.run_files import ROUTER_DIR, ROUTER_FILE, RunFileError, read_json, write_json

Kind = Literal["centroid", "logistic"]


@dataclass
class Router:
    """Maps prompts to expert names."""

    kind: Kind
    experts: list[str]
    weights: np.ndarray  # centroids (experts x dim), or logistic coefficients (experts x dim)
    bias: np.ndarray  # zeros for centroids; logistic intercepts
    embedder: str = DEFAULT_EMBEDDER

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str], kind: Kind = "centroid",
            embedder: str = DEFAULT_EMBEDDER, seed: int = 0) -> Router:
        vectors = embed(list(texts), embedder)  # unit length already
        experts = sorted(set(labels))
        if len(experts) < 2:
            raise ValueError("a router needs at least two experts")
        y = np.array([experts.index(label) for label in labels])
        if kind == "centroid":
            centroids = np.stack([vectors[y == i].mean(axis=0) for i in range(len(experts))])
            return cls(kind, experts, _normalise(centroids), np.zeros(len(experts)), embedder)
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=2000, C=10.0, random_state=seed).fit(vectors, y)
        coef, intercept = model.coef_, model.intercept_
        if len(experts) == 2:  # scikit-learn keeps one row for two classes
            coef, intercept = np.vstack([-coef, coef]) / 2, np.array([-1, 1]) * intercept / 2
        return cls(kind, experts, coef, intercept, embedder)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return embed(list(texts), self.embedder) @ self.weights.T + self.bias

    def route(self, texts: Sequence[str]) -> list[str]:
        return [self.experts[i] for i in self.scores(texts).argmax(axis=1)]

    def __call__(self, text: str) -> str:
        return self.route([text])[0]

    def evaluate(self, texts: Sequence[str], labels: Sequence[str]) -> dict[str, object]:
        """Held-out accuracy and the confusion matrix (rows: true expert, columns: routed)."""
        routed = self.route(texts)
        names = self.experts
        matrix = [[0] * len(names) for _ in names]
        for truth, guess in zip(labels, routed, strict=True):
            if truth in names:
                matrix[names.index(truth)][names.index(guess)] += 1
        correct = sum(t == g for t, g in zip(labels, routed, strict=True))
        return {"accuracy": correct / len(labels) if labels else 0.0, "n": len(labels),
                "experts": names, "confusion": matrix}

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.kind}.json"
        write_json(path, {
            "kind": self.kind, "experts": self.experts, "embedder": self.embedder,
            "weights": self.weights.tolist(), "bias": self.bias.tolist(),
        }, indent=None)  # one line: indenting would put each of the weights on its own
        return path

    @classmethod
    def load(cls, path: Path) -> Router:
        data = read_json(Path(path), default=None,
                         fix="re-run `frugal experts` to fit the router again")
        if not isinstance(data, dict):
            raise RunFileError(Path(path), "no router here (missing, or not an object)",
                               "re-run `frugal experts` to fit the router again")
        return cls(data["kind"], data["experts"], np.array(data["weights"]),
                   np.array(data["bias"]), data["embedder"])


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows: a mean of unit vectors is shorter, so centroids need it for cosine."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def load_router(run_dir: Path) -> Router | None:
    """The router `frugal experts` chose for the run (router/router.json names it), if any."""
    choice = Path(run_dir) / ROUTER_DIR / ROUTER_FILE
    if not choice.is_file():
        return None
    chosen = json.loads(choice.read_text())["chosen"]
    return Router.load(choice.parent / f"{chosen}.json")


def route_to_experts(run_dir: Path, texts: Sequence[str], adapters: Sequence[str]) -> list[str]:
    """The expert adapter the run's router picks for each text; an error with the fix when the
    run has no router or the router names an expert that has no adapter."""
    router = load_router(run_dir)
    if router is None:
        raise FileNotFoundError(f"{run_dir} has no router/. Fix: run `frugal experts`.")
    chosen = router.route(list(texts))
    missing = sorted(set(chosen) - set(adapters))
    if missing:
        raise ValueError(f"the router names experts without adapters: {', '.join(missing)}")
    return chosen
