"""Full-ranking leave-one-out metrics (HR/NDCG/MRR), beyond-accuracy and validity metrics, result tables."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from m6gen.files import write_atomic

if TYPE_CHECKING:
    from m6gen.ranking.rerank import ItemFeatures

Ranking = Sequence[int] | np.ndarray  # one user's ranked item indices, best first


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _top(ranking: Ranking, k: int | None) -> np.ndarray:
    r = np.asarray(ranking, dtype=np.int64).reshape(-1)
    return r if k is None else r[:k]


def _check_users(ranked: Sequence[Ranking], other, what: str) -> None:
    if len(ranked) == 0:
        raise ValueError("no users: ranked is empty")
    if len(other) != len(ranked):
        raise ValueError(f"ranked and {what} differ in length: {len(ranked)} vs {len(other)} users")


def target_ranks(ranked: Sequence[Ranking], targets: np.ndarray, k: int) -> np.ndarray:
    """1-based rank of each user's target within its top-k, 0 if not there.

    Lists shorter than k simply have fewer chances (missing positions are misses).
    With duplicates the first occurrence counts; positions are list positions.
    """
    k = _check_k(k)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    _check_users(ranked, targets, "targets")
    padded = np.full((len(ranked), k), -1, dtype=np.int64)  # (U, k); -1 never equals an item index
    for u, r in enumerate(ranked):
        top = _top(r, k)
        padded[u, : len(top)] = top
    hit = padded == targets[:, None]  # (U, k)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def per_user_scores(ranked: Sequence[Ranking], targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user HR, NDCG and MRR at k (arrays of length n_users), e.g. for paired significance tests."""
    ranks = target_ranks(ranked, targets, k)
    hit = ranks > 0
    safe = np.maximum(ranks, 1)
    return {
        "HR": hit.astype(np.float64),
        # one relevant item, so IDCG = 1 and NDCG = 1 / log2(rank + 1)
        "NDCG": np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0),
        "MRR": np.where(hit, 1.0 / safe, 0.0),
    }


def paired_bootstrap(
    method: np.ndarray, reference: np.ndarray, *, n_resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """How sure is "method beats reference"? Paired bootstrap over users of two per-user score arrays.

    Users are resampled with replacement (the same users for both, so per-user difficulty cancels);
    percentile intervals at ``level``. Returns ``ratio`` (mean method / mean reference, nan if the
    reference mean is 0) with ``ratio_low``/``ratio_high``, ``diff`` (mean difference) with
    ``diff_low``/``diff_high``, and ``p_not_better``: the share of resamples where the method's mean is
    not above the reference's (a one-sided bootstrap p-value for "method is better").
    """
    a = np.asarray(method, dtype=np.float64).reshape(-1)
    b = np.asarray(reference, dtype=np.float64).reshape(-1)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"need two non-empty per-user arrays of equal length, got {len(a)} and {len(b)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    sums_a, sums_b = np.empty(n_resamples), np.empty(n_resamples)
    for s in range(0, n_resamples, 1000):  # chunks keep the (resamples, users) index matrix small
        idx = rng.integers(0, len(a), size=(min(1000, n_resamples - s), len(a)))
        sums_a[s : s + len(idx)], sums_b[s : s + len(idx)] = a[idx].sum(axis=1), b[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(sums_b > 0, sums_a / sums_b, np.nan)
    tail = (1.0 - level) / 2 * 100
    diffs = (sums_a - sums_b) / len(a)
    ratio = float(a.mean() / b.mean()) if b.mean() > 0 else float("nan")
    ratio_low, ratio_high = (
        np.nanpercentile(ratios, [tail, 100 - tail]) if np.isfinite(ratios).any() else (float("nan"), float("nan"))
    )
    diff_low, diff_high = np.percentile(diffs, [tail, 100 - tail])
    return {
        "ratio": ratio,
        "ratio_low": float(ratio_low),
        "ratio_high": float(ratio_high),
        "diff": float(a.mean() - b.mean()),
        "diff_low": float(diff_low),
        "diff_high": float(diff_high),
        "p_not_better": float(np.mean(diffs <= 0)),
    }


@dataclass(frozen=True)
class UserGroup:
    """Some of the evaluated users, named for what they share (``users`` indexes the per-user arrays)."""

    label: str
    users: np.ndarray


def popularity_groups(target_counts: np.ndarray, n_groups: int = 3) -> list[UserGroup]:
    """Users split by how often their target item occurs in training, rarest targets first, into
    ``n_groups`` groups cut at the n-tiles of the sorted counts: the long tail apart from the blockbusters.
    Users whose targets are equally popular stay together in the lower group (so sizes may differ, and
    fewer groups may come back)."""
    counts = np.asarray(target_counts, dtype=np.int64).reshape(-1)
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    if not len(counts):
        return []
    ordered = np.sort(counts)
    # the count at each cut: the ceil(len * g / n_groups)-th smallest, the top of group g-1 before ties move it
    cuts = [int(ordered[-(-len(counts) * g // n_groups) - 1]) for g in range(1, n_groups)]
    groups, low = [], -1
    for top in [*cuts, int(ordered[-1])]:
        users = np.flatnonzero((counts > low) & (counts <= top))
        if len(users):
            least, most = int(counts[users].min()), int(counts[users].max())
            span = f"{least}" if least == most else f"{least}-{most}"
            groups.append(UserGroup(f"target's training count {span}", users))
        low = max(low, top)
    return groups


def hit_rate_at_k(ranked: Sequence[Ranking], targets: np.ndarray, k: int) -> float:
    """Share of users whose target is in their top-k (= Recall@k with one target)."""
    return float(per_user_scores(ranked, targets, k)["HR"].mean())


def ndcg_at_k(ranked: Sequence[Ranking], targets: np.ndarray, k: int) -> float:
    """Mean ``1 / log2(rank + 1)`` over users (rank 1-based; 0 for a miss)."""
    return float(per_user_scores(ranked, targets, k)["NDCG"].mean())


def mrr_at_k(ranked: Sequence[Ranking], targets: np.ndarray, k: int) -> float:
    """Mean ``1 / rank`` over users (0 for a miss)."""
    return float(per_user_scores(ranked, targets, k)["MRR"].mean())


def intra_list_diversity(ranked: Sequence[Ranking], features: ItemFeatures, k: int) -> float:
    """Mean pairwise distance ``1 - similarity`` within each top-k list, averaged over users.

    Lists with fewer than 2 items have no pairs and are skipped; nan if no list has 2.
    A duplicated item counts as a pair at distance 0.
    """
    k = _check_k(k)
    per_list = []
    for r in ranked:
        top = _top(r, k)
        if len(top) < 2:
            continue
        sim = features.similarity(top, top)  # (n, n)
        iu = np.triu_indices(len(top), k=1)
        per_list.append(float(np.mean(1.0 - sim[iu])))
    return float(np.mean(per_list)) if per_list else float("nan")


def novelty(ranked: Sequence[Ranking], user_freq: np.ndarray, n_users: int, k: int) -> float:
    """Mean self-information ``-log2(users(i) / n_users)`` of recommended items.

    ``users(i)`` = distinct train users of item i (``user_freq[i]``), clamped to >= 1 so an
    item nobody trained on scores ``log2(n_users)`` instead of infinity. Averaged within each
    top-k list, then over users; empty lists are skipped (nan if all are empty).
    """
    k = _check_k(k)
    freq = np.asarray(user_freq, dtype=np.float64).reshape(-1)
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if np.any(freq < 0) or np.any(freq > n_users):
        raise ValueError(f"user_freq must lie in [0, n_users={n_users}]")
    info = -np.log2(np.maximum(freq, 1.0) / n_users)  # (n_items,)
    per_list = [float(info[_top(r, k)].mean()) for r in ranked if len(_top(r, k))]
    return float(np.mean(per_list)) if per_list else float("nan")


def catalog_coverage(ranked: Sequence[Ranking], n_items: int, k: int) -> float:
    """Distinct items appearing in any top-k list, divided by ``n_items``."""
    k = _check_k(k)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    tops = [_top(r, k) for r in ranked]
    allr = np.concatenate(tops) if tops else np.zeros(0, dtype=np.int64)
    if allr.size and (allr.min() < 0 or allr.max() >= n_items):
        raise ValueError(f"ranked item ids must be in [0, {n_items})")
    return len(np.unique(allr)) / n_items


def validity(outputs_in_catalog: Sequence[Sequence[bool]]) -> float:
    """Share of generated outputs (over all users) that are catalog items; nan if there are none."""
    flags = [bool(x) for outs in outputs_in_catalog for x in outs]
    return float(np.mean(flags)) if flags else float("nan")


def duplicate_rate(ranked: Sequence[Ranking], k: int | None = None) -> float:
    """Share of list entries repeating an earlier entry of the same list; nan if all lists are empty."""
    total = dup = 0
    for r in ranked:
        top = _top(r, k)
        total += len(top)
        dup += len(top) - len(np.unique(top))
    return dup / total if total else float("nan")


def seen_rate(ranked: Sequence[Ranking], seen: Sequence[set[int] | np.ndarray], k: int | None = None) -> float:
    """Share of list entries the user had already seen in training; nan if all lists are empty."""
    _check_users(ranked, seen, "seen")
    total = hits = 0
    for r, s in zip(ranked, seen):
        top = _top(r, k)
        s_arr = s.reshape(-1) if isinstance(s, np.ndarray) else np.fromiter(s, dtype=np.int64)
        total += len(top)
        hits += int(np.isin(top, s_arr).sum())
    return hits / total if total else float("nan")


def evaluate_rankings(
    ranked: Sequence[Ranking],
    targets: np.ndarray,
    *,
    ks: Sequence[int] = (5, 10, 20),
    features: ItemFeatures | None = None,
    user_freq: np.ndarray | None = None,
    n_users: int | None = None,
    n_items: int | None = None,
    seen: Sequence[set[int] | np.ndarray] | None = None,
) -> dict[str, float]:
    """All metrics that the given inputs allow, as ``{"HR@10": ..., "NDCG@10": ..., ...}``.

    Always: HR/NDCG/MRR@k and DuplicateRate. ILD@k needs ``features``; Novelty@k needs
    ``user_freq`` and ``n_users`` (train users); Coverage@k needs ``n_items`` (or features);
    SeenRate needs ``seen``. Rate metrics use the full lists.
    """
    if user_freq is not None and n_users is None:
        raise ValueError("Novelty needs n_users (number of train users) along with user_freq")
    if n_items is None and features is not None:
        n_items = features.n_items
    out: dict[str, float] = {}
    scores = {k: per_user_scores(ranked, targets, k) for k in ks}
    for name in ("HR", "NDCG", "MRR"):
        for k in ks:
            out[f"{name}@{k}"] = float(scores[k][name].mean())
    for k in ks:
        if features is not None and features.has_content:
            out[f"ILD@{k}"] = intra_list_diversity(ranked, features, k)
    for k in ks:
        if user_freq is not None:
            out[f"Novelty@{k}"] = novelty(ranked, user_freq, n_users, k)
    for k in ks:
        if n_items is not None:
            out[f"Coverage@{k}"] = catalog_coverage(ranked, n_items, k)
    if seen is not None:
        out["SeenRate"] = seen_rate(ranked, seen)
    out["DuplicateRate"] = duplicate_rate(ranked)
    return out


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):  # counts, such as users
        return str(value)
    return f"{value:.{digits}f}"


def format_table(
    rows: dict[str, dict[str, float]], metrics: list[str] | None = None, digits: int | dict[str, int] = 4
) -> str:
    """Markdown table, one row per method and one column per metric ('-' where a row lacks it).

    ``metrics=None`` uses every metric in order of first appearance. ``digits`` may name some
    columns' own digits (``{"seconds": 1}``); the others keep 4.
    """
    places = digits if isinstance(digits, dict) else {}
    default = 4 if isinstance(digits, dict) else digits
    if metrics is None:
        metrics = list(dict.fromkeys(m for vals in rows.values() for m in vals))
    lines = [
        "| " + " | ".join(["method", *metrics]) + " |",
        "|" + "|".join(["---", *["---:"] * len(metrics)]) + "|",
    ]
    for name, vals in rows.items():
        cells = [name.replace("|", "\\|"), *(_fmt(vals.get(m), places.get(m, default)) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    path_without_ext: str | os.PathLike, rows: dict[str, dict[str, float]], metrics: list[str] | None = None
) -> list[Path]:
    """Write ``rows`` as ``<path>.md``, ``<path>.csv`` and ``<path>.json``, each atomically.

    CSV leaves a cell empty where a row lacks the metric; JSON writes nan as null (strict JSON).
    Returns the three paths.
    """
    base = Path(path_without_ext)
    base.parent.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        metrics = list(dict.fromkeys(m for vals in rows.values() for m in vals))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", *metrics])
    for name, vals in rows.items():
        writer.writerow([name, *(repr(float(vals[m])) if m in vals else "" for m in metrics)])
    clean = {
        name: {m: (None if math.isnan(float(v)) else float(v)) for m, v in vals.items()} for name, vals in rows.items()
    }
    paths = [Path(f"{base}.md"), Path(f"{base}.csv"), Path(f"{base}.json")]
    texts = [format_table(rows, metrics), buf.getvalue(), json.dumps(clean, indent=2, allow_nan=False) + "\n"]
    for p, text in zip(paths, texts):
        write_atomic(p, text)
    return paths
