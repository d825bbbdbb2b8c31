"""``m6gen eval``'s new-item parts: the content peers and the table of users whose target is a new item."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m6gen.commands.eval_report import VERSUS_LEVEL, VERSUS_METRICS, VERSUS_RESAMPLES

PRIOR_FLOOR = 20.0  # a content prior's logits reach at most this far below each user's best


class ContentPeers:
    """The content baselines asked for (``Content``, ``Newest``, ``TitleNN``; :mod:`m6gen.baselines.content`),
    ranking whole catalogs from item metadata and title embeddings: no interaction trains them."""

    def __init__(self, ds, rec, names: list[str]):
        from m6gen.baselines.content import genre_matrix

        self.names, self.rec, self.catalog = names, rec, ds.catalog
        self.genres = genre_matrix([it.genres for it in ds.catalog])
        self.years = np.array([np.nan if it.year is None else float(it.year) for it in ds.catalog])
        self._titles = None

    def title_vectors(self) -> np.ndarray:
        from m6gen.baselines.content import title_vectors

        if self._titles is None:  # one forward pass over the catalog's titles, once per run
            self._titles = title_vectors(self.rec.model, self.rec.tokenizer, [it.title for it in self.catalog])
        return self._titles

    def prior(self, name: str):
        """A content peer's scores as an item prior for the search: a function of histories to (users,
        items) logits (``Newest``: one year apart is a factor e, before the search's weight)."""
        from m6gen.baselines.content import genre_year_scores, newest_scores

        scores = {"Newest": newest_scores, "Content": genre_year_scores}[name]

        def prior(histories) -> np.ndarray:
            logits = scores(histories, self.genres, self.years)
            # 20 below a user's best is as low as it goes: e^-20 relative mass keeps the search's
            # subtree sums exact in float64, while a 70-year span at e per year would not be
            return np.maximum(logits, logits.max(axis=1, keepdims=True) - PRIOR_FLOOR)

        return prior

    def rankings(self, histories, seen, k: int) -> dict[str, list[np.ndarray]]:
        from m6gen.baselines.content import embedding_scores, genre_year_scores, newest_scores, rank

        out = {}
        if "Content" in self.names:
            out["Content"] = rank(genre_year_scores(histories, self.genres, self.years), seen, k)
        if "Newest" in self.names:
            out["Newest"] = rank(newest_scores(histories, self.genres, self.years), seen, k)
        if "TitleNN" in self.names:
            out["TitleNN"] = rank(embedding_scores(histories, self.title_vectors()), seen, k)
        return out


def report_new_items(out: Path, split_name: str, new: np.ndarray, per_user: dict, hits: dict) -> None:
    """``eval_<split>_new_items``: every row on the users whose target is a new item (--new-items), and
    each m6gen row's NDCG@10 against the best peer there (paired bootstrap)."""
    from m6gen.ranking.metrics import format_table, paired_bootstrap, write_results

    n = int(new.sum())
    if not n:
        print(f"\nno {split_name} target is a new item: no new-item table")
        return
    rows = {
        r: {"users": n, "HR@10": float(hits[r][new].mean()), "NDCG@10": float(v[new].mean())}
        for r, v in per_user.items()
    }
    peers = [r for r in rows if not r.startswith("m6gen")]
    print(f"\n{split_name}: the {n} users whose target is a new item ({n / len(new):.1%} of {len(new)}):\n")
    print(format_table(rows, ["users", "HR@10", "NDCG@10"]))
    written = write_results(out / f"eval_{split_name}_new_items", rows, ["users", "HR@10", "NDCG@10"])
    for stale in out.glob(f"eval_{split_name}_new_items_vs_*.*"):  # an earlier run's best peer may differ
        stale.unlink()
    if peers and all(rows[r]["NDCG@10"] == 0 for r in peers):  # no peer to compare with: each ratio would be nan
        print(f"\nno peer ranks a new item in a top 10 here ({', '.join(peers)} all 0): no comparison with a best peer")
    elif peers:
        best = max(peers, key=lambda r: rows[r]["NDCG@10"])
        versus = {
            r: paired_bootstrap(v[new], per_user[best][new], n_resamples=VERSUS_RESAMPLES, level=VERSUS_LEVEL)
            for r, v in per_user.items()
            if r.startswith("m6gen")
        }
        print(f"\nNDCG@10 on new-item targets against the best peer there, {best} (paired bootstrap):\n")
        print(format_table(versus, VERSUS_METRICS))
        written += write_results(out / f"eval_{split_name}_new_items_vs_{best.lower()}", versus, VERSUS_METRICS)
    print(f"\nwrote {', '.join(str(p) for p in written)}")
