"""Probe where a run's user-state tokens lose SASRec's state: readouts fitted on what the run reads at
each stage, from SASRec's own state to the language model's last layer. Validation split only: no test
item is read.

    .venv/bin/python scripts/probe_state_projector.py --model runs/hybrid-state-800

The run needs state tokens (template ``hybrid_state``) and a fitted readout's cached training states
(``m6gen fit-readout --model RUN`` writes ``readout_states-*.npy``). On fit-readout's training pairs,
one readout (``--hidden``, ``--distill`` from the run's SASRec, as fit-readout's) is fitted on each of:

- SASRec's state after the pair's history (what a state token starts from);
- that state through a fresh projector (random, as a run's starts; ``--cf-state-frozen`` keeps it);
- through a fresh projector aligned as ``--cf-align-steps`` aligns it (to the next title's mean token
  embedding);
- through the run's own state projector (aligned, then trained with LoRA);
- the language model's last layer at the state token (fit-readout's input).

Each is scored by its held-out loss on the true next items (fit-readout's held-out users) and by its
validation NDCG@10 over the whole catalog, beside the run's SASRec. One fit moves with its seed
(``--members`` averages several, as fit-readout does).
"""

from __future__ import annotations

import argparse


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a run folder with state tokens and fit-readout's cached states")
    p.add_argument("--distill", type=float, default=0.9, help="fit-readout's --readout-distill")
    p.add_argument("--hidden", type=int, default=1024, help="fit-readout's --readout-hidden")
    p.add_argument("--members", type=int, default=1, help="fit-readout's --readout-members")
    p.add_argument("--epochs", type=int, default=60, help="fit-readout's --readout-epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="fit-readout's --readout-lr")
    p.add_argument("--align-steps", type=int, default=1000, help="steps for the aligned fresh projector")
    p.add_argument("--dtype", default="auto", help="the model's dtype for the validation prompts' forwards")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    import copy
    import time
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np
    import torch
    from bench_decode import cpu_model

    from m6gen.commands.common import load_data
    from m6gen.commands.fit_readout import ReadoutArgs, readout_pairs, states_key
    from m6gen.config import DataArgs
    from m6gen.hybrid.align import align_state_projector, title_embeddings
    from m6gen.hybrid.readout import fit_readouts, training_windows
    from m6gen.hybrid.soft_tokens import _projector
    from m6gen.prompts import user_vars
    from m6gen.ranking.metrics import per_user_scores
    from m6gen.recommender import RecommendConfig, Recommender

    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.model)
    ds, split = load_data(SimpleNamespace(model=args.model, groups={DataArgs: DataArgs()}))
    rec = Recommender.from_pretrained(args.model, ds.catalog, RecommendConfig(dtype=args.dtype))
    embedding = rec.collaborative
    if embedding is None or not embedding.has_states:
        raise SystemExit(f"{run}: the run has no user-state tokens (template hybrid_state)")
    table, sasrec = embedding.table, embedding.sequence

    # fit-readout's own training pairs, so that its cached last-layer states line up with them
    defaults = ReadoutArgs()
    windows = training_windows(split.train, defaults.readout_per_user, table.known, rec.config.max_history)
    pairs = readout_pairs(rec, ds.profiles, windows)
    cached = run / f"readout_states-{states_key(run, rec, pairs, defaults.readout_batch_size)}.npy"
    if not cached.is_file():
        raise SystemExit(f"{cached}: not there; run m6gen fit-readout --model {run} first (with its defaults)")
    last_layer = np.load(cached)

    users = split.users
    valid_histories = [split.train[u] for u in users]
    targets = np.array([split.valid[u] for u in users])
    t0 = time.perf_counter()
    valid_last_layer = rec.prompt_states(valid_histories, [user_vars(u, ds.profiles) for u in users])
    print(
        f"{cpu_model()}, {next(rec.model.parameters()).dtype}, {torch.get_num_threads()} threads; "
        f"{len(pairs.targets)} training pairs, {len(users)} validation users (prompts read in "
        f"{time.perf_counter() - t0:.0f} s)"
    )

    train_state = torch.from_numpy(sasrec.states(pairs.histories, 512))
    valid_state = torch.from_numpy(sasrec.states(valid_histories, 512))
    width = embedding.text.weight.shape[1]
    torch.manual_seed(0)
    fresh = _projector(sasrec.config.hidden, embedding.hidden, width, torch.zeros(0))
    aligned = copy.deepcopy(fresh)
    holder = SimpleNamespace(
        table=table, sequence=sasrec, cf_state_projector=aligned, sequence_states=embedding.sequence_states
    )
    goal = title_embeddings(embedding, rec.tokenizer, rec.template.render_targets(ds.catalog))
    align_state_projector(holder, goal, split.train, args.align_steps)
    trained = embedding.cf_state_projector
    if hasattr(trained, "modules_to_save"):  # peft's trained copy
        trained = trained.modules_to_save[trained.active_adapters[0]]
    trained = copy.deepcopy(trained).float()

    def through(projector):
        with torch.no_grad():
            return projector(train_state).numpy(), projector(valid_state).numpy()

    inputs = {
        "SASRec's state": (train_state.numpy(), valid_state.numpy()),
        "through a fresh projector (as --cf-state-frozen keeps it)": through(fresh),
        f"through a fresh projector aligned to the next titles ({args.align_steps} steps)": through(aligned),
        "through the run's state projector": through(trained),
        "the language model's last layer (fit-readout's input)": (last_layer, valid_last_layer),
    }

    def ndcg(scores: np.ndarray) -> float:
        scores = np.array(scores, dtype=np.float64)
        for r, history in enumerate(valid_histories):
            scores[r, history] = -np.inf
        return float(per_user_scores(list(np.argsort(-scores, axis=1)[:, :10]), targets, 10)["NDCG"].mean())

    teacher = sasrec.score(pairs.histories) if args.distill else None
    print(f"\nSASRec on validation: NDCG@10 {ndcg(sasrec.score(valid_histories)):.4f}\n")
    print("| readout on | norm | held-out loss | validation NDCG@10 |\n|---|---:|---:|---:|")
    for name, (train_x, valid_x) in inputs.items():
        readout, fits = fit_readouts(
            train_x,
            pairs.targets,
            pairs.users,
            table.vectors,
            members=args.members,
            epochs=args.epochs,
            lr=args.lr,
            teacher=teacher,
            distill=args.distill,
            hidden=args.hidden,
        )
        loss = np.mean([fit.held_out_loss for fit in fits])
        norm = float(np.linalg.norm(valid_x, axis=1).mean())
        print(f"| {name} | {norm:.1f} | {loss:.3f} | {ndcg(readout.log_probs(valid_x)):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
