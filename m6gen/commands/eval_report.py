"""What ``m6gen eval`` prints and writes for one split: the metrics table, each row's NDCG@10 against
SASRec on the same users (paired bootstrap), and the accuracy / diversity / novelty trade-off plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VERSUS_RESAMPLES, VERSUS_LEVEL = 10_000, 0.95
VERSUS_METRICS = ["ratio", "ratio_low", "ratio_high", "diff", "diff_low", "diff_high", "p_not_better"]
TABLE_METRICS = [
    "HR@5",
    "NDCG@5",
    "HR@10",
    "NDCG@10",
    "MRR@10",
    "HR@20",
    "NDCG@20",
    "ILD@10",
    "Novelty@10",
    "Coverage@10",
]


def report(
    out: Path,
    split_name: str,
    n_users: int,
    ranked_what: str,
    rows: dict[str, dict[str, float]],
    per_user: dict[str, np.ndarray],
) -> None:
    """Print and write one split's table, its paired comparison with SASRec and its trade-off plot
    (``split_name`` names the files: "test", or "test_cold" for --cold-only; ``ranked_what``: which items)."""
    from m6gen.ranking.metrics import format_table, paired_bootstrap, write_results

    print(f"\n{split_name} split, {n_users} users, {ranked_what} ranked, history excluded:\n")
    print(format_table(rows, TABLE_METRICS))
    written = write_results(out / f"eval_{split_name}", rows)
    if "SASRec" in per_user:
        versus = {
            name: paired_bootstrap(v, per_user["SASRec"], n_resamples=VERSUS_RESAMPLES, level=VERSUS_LEVEL)
            for name, v in per_user.items()
            if name != "SASRec"
        }
        print(
            f"\nNDCG@10 against SASRec on the same users (paired bootstrap over users, {VERSUS_RESAMPLES:,} resamples,"
            f" {VERSUS_LEVEL:.0%} intervals; p_not_better = share of resamples where the row is not above SASRec):\n"
        )
        print(format_table(versus, VERSUS_METRICS))
        explain_missing_ratios(versus)
        written += write_results(out / f"eval_{split_name}_vs_sasrec", versus, VERSUS_METRICS)
    else:  # an earlier run's comparison would contradict this table
        for stale in out.glob(f"eval_{split_name}_vs_sasrec.*"):
            stale.unlink()
    plot_tradeoff(rows, out / f"tradeoff_{split_name}.png")
    print(f"\nwrote {', '.join(str(p) for p in written)} and {out / f'tradeoff_{split_name}.png'}")


def report_by_popularity(out: Path, split_name: str, groups: list, per_user: dict, hits: dict) -> None:
    """``eval_<split>_by_popularity``: every row's HR@10 and NDCG@10 within groups of users by how popular
    their target item is in training (``groups``: :func:`m6gen.ranking.metrics.popularity_groups`), and
    with SASRec in the run each row's NDCG@10 against SASRec's on the same users: where on the long
    tail a row wins or loses."""
    from m6gen.ranking.metrics import format_table, paired_bootstrap, write_results

    if len(groups) < 2:  # one group is the table above again
        for stale in out.glob(f"eval_{split_name}_by_popularity.*"):
            stale.unlink()
        return
    rows = {}
    for group in groups:
        for name, ndcg in per_user.items():
            row = {
                "users": len(group.users),
                "HR@10": float(hits[name][group.users].mean()),
                "NDCG@10": float(ndcg[group.users].mean()),
            }
            if "SASRec" in per_user and name != "SASRec":
                versus = paired_bootstrap(
                    ndcg[group.users], per_user["SASRec"][group.users], n_resamples=VERSUS_RESAMPLES, level=VERSUS_LEVEL
                )
                row.update((m, versus[m]) for m in ("ratio", "ratio_low", "ratio_high"))
            rows[f"{group.label}: {name}"] = row
    with_sasrec = "SASRec" in per_user  # without it there is no ratio to show
    metrics = ["users", "HR@10", "NDCG@10", *(["ratio", "ratio_low", "ratio_high"] if with_sasrec else [])]
    versus = (
        f"; ratio = NDCG@10 against SASRec on the same users (paired bootstrap, {VERSUS_LEVEL:.0%} intervals)"
        if with_sasrec
        else ""
    )
    print(f"\n{split_name}: users grouped by their target's popularity in training (rarest first){versus}:\n")
    print(format_table(rows, metrics))
    explain_missing_ratios(rows)
    written = write_results(out / f"eval_{split_name}_by_popularity", rows, metrics)
    print(f"wrote {', '.join(str(p) for p in written)}")


def explain_missing_ratios(rows: dict[str, dict[str, float]]) -> None:
    """A ratio (or its interval) is nan where SASRec's NDCG@10 is 0 (on all the users, or on every resample):
    there is nothing to divide by, so say so under the table instead of leaving a bare nan."""
    if any(np.isnan(row.get(m, 0.0)) for row in rows.values() for m in ("ratio", "ratio_low", "ratio_high")):
        print(
            "\nnan: SASRec's NDCG@10 is 0 on those users (or on every resample), so there is no ratio to it; "
            "compare NDCG@10 itself, or evaluate more users"
        )


def plot_tradeoff(rows: dict[str, dict[str, float]], path: Path) -> None:
    """NDCG@10 against intra-list diversity, colour = novelty, one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows if np.isfinite(rows[n].get("ILD@10", np.nan))]
    x = [rows[n]["ILD@10"] for n in names]
    y = [rows[n]["NDCG@10"] for n in names]
    c = [rows[n].get("Novelty@10", np.nan) for n in names]
    fig, ax = plt.subplots(figsize=(7, 5))
    sc = ax.scatter(x, y, c=c, cmap="viridis", s=60)
    for xi, yi, n in zip(x, y, names):
        ax.annotate(n, (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points")
    fig.colorbar(sc, label="Novelty@10 (bits)")
    ax.set_xlabel("intra-list diversity @10")
    ax.set_ylabel("NDCG@10")
    ax.set_title("accuracy / diversity / novelty trade-off")
    fig.tight_layout()
    import io

    from m6gen.files import write_atomic

    image = io.BytesIO()
    fig.savefig(image, dpi=120, format="png")
    plt.close(fig)
    write_atomic(path, image.getvalue())
