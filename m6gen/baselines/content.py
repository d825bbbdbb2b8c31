"""Content baselines: what a practitioner ranks new items with when no one has interacted with them.

Both score every catalog item by its similarity to the user's recent history (the last ``recent``
items), so an item no one has interacted with yet scores like any other:

- :func:`genre_year_scores`: cosine of genre vectors, plus closeness of release years;
- :func:`embedding_scores`: cosine of item vectors, e.g. :func:`title_vectors`, the language
  model's mean last hidden state over each title (nearest neighbours of the history by title);
- :func:`newest_scores`: a shop's "new releases" shelf: the latest release year first, and within a
  year the best genre match to the recent history.

Pure numpy, except :func:`title_vectors`, which runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RECENT = 10  # history items a profile averages
YEAR_SCALE = 10.0  # years at which year closeness falls to 1/e
YEAR_WEIGHT = 0.5  # year closeness next to genre cosine (both in [0, 1])


def _unit_rows(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m, dtype=np.float64), where=norms > 0)


def _profiles(histories: Sequence[Sequence[int]], vectors: np.ndarray, recent: int) -> np.ndarray:
    """(users, d): the mean of each history's last ``recent`` item vectors (zeros for an empty history)."""
    out = np.zeros((len(histories), vectors.shape[1]))
    for u, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-recent:]
        if len(tail):
            out[u] = vectors[tail].mean(axis=0)
    return out


def genre_matrix(genres: Sequence[Sequence[str]]) -> np.ndarray:
    """(n_items, n_genres) 0/1 matrix of each item's genres (genres sorted by name)."""
    names = sorted({g for gs in genres for g in gs})
    column = {g: j for j, g in enumerate(names)}
    m = np.zeros((len(genres), len(names)))
    for i, gs in enumerate(genres):
        m[i, [column[g] for g in gs]] = 1.0
    return m


def genre_year_scores(
    histories: Sequence[Sequence[int]],
    genres: np.ndarray,
    years: np.ndarray,
    recent: int = RECENT,
    year_weight: float = YEAR_WEIGHT,
) -> np.ndarray:
    """(users, n_items): genre cosine to the recent history + ``year_weight`` * exp(-|year gap| / 10).

    ``genres``: (n_items, g) from :func:`genre_matrix`; ``years``: (n_items,) float, nan when unknown.
    """
    unit = _unit_rows(np.asarray(genres, dtype=np.float64))
    scores = unit @ _unit_rows(_profiles(histories, unit, recent)).T  # (n_items, users)
    years = np.asarray(years, dtype=np.float64)
    known = ~np.isnan(years)
    for u, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-recent:]
        tail = tail[known[tail]]
        if len(tail):
            gap = np.abs(np.where(known, years, np.inf) - years[tail].mean())
            scores[:, u] += year_weight * np.exp(-gap / YEAR_SCALE)
    return scores.T


def newest_scores(
    histories: Sequence[Sequence[int]], genres: np.ndarray, years: np.ndarray, recent: int = RECENT
) -> np.ndarray:
    """(users, n_items): release year (unknown: below every known year) + genre cosine to the recent
    history, which lies in [0, 1] and so only orders the items of one year."""
    genre_match = genre_year_scores(histories, genres, np.full(len(years), np.nan), recent)
    years = np.asarray(years, dtype=np.float64)
    oldest = np.nanmin(years) if np.isfinite(years).any() else 0.0
    return genre_match + np.where(np.isnan(years), oldest - 1.0, years)


def embedding_scores(histories: Sequence[Sequence[int]], vectors: np.ndarray, recent: int = RECENT) -> np.ndarray:
    """(users, n_items): cosine of each item's vector to the mean of the recent history's unit vectors."""
    unit = _unit_rows(np.asarray(vectors, dtype=np.float64))
    return _unit_rows(_profiles(histories, unit, recent)) @ unit.T


def rank(scores: np.ndarray, seen: Sequence[set[int]], k: int) -> list[np.ndarray]:
    """Best-first top ``k`` per row of ``scores``, the row's ``seen`` items left out; ties keep index order."""
    out = []
    for row, s in zip(scores, seen):
        row = row.copy()
        row[list(s)] = -np.inf
        order = np.argsort(-row, kind="stable")[:k]
        out.append(order[np.isfinite(row[order])])
    return out


def title_vectors(model, tokenizer, titles: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(n_items, hidden): the model's mean last hidden state over each title's tokens (" <title>")."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(base.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(titles), batch_size):
            enc = tokenizer(
                [" " + t for t in titles[s : s + batch_size]],
                add_special_tokens=False,
                padding=True,
                return_tensors="pt",
            )
            mask = enc["attention_mask"].to(device)
            hidden = base.base_model(input_ids=enc["input_ids"].to(device), attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * weights).sum(1) / weights.sum(1)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))
