"""Probe what limits a run's collaborative readout (``m6gen fit-readout``): the layer it reads, or the
number of pairs it is fitted on. Validation split only: no test item is read.

    .venv/bin/python scripts/probe_readout.py --model runs/hybrid-state-400 --users 400

For ``--users`` random users whose validation item has a collaborative vector, one forward per user
reads its last ``--per-user`` training pairs (as ``fit-readout`` does) and, at the end of its training
items, its validation prompt: about 1 s per user on 2 CPU cores. A readout is then fitted on the
training pairs at each of ``--layers`` (0: the input embeddings; the run's readout reads the last),
on the last layer with half the users' pairs, and with each of ``--distill``'s shares of the loss
distilled from the run's SASRec (by each of ``--hidden``'s readout heads, ``--members`` seeds and
their ensemble); each ranks the validation items over the whole
catalog, train items excluded, beside the run's SASRec on the same users.
"""

from __future__ import annotations

import argparse


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a hybrid run folder (m6gen train --cf-source ...)")
    p.add_argument("--users", type=int, default=400, help="users probed (random, seeded)")
    p.add_argument(
        "--per-user", type=int, default=10, help="training pairs per user (fit-readout's --readout-per-user, 30 there)"
    )
    p.add_argument("--layers", default="0,6,12,18,24,27,30", help="hidden-state layers to fit a readout on")
    p.add_argument(
        "--distill",
        default="",
        help="shares of the loss distilled from the run's SASRec (fit-readout's --readout-distill), each fitted "
        "on the last of --layers, e.g. 0.5,1",
    )
    p.add_argument(
        "--hidden",
        default="0",
        help="readout MLP widths (fit-readout's --readout-hidden; 0: linear) for the --distill rows, e.g. 0,1024",
    )
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="readouts fitted per --distill/--hidden row, with seeds 0, 1, ...: each one's row, then their "
        "ensemble's (fit-readout's --readout-members)",
    )
    p.add_argument("--epochs", type=int, default=30, help="readout epochs (fit-readout's --readout-epochs, 60 there)")
    p.add_argument(
        "--lr", type=float, default=3e-3, help="readout learning rate (fit-readout's --readout-lr, 1e-3 there)"
    )
    p.add_argument("--dtype", default="float32", help="the model's dtype for the forwards (auto|float32|bfloat16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    import time
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np
    import torch
    from bench_decode import cpu_model
    from tqdm.auto import tqdm

    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.commands.common import load_data
    from m6gen.commands.fit_readout import readout_pairs
    from m6gen.config import DataArgs
    from m6gen.hybrid.readout import fit_readouts, layer_states_at, training_windows
    from m6gen.ranking.metrics import per_user_scores
    from m6gen.recommender import RecommendConfig, Recommender

    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    layers = tuple(int(x) for x in args.layers.split(","))
    ds, split = load_data(SimpleNamespace(model=args.model, groups={DataArgs: DataArgs()}))
    rec = Recommender.from_pretrained(args.model, ds.catalog, RecommendConfig(dtype=args.dtype))
    table = rec.collaborative.table
    users = [u for u in np.random.default_rng(args.seed).permutation(split.users) if table.known[split.valid[u]]]
    users = users[: args.users]
    # each user's list runs on to its validation item: the window's last pair is the validation prompt
    extended = {u: [*split.train[u], split.valid[u]] for u in users}
    windows = training_windows(extended, args.per_user + 1, table.known, rec.config.max_history)
    pairs = readout_pairs(rec, ds.profiles, windows)
    owner = np.asarray(pairs.users)
    is_valid = np.r_[owner[1:] != owner[:-1], True]  # each user's pairs are contiguous, validation last
    assert [int(t) for t in pairs.targets[is_valid]] == [split.valid[u] for u in users]
    t0 = time.perf_counter()
    with tqdm(total=len(pairs.prompt_ids), desc="prompt states", unit="user") as bar:
        states = layer_states_at(
            rec.model, pairs.prompt_ids, pairs.positions, rec.tokenizer.pad_token_id, 8, bar.update, layers
        )
    print(
        f"{cpu_model()}, {next(rec.model.parameters()).dtype}, {torch.get_num_threads()} threads; {len(users)} users, "
        f"{int((~is_valid).sum())} training pairs, read in {time.perf_counter() - t0:.0f} s"
    )

    targets = np.array([split.valid[u] for u in users])

    def ndcg(scores: np.ndarray) -> float:
        scores = np.array(scores, dtype=np.float64)
        for r, u in enumerate(users):
            scores[r, split.train[u]] = -np.inf
        return float(per_user_scores(list(np.argsort(-scores, axis=1)[:, :10]), targets, 10)["NDCG"].mean())

    def rows(name: str, layer: int, keep: np.ndarray, distill: float = 0.0, hidden: int = 0, members: int = 1):
        fit_rows = ~is_valid & keep
        readout, fits = fit_readouts(
            states[layer][fit_rows],
            pairs.targets[fit_rows],
            owner[fit_rows],
            table.vectors,
            members=members,
            epochs=args.epochs,
            lr=args.lr,
            teacher=teacher[fit_rows] if distill else None,
            distill=distill,
            hidden=hidden,
        )
        singles = readout.members if members > 1 else [readout]
        for seed, (single, fit) in enumerate(zip(singles, fits)):
            score = ndcg(single.log_probs(states[layer][is_valid]))
            seeded = f", seed {seed}" if members > 1 else ""
            print(
                f"| {name}{seeded} | {int(fit_rows.sum())} | {fit.first_loss:.2f} -> {fit.held_out_loss:.2f} | "
                f"{score:.4f} |",
                flush=True,
            )
        if members > 1:
            score = ndcg(readout.log_probs(states[layer][is_valid]))
            print(f"| {name}, the {members} together | {int(fit_rows.sum())} | | {score:.4f} |", flush=True)

    if (Path(table.source) / "sasrec.json").is_file():  # the run's tokens came from a saved SASRec
        sasrec = load_sasrec(table.source, len(ds.catalog))
        print(
            f"\nSASRec ({table.source}) on the same users: validation NDCG@10 "
            f"{ndcg(sasrec.score([split.train[u] for u in users])):.4f}\n"
        )
    print("| readout on | pairs | held-out loss | validation NDCG@10 |\n|---|---:|---|---:|")
    everyone = np.ones(len(owner), dtype=bool)
    teacher = None
    for layer in layers:
        rows(f"layer {layer}", layer, everyone)
    half = np.isin(owner, users[: len(users) // 2])
    rows(f"layer {layers[-1]}, half the users' pairs", layers[-1], half)
    if args.distill:  # the run's SASRec, as fit-readout's, on each pair's whole training history
        from m6gen.commands.fit_readout import distillation_teacher

        teacher = distillation_teacher(rec, split, len(ds.catalog)).score(pairs.histories)
        for share in (float(x) for x in args.distill.split(",")):
            for hidden in (int(x) for x in args.hidden.split(",")):
                head = f", MLP width {hidden}" if hidden else ""
                name = f"layer {layers[-1]}, {share:g} distilled from SASRec{head}"
                rows(name, layers[-1], everyone, share, hidden, args.members)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
