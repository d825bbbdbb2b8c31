"""m6gen's rows in ``m6gen eval``: each a way to turn the cached beams into one ranked list per user
(by a beam score, blended with SASRec, reranked, or in the order a prior searched them), and the one
row ``--choose-on-valid`` picks. Pure: beams are arrays, no model."""

from __future__ import annotations

import numpy as np

SCORE_COLUMNS = ((1, "logprob"), (2, "normalized"), (3, "catalog"))  # a beam's scores, by column of its array
PRIOR_COLUMN = 4  # the prior the beam was searched with (0 for the plain beams)
# The readout's own whole-catalog ranking (no search, no title): shown beside the search, never chosen
# by --choose-on-valid, since m6gen's list is what its search generates.
READOUT_ROW = "m6gen readout alone (whole catalog, no titles)"
# The SASRec+Readout search's prior by itself (SASRec's and the readout's log-probabilities added, as
# the search weighs them): what that search's titles add shows against this row. Not m6gen's list,
# so never chosen.
PRIOR_ROW = "SASRec + readout (whole catalog, no titles)"


def ordered(beams: list[np.ndarray], score) -> list[np.ndarray]:
    """Each user's beam items, best ``score(beams)`` first (ties keep the beams' order)."""
    return [b[np.argsort(-score(b), kind="stable"), 0].astype(np.int64) for b in beams]


def m6gen_rankings(
    beams, histories, seen, *, sasrec, blend, weights, features, score_col, k: int = 20
) -> dict[str, list[np.ndarray]]:
    """m6gen's rows from the plain search's beams (no generation): row name -> one ranked item array per user.

    ``beams``: per user a (n, 5) array [item, logprob, normalized, catalog, prior].
    """
    from m6gen.ranking.rerank import RerankConfig, rerank

    rows: dict[str, list[np.ndarray]] = {}
    for col, name in SCORE_COLUMNS:
        rows[f"m6gen beams (rank by {name})"] = ordered(beams, lambda b, col=col: b[:, col])
    if blend and sasrec is not None:
        # A text-free collaborative signal on m6gen's candidates ("Decoding Matters"-style): the
        # SASRec of the table scores each beam item; the beams are re-ranked by the sum.
        collab = sasrec.score_items(histories, [b[:, 0].astype(np.int64) for b in beams])
        for w in blend:
            rows[f"m6gen beams + SASRec blend (w {w:g})"] = [
                b[np.argsort(-(b[:, 1] + w * c), kind="stable"), 0].astype(np.int64) for b, c in zip(beams, collab)
            ]
    for div, nov in weights:
        rcfg = RerankConfig(k=k, diversity=div, novelty=nov)
        rows[f"m6gen reranked (div {div:g}, nov {nov:g})"] = [
            np.asarray(
                rerank(b[:, 0].astype(np.int64), b[:, score_col], seen=s, features=features, config=rcfg).item_ids,
                dtype=np.int64,
            )
            for b, s in zip(beams, seen)
        ]
    return rows


def searched_rankings(row: str, beams: list[np.ndarray], weight: float, score_col: int) -> dict[str, list[np.ndarray]]:
    """The rows of one search with a prior at ``weight``: ranked as searched (the ``--rank-by`` score +
    weight * prior, the row itself), by the other two scores + weight * prior (so --choose-on-valid also
    picks --rank-by), and by the prior alone (the titles chose which items the beams hold, the prior
    their order)."""
    rows = {}
    for col, by in SCORE_COLUMNS:
        name = row if col == score_col else f"{row[:-1]}, rank by {by})"
        rows[name] = ordered(beams, lambda b, col=col: b[:, col] + weight * b[:, PRIOR_COLUMN])
    rows[f"{row[:-1]}, rank by prior)"] = ordered(beams, lambda b: b[:, PRIOR_COLUMN])
    return rows


def choose_row(valid_rows: dict[str, dict[str, float]]) -> str:
    """The m6gen row with the best validation NDCG@10 (the readout alone is not m6gen's list); among
    rows that tie, the first listed (:func:`tied_rows` names the others)."""
    return max(_candidates(valid_rows), key=lambda r: valid_rows[r]["NDCG@10"])


def tied_rows(valid_rows: dict[str, dict[str, float]], chosen: str) -> list[str]:
    """The other m6gen rows whose validation NDCG@10 equals the chosen one's: validation did not choose
    among them (e.g. every row at 0 on a few users)."""
    best = valid_rows[chosen]["NDCG@10"]
    return [r for r in _candidates(valid_rows) if r != chosen and valid_rows[r]["NDCG@10"] == best]


def _candidates(valid_rows: dict[str, dict[str, float]]) -> list[str]:
    return [r for r in valid_rows if r.startswith("m6gen") and r != READOUT_ROW]
