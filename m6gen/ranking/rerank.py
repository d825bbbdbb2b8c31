"""Rerank one user's generated beams into a top-k list by accuracy, diversity and novelty."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from m6gen.config.groups import MAX_WEIGHT

METHODS = ("mmr", "dpp")
GENRE_METRICS = ("cosine", "jaccard")
_EPS = 1e-10  # floor for DPP conditional variances, so log() stays finite and every slot can be filled


@dataclass
class RerankConfig:
    """How beams are scored and how many items are kept."""

    accuracy: float = field(
        default=1.0, metadata={"help": "weight of the calibrated beam probability (softmax of logprob / temperature)"}
    )
    diversity: float = field(
        default=0.0, metadata={"help": "weight of dissimilarity to items already picked (0 = off)"}
    )
    novelty: float = field(default=0.0, metadata={"help": "weight of normalized popularity self-information (0 = off)"})
    method: str = field(
        default="mmr", metadata={"help": "greedy selection: 'mmr' (max marginal relevance) or 'dpp' (greedy DPP MAP)"}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature applied to sequence logprobs before calibration (> 0)"}
    )
    k: int = field(default=10, metadata={"help": "number of items to return per user"})

    def __post_init__(self):
        for name in ("accuracy", "diversity", "novelty"):
            value = getattr(self, name)
            number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if not number or not np.isfinite(value) or not 0 <= value <= MAX_WEIGHT:
                raise ValueError(f"{name} must be a number from 0 to {MAX_WEIGHT:g}, got {value!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (similarity 0 to everything, itself included)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


@dataclass(eq=False)  # arrays make the generated __eq__ ambiguous
class ItemFeatures:
    """Per-item content features and train popularity, indexed by dense item index.

    Similarity is genre similarity (multi-hot, cosine or Jaccard), embedding cosine,
    or ``genre_weight * genre + (1 - genre_weight) * embedding`` when both are given.
    Items without genres (or with an all-zero embedding) have similarity 0 to everything.
    """

    popularity: np.ndarray  # (n_items,) train interaction counts, >= 0
    genres: np.ndarray | None = None  # (n_items, n_genres) multi-hot 0/1
    embeddings: np.ndarray | None = None  # (n_items, d), e.g. mean input embedding of a title's tokens
    genre_metric: str = "cosine"  # "cosine" or "jaccard" on the genre multi-hot
    genre_weight: float = 0.5  # share of genre similarity when both genres and embeddings are given
    genre_names: tuple[str, ...] = ()  # column names of ``genres``

    def __post_init__(self):
        self.popularity = np.asarray(self.popularity, dtype=np.float64)
        if self.popularity.ndim != 1 or len(self.popularity) == 0:
            raise ValueError(f"popularity must be a non-empty 1-D array, got shape {self.popularity.shape}")
        if not np.all(np.isfinite(self.popularity)) or np.any(self.popularity < 0):
            raise ValueError("popularity must hold finite counts >= 0")
        n = len(self.popularity)
        if self.genres is not None:
            self.genres = np.asarray(self.genres, dtype=np.float64)
            if self.genres.ndim != 2 or self.genres.shape[0] != n:
                raise ValueError(f"genres must have shape ({n}, n_genres), got {self.genres.shape}")
            if not np.all((self.genres == 0) | (self.genres == 1)):
                raise ValueError("genres must be a 0/1 multi-hot matrix")
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings)
            # keep float32 inputs in float32: a catalog of title embeddings can be large
            self.embeddings = emb.astype(np.result_type(emb.dtype, np.float32), copy=False)
            if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
                raise ValueError(f"embeddings must have shape ({n}, d), got {self.embeddings.shape}")
            if not np.all(np.isfinite(self.embeddings)):
                raise ValueError("embeddings must be finite")
        if self.genre_metric not in GENRE_METRICS:
            raise ValueError(f"genre_metric must be one of {GENRE_METRICS}, got {self.genre_metric!r}")
        if not 0.0 <= self.genre_weight <= 1.0:
            raise ValueError(f"genre_weight must be in [0, 1], got {self.genre_weight!r}")
        self._genre_unit = None if self.genres is None else _unit_rows(self.genres)
        self._genre_size = None if self.genres is None else self.genres.sum(axis=1)
        self._emb_unit = None if self.embeddings is None else _unit_rows(self.embeddings)

    @classmethod
    def from_genres(
        cls,
        genres: list[list[str]],
        popularity: np.ndarray | None = None,
        *,
        metric: str = "cosine",
        embeddings: np.ndarray | None = None,
        genre_weight: float = 0.5,
    ) -> ItemFeatures:
        """Multi-hot genre features; ``genres[i]`` lists item i's genres. Columns are the sorted genre names."""
        names = tuple(sorted({g for gs in genres for g in gs}))
        col = {g: j for j, g in enumerate(names)}
        rows = [i for i, gs in enumerate(genres) for _ in gs]
        cols = [col[g] for gs in genres for g in gs]
        multi_hot = np.zeros((len(genres), len(names)))
        multi_hot[rows, cols] = 1.0
        if popularity is None:
            popularity = np.zeros(len(genres))
        if len(popularity) != len(genres):  # else the shape check below would blame the genres
            raise ValueError(f"popularity has {len(popularity)} entries, genres {len(genres)} items: give one per item")
        return cls(popularity, multi_hot, embeddings, metric, genre_weight, names)

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, popularity: np.ndarray | None = None) -> ItemFeatures:
        """Dense embedding features compared by cosine similarity."""
        embeddings = np.asarray(embeddings)
        if popularity is None:
            popularity = np.zeros(len(embeddings))
        return cls(popularity, embeddings=embeddings)

    @property
    def n_items(self) -> int:
        return len(self.popularity)

    @property
    def has_content(self) -> bool:
        """Whether similarity is defined (genres or embeddings present)."""
        return self.genres is not None or self.embeddings is not None

    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_items):
            raise ValueError(f"item ids must be in [0, {self.n_items}), got range [{ids.min()}, {ids.max()}]")
        return ids

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise item similarity, shape (len(a), len(b)); 1 for identical non-empty features."""
        if not self.has_content:
            raise ValueError("ItemFeatures has neither genres nor embeddings: similarity is undefined")
        a, b = self._check_ids(a), self._check_ids(b)
        sim_g = sim_e = None
        if self.genres is not None:
            if self.genre_metric == "cosine":
                sim_g = self._genre_unit[a] @ self._genre_unit[b].T  # (A, B)
            else:
                inter = self.genres[a] @ self.genres[b].T  # (A, B) shared genres
                union = self._genre_size[a][:, None] + self._genre_size[b][None, :] - inter
                sim_g = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        if self.embeddings is not None:
            sim_e = (self._emb_unit[a] @ self._emb_unit[b].T).astype(np.float64)  # (A, B)
        if sim_g is None:
            return sim_e
        if sim_e is None:
            return sim_g
        return self.genre_weight * sim_g + (1.0 - self.genre_weight) * sim_e

    def self_similarity(self, ids: np.ndarray) -> np.ndarray:
        """``similarity(i, i)`` for each id without the full matrix: 1, or 0 for featureless items."""
        ids = self._check_ids(ids)
        parts = []
        if self.genres is not None:
            parts.append((self.genre_weight, (self._genre_size[ids] > 0).astype(np.float64)))
        if self.embeddings is not None:
            has = (np.abs(self._emb_unit[ids]).sum(axis=1) > 0).astype(np.float64)
            parts.append((1.0 - self.genre_weight, has))
        if len(parts) == 1:
            return parts[0][1]
        return parts[0][0] * parts[0][1] + parts[1][0] * parts[1][1]

    def novelty(self, ids: np.ndarray) -> np.ndarray:
        """Normalized self-information of each item, in [0, 1].

        ``p_i = (pop_i + 1) / (total + n_items)`` (add-one smoothing; sums to 1 over the
        catalog) and ``novelty_i = -log2(p_i) / log2(total + n_items)``: the divisor is the
        largest self-information possible (an item never seen in training), so such an
        item scores 1. A one-item catalog without interactions scores 0.
        """
        ids = self._check_ids(ids)
        denom = self.popularity.sum() + self.n_items
        max_info = np.log2(denom)
        if max_info <= 0:
            return np.zeros(len(ids))
        return -np.log2((self.popularity[ids] + 1.0) / denom) / max_info


@dataclass(frozen=True)
class Recommendation:
    """One reranked item with its score breakdown (``score`` is the greedy gain when it was picked)."""

    item_id: int
    score: float
    accuracy: float  # softmax(logprob / T) over the user's distinct unseen candidates
    diversity: float  # mmr: 1 - max similarity to earlier picks (1.0 first); dpp: conditional variance
    novelty: float  # ItemFeatures.novelty; nan without features
    logprob: float  # best beam score given for this item (Recommender puts back the LM's sequence logprob)
    rank: int  # 1-based position in the reranked list


@dataclass(frozen=True)
class RerankResult:
    """One user's reranked list; ``filled`` is False when fewer than ``requested_k`` items were available."""

    items: list[Recommendation]
    requested_k: int
    n_candidates: int  # distinct unseen items among the beams
    n_duplicates: int = 0  # beam entries dropped as repeats of an item already in the beams
    n_seen: int = 0  # distinct beam items dropped because the user had seen them

    @property
    def filled(self) -> bool:
        return len(self.items) >= self.requested_k

    @property
    def item_ids(self) -> np.ndarray:
        return np.array([r.item_id for r in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def shortfall(self) -> str:
        """A user-facing note such as 'only 7 of 10 could be filled', or '' when filled."""
        if self.filled:
            return ""
        return f"only {len(self.items)} of {self.requested_k} could be filled"


def calibrate(logprobs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``logprobs / temperature``: beam scores as probabilities summing to 1.

    ``-inf`` entries get probability 0; if every entry is ``-inf`` the result is uniform.
    """
    z = np.asarray(logprobs, dtype=np.float64) / temperature
    if z.size == 0:
        return z
    top = z.max()
    if not np.isfinite(top):  # all -inf: nothing to prefer
        return np.full(z.shape, 1.0 / z.size)
    e = np.exp(z - top)  # shift by the max so exp never overflows
    return e / e.sum()


def _candidates(item_ids, logprobs, seen) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Distinct unseen items with their best logprob, ordered by logprob desc then first occurrence."""
    ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    lp = np.asarray(logprobs, dtype=np.float64).reshape(-1)
    if len(ids) != len(lp):
        raise ValueError(f"item_ids and logprobs differ in length: {len(ids)} vs {len(lp)}")
    if np.any(np.isnan(lp)) or np.any(lp == np.inf):
        raise ValueError("logprobs must not contain nan or +inf")
    if ids.size and ids.min() < 0:
        raise ValueError(f"item ids must be >= 0, got {ids.min()}")
    uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    best = np.full(len(uniq), -np.inf)
    np.maximum.at(best, inv, lp)  # keep the best beam per item
    n_duplicates = len(ids) - len(uniq)
    if seen is None:
        seen_arr = np.zeros(0, dtype=np.int64)
    elif isinstance(seen, np.ndarray):
        seen_arr = seen.astype(np.int64, copy=False).reshape(-1)
    else:
        seen_arr = np.fromiter(seen, dtype=np.int64)
    keep = ~np.isin(uniq, seen_arr)
    n_seen = int((~keep).sum())
    uniq, first, best = uniq[keep], first[keep], best[keep]
    order = np.lexsort((first, -best))  # primary: logprob desc; ties: earlier beam first
    return uniq[order], best[order], n_duplicates, n_seen


def rerank(
    item_ids: np.ndarray,
    logprobs: np.ndarray,
    seen: set[int] | np.ndarray | None = None,
    features: ItemFeatures | None = None,
    config: RerankConfig | None = None,
) -> RerankResult:
    """Rerank one user's beams greedily into at most ``config.k`` distinct unseen items.

    Candidates are the distinct beam items not in ``seen`` (each with its best logprob).
    Each step picks the candidate maximizing ``w_acc * accuracy + w_div * diversity_gain
    + w_nov * novelty`` given the items already picked. For ``mmr`` the gain is
    ``1 - max similarity to the picked items`` (1.0 for the first pick); for ``dpp`` it is
    ``log`` of the conditional variance of the item's feature vector given the picked ones
    (greedy MAP of a DPP with kernel ``diag(q) S diag(q)``, ``q = exp(relevance / (2 w_div))``).
    Ties go to the higher logprob, then to the earlier beam, so with zero diversity and
    novelty weights the result is exactly the beam order.

    Args:
        item_ids: (n_beams,) item index of each beam; duplicates allowed.
        logprobs: (n_beams,) sequence log-probability of each beam.
        seen: items the user already interacted with; dropped.
        features: content and popularity; needed when diversity/novelty weights are > 0.
        config: weights, method, temperature and k.

    Returns:
        RerankResult with per-item breakdowns; ``filled`` is False if fewer than k were available.
    """
    cfg = config or RerankConfig()
    if features is None and (cfg.diversity > 0 or cfg.novelty > 0):
        raise ValueError("diversity/novelty > 0 need ItemFeatures (features=None given)")
    if features is not None and cfg.diversity > 0 and not features.has_content:
        raise ValueError("diversity > 0 needs ItemFeatures with genres or embeddings")
    cand, best, n_dup, n_seen = _candidates(item_ids, logprobs, seen)
    if features is not None:
        cand = features._check_ids(cand)
    n, k = len(cand), min(cfg.k, len(cand))
    acc = calibrate(best, cfg.temperature)
    nov = features.novelty(cand) if features is not None else np.full(n, np.nan)
    rel = np.zeros(n)
    if cfg.accuracy:
        rel += cfg.accuracy * acc
    if cfg.novelty:
        rel += cfg.novelty * nov
    has_sim = features is not None and features.has_content
    w_div = cfg.diversity

    available = np.ones(n, dtype=bool)
    max_sim = np.full(n, -np.inf)  # mmr: max similarity to picked items
    if cfg.method == "dpp":
        d2 = features.self_similarity(cand) if has_sim else np.full(n, np.nan)  # conditional variances
        chol = np.zeros((k, n))  # rows of the incremental Cholesky factor (Chen et al., 2018)
    items: list[Recommendation] = []
    for t in range(k):
        if cfg.method == "mmr":
            # cosine of identical genre rows is 1 + a rounding error: a dissimilarity is never below 0
            div = np.ones(n) if t == 0 else np.maximum(1.0 - max_sim, 0.0)
            gain = div
        else:
            div = d2
            gain = np.log(np.maximum(d2, _EPS)) if w_div else d2
        score = rel + w_div * gain if w_div else rel.copy()
        score[~available] = -np.inf
        j = int(np.argmax(score))  # first max = higher logprob, then earlier beam
        available[j] = False
        items.append(
            Recommendation(
                item_id=int(cand[j]),
                score=float(score[j]),
                accuracy=float(acc[j]),
                diversity=float(div[j]) if has_sim else float("nan"),
                novelty=float(nov[j]),
                logprob=float(best[j]),
                rank=t + 1,
            )
        )
        if has_sim and t < k - 1:
            col = features.similarity(cand, cand[j : j + 1])[:, 0]  # (n,) similarity to the new pick
            if cfg.method == "mmr":
                max_sim = np.maximum(max_sim, col)
            else:
                if d2[j] > _EPS:
                    e = (col - chol[:t].T @ chol[:t, j]) / np.sqrt(d2[j])
                else:  # the pick adds no new direction: variances of the rest are unchanged
                    e = np.zeros(n)
                chol[t] = e
                d2 = np.maximum(d2 - e**2, 0.0)
    return RerankResult(items, cfg.k, n, n_dup, n_seen)


def rerank_many(
    beams: list[tuple[np.ndarray, np.ndarray]],
    seen: list[set[int] | np.ndarray] | None,
    features: ItemFeatures | None,
    config: RerankConfig | None = None,
) -> list[RerankResult]:
    """``rerank`` for each user: ``beams[u] = (item_ids, logprobs)``, ``seen[u]`` that user's history."""
    if seen is not None and len(seen) != len(beams):
        raise ValueError(f"beams and seen differ in length: {len(beams)} users vs {len(seen)}")
    cfg = config or RerankConfig()
    return [rerank(ids, lps, None if seen is None else seen[u], features, cfg) for u, (ids, lps) in enumerate(beams)]
