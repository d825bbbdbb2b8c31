"""Candidate lists: a retriever's top items that a candidate prompt lists and the decoder chooses from.

Two stages, as in LlamaRec: a fast retriever (a saved SASRec) proposes each user's top ``n`` unseen
items; the language model reads them in its prompt (the template variable ``candidates``, see
``prompts/candidates.jinja``) and ranks them by generating one title with the trie limited to them.

Candidates are listed in catalog order, not in the retriever's order: the retriever learned the
same train items the LM is tuned on, so on training steps its order is overconfident (the target
near the top) and an LM shown that order would learn to copy the first line; catalog order makes
it read the titles. A training step is kept only when its target is among its candidates (the
decoder can only pick one of them), which :func:`training_candidates` reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def in_catalog_order(ranked: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each list of item indices sorted by index (the order prompts show them in)."""
    return [np.sort(np.asarray(r, dtype=np.int64)) for r in ranked]


def retrieve(retriever, histories: Sequence[Sequence[int]], n: int, exclude_seen: bool = True) -> list[np.ndarray]:
    """The ``n`` items ``retriever.recommend`` ranks highest for each history, in catalog order.

    ``exclude_seen``: leave out the history's own items (as the decoder does).
    """
    exclude = None if exclude_seen else [set() for _ in histories]
    return in_catalog_order(retriever.recommend(list(histories), n, exclude=exclude))


def training_candidates(
    retriever, train: dict[str, list[int]], steps: list[tuple[str, int]], n: int, batch_size: int = 512
) -> tuple[list[tuple[str, int]], list[np.ndarray], int]:
    """Candidates of training steps ``(user, i)`` (history ``train[user][:i]``, target ``train[user][i]``).

    Returns (kept steps, their candidates, number of steps dropped because the target was not
    among the candidates).
    """
    kept, cands = [], []
    for s in range(0, len(steps), batch_size):
        chunk = steps[s : s + batch_size]
        for (u, i), c in zip(chunk, retrieve(retriever, [train[u][:i] for u, i in chunk], n)):
            if train[u][i] in c:
                kept.append((u, i))
                cands.append(c)
    return kept, cands, len(steps) - len(kept)
