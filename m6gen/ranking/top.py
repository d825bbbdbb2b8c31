"""Whole-catalog top-k from a (users, items) score matrix, the peers' shared last step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mask_items(scores: np.ndarray, exclude: Sequence[set[int] | Sequence[int]]) -> np.ndarray:
    """``scores`` with each row's ``exclude`` items set to -inf (in place; returned for chaining)."""
    if len(exclude) != len(scores):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(scores)} histories")
    for row, items in enumerate(exclude):
        scores[
            row, np.fromiter(items, dtype=np.int64) if isinstance(items, set) else np.asarray(items, np.int64)
        ] = -np.inf
    return scores


def top_k(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Best-first top-k per row; -inf entries (excluded) are never returned; ties go to the lower index."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (U, k) unordered
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)  # by score, ties to the lower index
    ranked = np.take_along_axis(part, order, axis=1)
    finite = np.isfinite(np.take_along_axis(vals, order, axis=1))
    return [r[f] for r, f in zip(ranked, finite)]
