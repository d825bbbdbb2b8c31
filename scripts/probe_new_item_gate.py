"""Probe: can a gate learned from training data alone tell which users are about to pick a new item?

Under the new-item protocol (``--new-items FRAC``) no training interaction names a new item, so a gate
cannot be taught on new items themselves. This probe teaches it on the same protocol applied again
inside the training interactions: the FRAC of training items that arrived last are "pseudo-new",
and every training event is an example (was its item pseudo-new?) with features of the history
before it and of the event's time. The logistic gate is then scored on the real protocol's
validation and test events (was the target a new item?) by AUC and by the share of new-item users
among the users it ranks first, beside each feature alone.

Every feature is known when recommending: the request's time, the catalog's arrival dates (an
item's first interaction in the data), release years, the history without new items, and training
popularity. Nothing reads a validation or test target except the labels scored here.

    .venv/bin/python scripts/probe_new_item_gate.py --new-items 0.1            # about 20 s

With ``--merge EVAL_DIR`` (an ``m6gen eval --new-items`` folder over all users, with its SASRec) it
then tries the gate on lists: the users the gate ranks first (the top q) get the first m items of a
shelf of new items (the untuned model searched over the cold items with the ``Newest`` prior, w 1,
ranked by the normalized score: the shelf's settings chosen on validation in docs/results.md) ahead
of their usual list, the chosen row of EVAL_DIR; every other user keeps the usual list. q and m are
chosen on validation NDCG@10 over all users; test is scored once, over all users and over the users
whose target is new, against SASRec, Pop and Newest with paired-bootstrap intervals. The shelf's beams
are generated for the top 10% of users of each split only, and cached in ``--out``.

    .venv/bin/python scripts/probe_new_item_gate.py --merge runs/new-items-untuned-sasrec10 \
        --out runs/new-item-gate --threads 2
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = 86400.0
RECENT = 10  # the history items the taste features read
FEATURES = (
    "after the first new item",
    "days since it (log)",
    "last 10 seen within 30 days of arrival",
    "last 10: days from arrival to watch (log)",
    "last 10 released this year or last",
    "last 10: training popularity (log)",
    "history length (log)",
    "days since the previous event (log)",
)


@dataclass
class Timeline:
    """One user's deduplicated events, oldest first: catalog indices and their times."""

    items: np.ndarray
    times: np.ndarray


def timelines(dataset, users) -> dict[str, Timeline]:
    """Each user's first interaction with each item, ordered by time (ties keep file order), as
    ``build_histories`` orders them; so ``items`` equals the user's history there."""
    out = {}
    for user in users:
        ev = dataset.interactions[user]
        order = np.argsort(ev.times, kind="stable")
        items, times = ev.items[order], ev.times[order]
        _, first = np.unique(items, return_index=True)
        keep = np.sort(first)
        out[user] = Timeline(items[keep], times[keep].astype(np.float64))
    return out


@dataclass
class Context:
    """What the features read besides the history: arrival dates, release years, popularity."""

    arrival: np.ndarray  # (n_items,) first interaction time over all data (a shop's arrival date)
    year: np.ndarray  # (n_items,) release year (nan where unknown)
    log_pop: np.ndarray  # (n_items,) log1p of training interaction counts
    cutoff: float  # when the first (pseudo-)new item arrived


def features(hist: np.ndarray, hist_times: np.ndarray, t: float, ctx: Context) -> np.ndarray:
    """The gate's inputs for an event at time ``t`` after ``hist`` (no new items in it)."""
    after = float(t >= ctx.cutoff)
    since = np.log1p(max(0.0, t - ctx.cutoff) / DAY)
    last, last_t = hist[-RECENT:], hist_times[-RECENT:]
    lag = np.maximum(last_t - ctx.arrival[last], 0.0) / DAY
    event_year = datetime.fromtimestamp(t, tz=timezone.utc).year
    years = ctx.year[last]
    recent_release = float(np.mean(years >= event_year - 1)) if np.isfinite(years).any() else 0.0
    gap = np.log1p(max(0.0, t - hist_times[-1]) / DAY) if len(hist_times) else 0.0
    return np.array(
        [
            after,
            since,
            float(np.mean(lag <= 30)) if len(last) else 0.0,
            float(np.mean(np.log1p(lag))) if len(last) else 0.0,
            recent_release,
            float(np.mean(ctx.log_pop[last])) if len(last) else 0.0,
            np.log1p(len(hist)),
            gap,
        ]
    )


def training_examples(lines: dict[str, Timeline], pseudo_new: frozenset[int], ctx: Context, min_history: int = 3):
    """(X, y): every training event after ``min_history`` kept items; y: its item is pseudo-new.
    Histories leave pseudo-new items out, as the real protocol leaves new items out of histories."""
    xs, ys = [], []
    for line in lines.values():
        kept = np.array([i not in pseudo_new for i in line.items.tolist()])
        for p in range(len(line.items)):
            before = kept[:p]
            if before.sum() < min_history:
                continue
            hist, hist_t = line.items[:p][before], line.times[:p][before]
            xs.append(features(hist, hist_t, line.times[p], ctx))
            ys.append(int(line.items[p]) in pseudo_new)
    return np.array(xs), np.array(ys, dtype=bool)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3):
    """A logistic regression (torch L-BFGS) on standardized inputs; returns a scoring function."""
    import torch

    mean, std = x.mean(0), x.std(0) + 1e-9
    xt = torch.tensor((x - mean) / std, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    weights = w.detach().numpy() / std
    bias = float(b.detach())
    return lambda z: z @ weights - mean @ weights + bias, w.detach().numpy()


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half): the chance a positive outranks a negative."""
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def top_share(scores: np.ndarray, labels: np.ndarray, frac: float) -> tuple[int, int]:
    """(positives, users) among the ``frac`` of users scored highest."""
    n = max(1, int(round(frac * len(scores))))
    top = np.argsort(-scores, kind="stable")[:n]
    return int(labels[top].sum()), n


def split_examples(split, lines, name: str, ctx: Context):
    """(X, y) of the real protocol on ``name`` ("valid" or "test"): one row per user."""
    xs, ys = [], []
    for user in split.users:
        line = lines[user]
        target_pos = len(line.items) - (2 if name == "valid" else 1)
        hist = split.valid_history(user) if name == "valid" else split.test_history(user)
        when = dict(zip(line.items.tolist(), line.times.tolist()))
        hist_t = np.array([when[i] for i in hist])
        xs.append(features(np.array(hist, dtype=np.int64), hist_t, line.times[target_pos], ctx))
        target = split.valid[user] if name == "valid" else split.test[user]
        ys.append(target in split.new_items)
    return np.array(xs), np.array(ys, dtype=bool)


def main(argv=None) -> int:
    from m6gen.data import build_histories, leave_one_out, load_dataset
    from m6gen.data.new_items import first_seen, new_item_split

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data folder (default: MovieLens-100K from set-up)")
    ap.add_argument("--new-items", type=float, default=0.1, help="the protocol's fraction of new items")
    ap.add_argument("--top", default="0.02,0.05,0.1", help="shares of users ranked first to count positives in")
    ap.add_argument("--merge", default=None, help="an m6gen eval --new-items folder over all users (see above)")
    ap.add_argument("--out", default="runs/new-item-gate", help="where --merge caches the shelf's beams")
    ap.add_argument("--first", default="1,2,3,5,10", help="--merge: shelf items put first, m, to choose among")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the shelf's decoding")
    args = ap.parse_args(argv)

    ds = load_dataset(args.data)
    histories = build_histories(ds)
    split = new_item_split(ds, leave_one_out(histories), args.new_items)
    lines = timelines(ds, split.users)
    if any(lines[u].items.tolist() != histories[u] for u in split.users):
        raise SystemExit("error: the timelines differ from build_histories' histories")
    n_items = len(ds.catalog)
    arrival = first_seen(ds)
    year = np.array([np.nan if it.year is None else it.year for it in ds.catalog], dtype=np.float64)
    counts = np.bincount(np.concatenate([np.array(v, dtype=np.int64) for v in split.train.values()]), minlength=n_items)
    log_pop = np.log1p(counts.astype(np.float64))

    # the pseudo-protocol: the same fraction of the training items, those whose first training event is latest
    train_lines = {}
    for user, line in lines.items():
        keep = np.isin(line.items, np.array(split.train[user], dtype=np.int64))
        train_lines[user] = Timeline(line.items[keep], line.times[keep])
    train_first = np.full(n_items, np.inf)
    for line in train_lines.values():
        np.minimum.at(train_first, line.items, line.times)
    seen = np.flatnonzero(np.isfinite(train_first))
    n_pseudo = int(np.ceil(args.new_items * len(seen)))
    pseudo_cut = np.sort(train_first[seen])[-n_pseudo]
    pseudo_new = frozenset(int(i) for i in seen[train_first[seen] >= pseudo_cut])
    pseudo_ctx = Context(arrival=train_first, year=year, log_pop=log_pop, cutoff=float(pseudo_cut))
    x, y = training_examples(train_lines, pseudo_new, pseudo_ctx)
    gate, weights = fit_logistic(x, y)

    real_cut = float(min(arrival[i] for i in split.new_items))
    ctx = Context(arrival=arrival, year=year, log_pop=log_pop, cutoff=real_cut)
    print(
        f"{len(split.new_items)} new items; pseudo-protocol on training: {len(pseudo_new)} pseudo-new items, "
        f"{len(y)} events, {y.mean():.2%} positive (in-sample AUC {auc(gate(x), y):.3f})"
    )
    print("\n| gate weight (standardized) | feature |\n|---:|---|")
    for name, wt in zip(FEATURES, weights):
        print(f"| {wt:+.3f} | {name} |")
    tops = [float(f) for f in args.top.split(",")]
    header = " | ".join(f"new-item users in top {f:.0%}" for f in tops)
    print(f"\n| split | scorer | AUC | {header} |\n|---|---|---:|" + "---:|" * len(tops))
    gates = {}
    for name in ("valid", "test"):
        xs, ys = split_examples(split, lines, name, ctx)
        gates[name] = gate(xs)
        scorers = {"the learned gate": gates[name]}
        scorers.update({f"{f} alone": xs[:, j] for j, f in enumerate(FEATURES)})
        print(f"| {name} | base rate | | " + " | ".join(f"{ys.mean():.1%}" for _ in tops) + " |")
        for label, scores in scorers.items():
            cells = []
            for f in tops:
                hit, n = top_share(scores, ys, f)
                cells.append(f"{hit}/{n} ({hit / n:.0%})")
            print(f"| {name} | {label} | {auc(scores, ys):.3f} | " + " | ".join(cells) + " |")
    if args.merge:
        merge(args, ds, split, gates, [float(m) for m in args.top.split(",")])
    return 0


def usual_lists(eval_dir: Path, name: str, users: list[str], k: int = 10) -> dict[str, list[int]]:
    """Each user's top ``k`` of the m6gen row ``m6gen eval --choose-on-valid`` chose, from its beam cache."""
    import json

    table = json.loads((eval_dir / "eval_test.json").read_text(encoding="utf-8"))
    chosen = next(r for r in table if r.startswith("m6gen, chosen on valid: "))
    column = {"logprob": 1, "normalized": 2, "catalog": 3}
    by = next((c for c in (*column, "prior") if f"rank by {c}" in chosen), "logprob")
    weight = float(chosen.split("(w ")[1].split(",")[0].split(")")[0])
    (path,) = [p for p in eval_dir.glob(f"beams_{name}-*.jsonl") if "-cold" not in p.name]
    lists = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        beams = np.array(row["beams"], dtype=np.float64).reshape(-1, 5)
        score = beams[:, 4] if by == "prior" else beams[:, column[by]] + weight * beams[:, 4]
        lists[row["user_id"]] = beams[np.argsort(-score, kind="stable"), 0].astype(np.int64)[:k].tolist()
    missing = [u for u in users if u not in lists]
    if missing:
        raise SystemExit(f"error: {path}: no beams for {len(missing)} users (first {missing[0]})")
    print(f"usual list ({name}): {chosen.removeprefix('m6gen, chosen on valid: ')}, from {path.name}")
    return lists


def ndcg(lists: list[list[int]], targets: list[int], k: int = 10) -> np.ndarray:
    """(users,) NDCG@k of one relevant item per user."""
    out = np.zeros(len(lists))
    for u, (items, target) in enumerate(zip(lists, targets)):
        if target in items[:k]:
            out[u] = 1.0 / np.log2(items[:k].index(target) + 2)
    return out


def merge(args, ds, split, gates: dict[str, np.ndarray], tops: list[float]) -> None:
    import torch

    from m6gen.baselines.content import rank
    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.commands.beam_cache import generate_cached
    from m6gen.commands.eval_new_items import ContentPeers
    from m6gen.data import cold_items, item_popularity
    from m6gen.ranking.metrics import paired_bootstrap
    from m6gen.recommender import RecommendConfig, Recommender

    torch.set_num_threads(args.threads)
    eval_dir, out = Path(args.merge), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    users, n_items = split.users, len(ds.catalog)
    cold = cold_items(split, n_items)
    rec = Recommender.from_pretrained(None, ds.catalog, RecommendConfig(beams=20, rank_by="normalized"))
    content = ContentPeers(ds, rec, ["Newest"])
    widest = max(tops)
    histories, orders, shelves = {}, {}, {}
    for name in ("valid", "test"):  # the shelf first: it needs only the gate, not the eval's folder
        histories[name] = [split.valid_history(u) if name == "valid" else split.test_history(u) for u in users]
        orders[name] = np.argsort(-gates[name], kind="stable")
        gated = [users[i] for i in orders[name][: int(round(widest * len(users)))]]
        cached = generate_cached(
            rec,
            gated,
            [histories[name][users.index(u)] for u in gated],
            out / f"shelf_{name}-newest1-normalized.jsonl",
            True,
            ds.profiles,
            prior=content.prior("Newest"),
            prior_weight=1.0,
            allowed=cold,
        )
        shelves[name] = {u: [int(b[0]) for b in cached[u]] for u in gated}
    sasrec = load_sasrec(eval_dir / "baselines" / "sasrec", n_items)
    popularity = item_popularity(split, n_items)
    result = {}
    for name in ("valid", "test"):
        hist, order, shelf = histories[name], orders[name], shelves[name]
        targets = [split.valid[u] if name == "valid" else split.test[u] for u in users]
        seen = [set(h) for h in hist]
        usual = usual_lists(eval_dir, name, users)
        peers = {
            "SASRec": [x.tolist() for x in sasrec.recommend(hist, 10, exclude=seen)],
            "Pop": [x.tolist() for x in rank(np.tile(popularity.astype(np.float64), (len(users), 1)), seen, 10)],
            "Newest": [x.tolist() for x in content.rankings(hist, seen, 10)["Newest"]],
        }
        rows = {p: ndcg(lists, targets) for p, lists in peers.items()}
        rows["m6gen usual list"] = ndcg([usual[u] for u in users], targets)
        for q in tops:
            first = set(order[: int(round(q * len(users)))].tolist())
            for m in (int(x) for x in args.first.split(",")):
                lists = []
                for i, u in enumerate(users):
                    new = shelf[u][:m] if i in first else []
                    lists.append([*new, *(x for x in usual[u] if x not in new)][:10])
                rows[f"gate top {q:.0%}, {m} shelf items first"] = ndcg(lists, targets)
        result[name] = (rows, np.array([t in split.new_items for t in targets], dtype=bool))

    merged = [r for r in result["valid"][0] if r.startswith("gate ")]
    chosen = max(merged, key=lambda r: (result["valid"][0][r].mean(), -merged.index(r)))
    print(f"\nNDCG@10; chosen on validation (all users): {chosen}\n")
    print("| row | valid, all | valid, new-item users | test, all | test, new-item users |\n|---|---:|---:|---:|---:|")
    for row in result["valid"][0]:
        cells = [
            f"{result[n][0][row][mask].mean():.4f}" for n in ("valid", "test") for mask in (slice(None), result[n][1])
        ]
        print(f"| {'**' + row + '**' if row == chosen else row} | " + " | ".join(cells) + " |")
    rows, new = result["test"]
    best_peer = max(("SASRec", "Pop", "Newest"), key=lambda p: rows[p][new].mean())
    for label, a, b, mask in (
        ("test, all users: chosen vs the usual list", chosen, "m6gen usual list", slice(None)),
        ("test, all users: chosen vs SASRec", chosen, "SASRec", slice(None)),
        ("test, all users: the usual list vs SASRec", "m6gen usual list", "SASRec", slice(None)),
        (f"test, new-item users: chosen vs the best peer ({best_peer})", chosen, best_peer, new),
        (f"test, new-item users: the usual list vs {best_peer}", "m6gen usual list", best_peer, new),
    ):
        t = paired_bootstrap(rows[a][mask], rows[b][mask])
        print(
            f"{label}: ratio {t['ratio']:.2f} [{t['ratio_low']:.2f}, {t['ratio_high']:.2f}], "
            f"difference {t['diff']:+.4f} [{t['diff_low']:+.4f}, {t['diff_high']:+.4f}]"
        )


if __name__ == "__main__":
    raise SystemExit(main())
