"""What the chat session's `rec` shows: a list as rows (what `save` writes and `why N` reads) and as
the lines of its table. Pure functions of the results and the catalog; the session prints them."""

from __future__ import annotations

import math

from m6gen.commands.common import display_width, pad

MAX_TITLE_COLUMNS = 50  # wider titles are clipped, so the score columns stay aligned


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def catalog_rows(items, catalog) -> list[dict]:
    """One row per reranked item (``Recommendations.items``), with its catalog id and scores."""
    return [
        {
            "rank": r.rank,
            "item_id": catalog[r.item_id].item_id,
            "title": catalog[r.item_id].title,
            "in_catalog": True,
            "score": r.score,
            "accuracy": r.accuracy,
            "diversity": r.diversity,
            "novelty": r.novelty,
            "logprob": r.logprob,
        }
        for r in items
    ]


def catalog_table(rows: list[dict], held_out_id: str | None = None) -> list[str]:
    """The column header and one line per row; the row whose ``item_id`` is ``held_out_id`` (the
    user's held-out test item, when the history is a data user's) is marked."""
    width = min(max([display_width(r["title"]) for r in rows] + [5]), MAX_TITLE_COLUMNS)
    lines = [f"   #  {'title':<{width}}  score  accur  diver  novel  logprob"]
    for r in rows:
        scores = "  ".join(_fmt(r[k]) for k in ("score", "accuracy", "diversity", "novelty"))
        mark = "  <- held-out test item" if held_out_id is not None and r["item_id"] == held_out_id else ""
        lines.append(f"  {r['rank']:>2}. {pad(r['title'], width)}  {scores}  {r['logprob']:7.2f}{mark}")
    return lines


def open_rows(outputs, catalog, k: int) -> list[dict]:
    """The first ``k`` distinct non-empty texts of open-ended outputs (``open_generate``), best first."""
    rows, seen_text = [], set()
    for o in outputs:
        text = o.text.strip()
        if not text or text in seen_text or len(rows) == k:
            continue
        seen_text.add(text)
        item = catalog[o.item] if o.in_catalog else None
        rows.append(
            {
                "rank": len(rows) + 1,
                "item_id": item.item_id if item else None,
                "title": text,
                "in_catalog": o.in_catalog,
                "logprob": o.logprob,
            }
        )
    return rows


def open_table(rows: list[dict], history: list[int], catalog) -> list[str]:
    """One line per open-ended row, flagged as in the catalog, outside it, or already in ``history``."""
    lines = []
    for r in rows:
        flag = "in catalog" if r["in_catalog"] else "NOT in catalog"
        if r["in_catalog"] and catalog.index_of(r["item_id"]) in history:
            flag += ", already in history"
        lines.append(f"  {r['rank']:>2}. {pad(r['title'], 60).rstrip()}  logprob {r['logprob']:.2f}  [{flag}]")
    if not rows:
        lines.append("  (the model generated no titles: every beam began with a line break)")
    return lines
