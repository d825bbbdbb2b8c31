"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): an item-to-item
linear model with a closed form, a strong non-sequential peer and a second kind of teacher for
``m6gen fit-readout --readout-teachers``.

B = argmin ||X - X B||² + l2 ||B||² subject to diag(B) = 0, where X is the users x items matrix of
training interactions; with P = (XᵀX + l2 I)⁻¹, B = -P / diag(P) off the diagonal. A user's scores are
the row of their history (0/1) times B.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from m6gen.files import write_atomic
from m6gen.ranking.top import mask_items, top_k

History = Sequence[int]


@dataclass
class EASEConfig:
    """EASE's two settings (``m6gen baselines --ease-l2``, ``--ease-temperature``)."""

    # 100 ranked best among 100, 300 and 1000 on ML-100K validation, alone and blended with SASRecs
    l2: float = 100.0
    # a teacher's distribution is softmax(temperature x scores); 3 was chosen on validation among 3, 10
    # and 30 for the mean with five SASRecs' log-probabilities (docs/results.md)
    temperature: float = 3.0

    def __post_init__(self):
        for name in ("l2", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"EASEConfig.{name} must be a finite number > 0, got {value!r}")


def interaction_matrix(histories: Sequence[History], n_items: int) -> np.ndarray:
    """(len(histories), n_items) 0/1 float64 matrix; an item seen twice still counts once."""
    x = np.zeros((len(histories), n_items), dtype=np.float64)
    for row, history in enumerate(histories):
        x[row, np.asarray(history, dtype=np.int64)] = 1.0
    return x


class EASE:
    """A fitted EASE: ``weights`` is the (n_items, n_items) item-to-item matrix B, zero on its diagonal."""

    def __init__(self, weights: np.ndarray, config: EASEConfig):
        if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
            raise ValueError(f"EASE weights must be a square matrix, got shape {weights.shape}")
        self.weights = weights.astype(np.float32, copy=False)
        self.config = config
        self.n_items = weights.shape[0]

    @classmethod
    def fit(cls, histories: Sequence[History], n_items: int, config: EASEConfig | None = None) -> EASE:
        """Closed-form fit on training ``histories`` (one per user, item indices)."""
        config = config or EASEConfig()
        x = interaction_matrix(histories, n_items)
        gram = x.T @ x
        gram[np.diag_indices(n_items)] += config.l2
        inverse = np.linalg.inv(gram)
        weights = inverse / -np.diag(inverse)  # column j divided by -P[j, j]
        np.fill_diagonal(weights, 0.0)
        return cls(weights, config)

    def score(self, histories: Sequence[History]) -> np.ndarray:
        """(users, n_items) float32 scores of every item after each history (order within it is ignored)."""
        for history in histories:
            if len(history) and not 0 <= min(history) <= max(history) < self.n_items:
                raise ValueError(f"item index out of range [0, {self.n_items}) in a history")
        return (interaction_matrix(histories, self.n_items).astype(np.float32)) @ self.weights

    def log_probs(self, histories: Sequence[History]) -> np.ndarray:
        """(users, n_items) next-item log-probabilities: log-softmax of ``temperature`` x scores, so
        that they average with SASRec's as a teacher."""
        logits = self.config.temperature * self.score(histories).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)

    def recommend(
        self, histories: Sequence[History], k: int, exclude: Sequence[set[int] | History]
    ) -> list[np.ndarray]:
        """Top-``k`` unseen items per user, best first (ties: lower item index)."""
        return top_k(mask_items(self.score(histories), exclude), k)

    def save(self, folder: str | Path) -> Path:
        """``ease.npy`` (the weights) and ``ease.json`` (config, n_items), each written atomically."""
        import io

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, self.weights)
        write_atomic(folder / "ease.npy", buffer.getvalue())
        write_atomic(
            folder / "ease.json", json.dumps({"n_items": self.n_items, "config": asdict(self.config)}, indent=2)
        )
        return folder


def is_ease_folder(folder: str | Path) -> bool:
    return (Path(folder) / "ease.json").is_file()


def load_ease(folder: str | Path, n_items: int) -> EASE:
    """A saved EASE for a catalog of ``n_items``; a one-line :class:`ModelError` when it is not one."""
    from m6gen.model import ModelError

    folder = Path(folder)
    if not is_ease_folder(folder) or not (folder / "ease.npy").is_file():
        raise ModelError(f"ease {folder}: no saved EASE there (ease.json or ease.npy missing)")
    meta = json.loads((folder / "ease.json").read_text(encoding="utf-8"))
    if meta.get("n_items") != n_items:
        raise ModelError(f"ease {folder}: fitted on {meta.get('n_items')} items, the catalog has {n_items}")
    return EASE(np.load(folder / "ease.npy"), EASEConfig(**meta["config"]))
