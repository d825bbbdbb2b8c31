"""Probe how much several SASRecs trained apart (seeds) rank better together than one: the peer that a
readout distilled from them (``m6gen fit-readout --readout-teachers``) must be compared with.

    for s in 1 2 3 4; do m6gen baselines --methods SASRec --sasrec-seed $s --out runs/sasrec-seeds/seed$s; done
    .venv/bin/python scripts/probe_sasrec_ensemble.py runs/hybrid/baselines/sasrec runs/sasrec-seeds/seed*/sasrec

For each split it prints every SASRec's NDCG@10 (whole catalog, history excluded, as ``m6gen baselines``)
and the ensembles of the first 2, 3, ... of them, two ways: the mean of their log-probabilities (what
fit-readout distils from) and the mean of their probabilities, with a paired-bootstrap interval against
the first SASRec. Each SASRec early-stopped on validation, so validation figures favour every row alike.

``--ease-l2 100,300 --ease-temperature 3,10`` adds EASE (fitted here on the training interactions) alone
and, as a second kind of teacher, averaged with all the SASRecs (``teacher_log_probs``: the SASRecs'
mean and EASE's log-softmax(temperature x scores), half each), for every pair of settings on validation;
the pair best on validation is then scored on test, against the first SASRec and all SASRecs together.

``--readout-run RUN`` adds the run's collaborative readout alone (``m6gen fit-readout``; whole catalog, no
titles, read from each user's prompt state as ``m6gen eval``'s readout row; one forward per user and split,
in the dtype ``--dtype auto`` gives), against the first SASRec and all of them together.

``--readout-variant DIR`` (repeatable) adds another readout fitted on the same run (a folder holding a copy of
its ``readout.safetensors``, ``readout.json`` and ``adapter_model.safetensors``, saved after an earlier
``fit-readout``), scored from the same prompt states. ``--states SPLIT=FILE`` reads those states from an
``m6gen eval`` folder's cache of the run (``states_SPLIT-...jsonl``) instead of one forward per user.
``--splits valid`` reads no test item: choose a variant there, and score only the chosen one on test.

``--beams SPLIT=FILE`` adds one m6gen row from an ``m6gen eval`` folder's cached beams (a search with a
prior: ``--rank-by`` score + ``--weight`` x prior, as the eval ranks it), compared with the first SASRec
and with all of them together: the fair peer of a readout distilled from all of them.

``--teacher-ease DIR --lm-weights 0,0.1,0.3,1`` asks whether the language model's titles add anything to
the collaborative teacher: each ``--beams`` list is ranked by the teacher's log-probability (the SASRecs
and the saved EASE, kind by kind, as ``fit-readout`` distils from) + a x the beam's ``--rank-by`` score
(relative to the user's best beam), for each a; the a best on validation is then scored on test, against
the first SASRec and the teacher alone over the whole catalog. a 0 is the teacher limited to the beams.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sasrec", nargs="+", help="saved SASRec folders (m6gen baselines --out DIR writes DIR/sasrec)")
    p.add_argument("--data", default=None, help="data folder (default: MovieLens-100K from scripts/setup.sh)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beams", action="append", default=[], metavar="SPLIT=FILE", help="an m6gen eval beams file")
    p.add_argument("--weight", type=float, default=10.0, help="the prior's weight the beams were searched with")
    p.add_argument("--rank-by", default="catalog", choices=["logprob", "normalized", "catalog"])
    p.add_argument("--readout-run", default=None, help="a run folder with a fitted readout: its row alone")
    p.add_argument(
        "--readout-variant",
        action="append",
        default=[],
        metavar="DIR",
        help="another readout of --readout-run (a folder with its readout files and the run's adapter): its row alone",
    )
    p.add_argument(
        "--states", action="append", default=[], metavar="SPLIT=FILE", help="an m6gen eval's cached prompt states"
    )
    p.add_argument("--splits", default="valid,test", help="the splits scored: valid,test or valid (no test item read)")
    p.add_argument("--ease-l2", default="", help="comma list of EASE L2 penalties to try ('' for no EASE rows)")
    p.add_argument("--ease-temperature", default="3", help="comma list of EASE teacher temperatures to try")
    p.add_argument("--teacher-ease", default=None, help="a saved EASE folder joining the SASRecs as the teacher")
    p.add_argument("--lm-weights", default="", help="comma list of the beams' LM score weights on the teacher")
    return p


def print_against_sasrecs(stage: str, label: str, row, sasrecs, histories, targets) -> None:
    """``row``'s per-user NDCG@10 against the first SASRec and all of them together (paired bootstrap)."""
    from m6gen.commands.fit_readout import teacher_log_probs
    from m6gen.ranking.metrics import paired_bootstrap

    first = ndcg_per_user(sasrecs[0].score(histories), histories, targets)
    together = ndcg_per_user(teacher_log_probs(sasrecs, histories), histories, targets)
    for peer, against in (("the first SASRec", first), (f"all {len(sasrecs)} SASRecs", together)):
        b = paired_bootstrap(row, against)
        print(
            f"{stage}: {label} {row.mean():.4f}: {b['ratio']:.3f} x {peer} ({against.mean():.4f}) "
            f"[{b['ratio_low']:.3f}, {b['ratio_high']:.3f}]"
        )


def readout_rows(run, ds, sasrecs, users, stages, variants=(), states_files=None):
    """The run's readout alone on each split, and each variant readout's from the same prompt states
    (read from ``states_files[split]``, an eval's cache, where given), against the first SASRec and all
    of them together."""
    from m6gen.commands.beam_cache import prompt_states_cached
    from m6gen.hybrid.readout import load_readout
    from m6gen.prompts import user_vars
    from m6gen.recommender import RecommendConfig, Recommender

    rec = Recommender.from_pretrained(run, ds.catalog, RecommendConfig(dtype="auto"), device="cpu")
    dtype = str(next(rec.model.parameters()).dtype).removeprefix("torch.")
    profiles = [user_vars(u, ds.profiles) for u in users]
    readouts = {f"{run}'s readout": rec.readout}
    readouts |= {f"variant {v}": load_readout(v, rec.collaborative.table) for v in variants}
    for stage, (histories, targets) in stages.items():
        if stage in (states_files or {}):  # the users missing there are computed and appended
            states = prompt_states_cached(rec, users, histories, Path(states_files[stage]), True, ds.profiles)
        else:
            states = rec.prompt_states(histories, profiles)
        for name, readout in readouts.items():
            row = ndcg_per_user(readout.log_probs(states), histories, targets)
            print_against_sasrecs(stage, f"{name} alone ({dtype})", row, sasrecs, histories, targets)


def ease_rows(split, sasrecs, stages, l2s, temperatures):
    """EASE alone and the SASRecs + EASE teacher for each (l2, temperature), chosen on validation and
    then scored on test, each against the first SASRec and all the SASRecs together."""
    from m6gen.baselines.ease import EASE, EASEConfig
    from m6gen.commands.fit_readout import teacher_log_probs

    n_items = sasrecs[0].n_items
    fitted = {l2: EASE.fit([split.train[u] for u in split.users], n_items, EASEConfig(l2=l2)) for l2 in l2s}

    def teacher_ndcg(stage, l2, temperature):
        histories, targets = stages[stage]
        ease = EASE(fitted[l2].weights, EASEConfig(l2=l2, temperature=temperature))
        return ndcg_per_user(teacher_log_probs([*sasrecs, ease], histories), histories, targets)

    histories, targets = stages["valid"]
    for l2 in l2s:
        alone = ndcg_per_user(fitted[l2].score(histories), histories, targets)
        print(f"valid: EASE alone, l2 {l2:g}: {alone.mean():.4f}")
    grid = {(l2, t): teacher_ndcg("valid", l2, t).mean() for l2 in l2s for t in temperatures}
    for (l2, t), value in grid.items():
        print(f"valid: all SASRecs + EASE (l2 {l2:g}, temperature {t:g}): {value:.4f}")
    l2, t = max(grid, key=grid.get)
    for stage in stages:
        histories, targets = stages[stage]
        label = f"chosen on validation, all SASRecs + EASE (l2 {l2:g}, temperature {t:g})"
        print_against_sasrecs(stage, label, teacher_ndcg(stage, l2, t), sasrecs, histories, targets)


def beams_ndcg(path, users, targets, weight: float, rank_by: str):
    """Per-user NDCG@10 of an m6gen eval row from its cached beams (a user without beams scores 0)."""
    import json

    import numpy as np

    from m6gen.commands.eval_rows import PRIOR_COLUMN, SCORE_COLUMNS, ordered
    from m6gen.ranking.metrics import per_user_scores

    col = dict((name, c) for c, name in SCORE_COLUMNS)[rank_by]
    beams = {row["user_id"]: np.asarray(row["beams"], dtype=np.float64) for row in map(json.loads, open(path))}
    missing = [u for u in users if u not in beams]
    if missing:
        raise SystemExit(f"error: {path}: no beams for {len(missing)} users (first: {missing[0]})")
    lists = ordered([beams[u] for u in users], lambda b: b[:, col] + weight * b[:, PRIOR_COLUMN])
    return per_user_scores(lists, targets, 10)["NDCG"]


def beams_on_teacher(beams_files, users, stages, teachers, weights, rank_by: str) -> None:
    """Each beams file's items ranked by the teachers' log-probability + a x the LM's ``rank_by`` score
    (relative to the user's best beam), for each a in ``weights``; the a best on validation is scored on
    every split, against the first teacher (a SASRec) and all the teachers over the whole catalog."""
    import json

    import numpy as np

    from m6gen.commands.eval_rows import SCORE_COLUMNS
    from m6gen.commands.fit_readout import teacher_log_probs
    from m6gen.ranking.metrics import paired_bootstrap, per_user_scores

    col = dict((name, c) for c, name in SCORE_COLUMNS)[rank_by]
    rows: dict[tuple[str, float], np.ndarray] = {}
    peers = {}
    for stage, path in beams_files:
        histories, targets = stages[stage]
        teacher = teacher_log_probs(teachers, histories)
        peers[stage] = (
            ndcg_per_user(teachers[0].score(histories), histories, targets),
            ndcg_per_user(teacher, histories, targets),
        )
        beams = {row["user_id"]: np.asarray(row["beams"], dtype=np.float64) for row in map(json.loads, open(path))}
        for a in weights:
            lists = []
            for row, user in enumerate(users):
                items, first = np.unique(beams[user][:, 0].astype(np.int64), return_index=True)
                lm = beams[user][first, col]
                lists.append(items[np.argsort(-(teacher[row, items] + a * (lm - lm.max())), kind="stable")][:10])
            rows[(stage, a)] = per_user_scores(lists, targets, 10)["NDCG"]
            print(
                f"{stage}: teacher + {a:g} x LM {rank_by} over the beams of {Path(path).name}: "
                f"{rows[(stage, a)].mean():.4f}"
            )
    valid = [a for stage, a in rows if stage == "valid"]
    if not valid:
        return
    chosen = max(valid, key=lambda a: rows[("valid", a)].mean())
    for stage in peers:
        row, (first, teacher) = rows[(stage, chosen)], peers[stage]
        for peer, against in (("the first SASRec", first), (f"the teacher ({len(teachers)} models)", teacher)):
            b = paired_bootstrap(row, against)
            print(
                f"{stage}: chosen on validation, teacher + {chosen:g} x LM {rank_by} {row.mean():.4f}: "
                f"{b['ratio']:.3f} x {peer} ({against.mean():.4f}) [{b['ratio_low']:.3f}, {b['ratio_high']:.3f}]"
            )


def split_files(flag: str, specs: list[str]) -> list[tuple[str, str]]:
    """``SPLIT=FILE`` options as (split, file) pairs; a bad split or a missing file is a one-line error."""
    pairs = [spec.partition("=")[::2] for spec in specs]
    for spec, (stage, path) in zip(specs, pairs):
        if stage not in ("valid", "test") or not Path(path).is_file():
            raise SystemExit(f"error: {flag} {spec}: expected valid=FILE or test=FILE, an existing file")
    return pairs


def ndcg_per_user(scores, histories, targets):
    """Per-user NDCG@10 of ``scores`` over the whole catalog, each user's history excluded."""
    import numpy as np

    from m6gen.ranking.metrics import per_user_scores

    scores = scores.copy()
    for row, history in enumerate(histories):
        scores[row, np.asarray(history, dtype=np.int64)] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return per_user_scores(list(top), targets, 10)["NDCG"]


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch
    from bench_decode import cpu_model

    from m6gen.baselines.run import split_fingerprint
    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.commands.fit_readout import teacher_log_probs
    from m6gen.data import build_histories, leave_one_out, load_dataset
    from m6gen.ranking.metrics import paired_bootstrap

    args = make_parser().parse_args(argv)
    beams_files = split_files("--beams", args.beams)
    states_files = dict(split_files("--states", args.states))
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    split = leave_one_out(build_histories(ds))
    sasrecs = [load_sasrec(folder, len(ds.catalog)) for folder in args.sasrec]
    print(f"CPU {cpu_model()}, float32; {len(split.users)} users; train split {split_fingerprint(split)}")
    users = split.users
    stages = {
        "valid": ([split.valid_history(u) for u in users], np.array([split.valid[u] for u in users])),
        "test": ([split.test_history(u) for u in users], np.array([split.test[u] for u in users])),
    }
    wanted = [name.strip() for name in args.splits.split(",") if name.strip()]
    if not wanted or set(wanted) - set(stages):
        raise SystemExit(f"error: --splits {args.splits}: expected valid,test or valid")
    stages = {name: stages[name] for name in wanted}
    for stage, (histories, targets) in stages.items():
        log_probs = [torch.log_softmax(torch.from_numpy(s.score(histories)), -1).numpy() for s in sasrecs]
        first = ndcg_per_user(log_probs[0], histories, targets)
        singles = [ndcg_per_user(lp, histories, targets).mean() for lp in log_probs]
        print(f"{stage}: each SASRec {', '.join(f'{v:.4f}' for v in singles)}")
        together = first  # all of them, by mean log-probabilities: the last ensemble below
        for n in range(2, len(sasrecs) + 1):
            together = geometric = ndcg_per_user(teacher_log_probs(sasrecs[:n], histories), histories, targets)
            mixture = ndcg_per_user(np.log(np.mean(np.exp(log_probs[:n]), axis=0)), histories, targets)
            b = paired_bootstrap(geometric, first)
            print(
                f"{stage}: the first {n}: mean log-probabilities {geometric.mean():.4f} "
                f"({b['ratio']:.3f} x the first [{b['ratio_low']:.3f}, {b['ratio_high']:.3f}]), "
                f"mean probabilities {mixture.mean():.4f}"
            )
        for path in [path for split_name, path in beams_files if split_name == stage]:
            row = beams_ndcg(path, users, targets, args.weight, args.rank_by)
            for peer, against in (("the first SASRec", first), (f"all {len(sasrecs)} SASRecs", together)):
                b = paired_bootstrap(row, against)
                print(
                    f"{stage}: m6gen (w {args.weight:g}, rank by {args.rank_by}) {row.mean():.4f}: {b['ratio']:.3f} x "
                    f"{peer} ({against.mean():.4f}) [{b['ratio_low']:.3f}, {b['ratio_high']:.3f}]"
                )
    if args.lm_weights:
        from m6gen.baselines.ease import load_ease

        if not args.teacher_ease:
            raise SystemExit("error: --lm-weights: give --teacher-ease DIR (a saved EASE folder)")
        teachers = [*sasrecs, load_ease(args.teacher_ease, len(ds.catalog))]
        weights = [float(x) for x in args.lm_weights.split(",") if x.strip()]
        beams_on_teacher([b for b in beams_files if b[0] in stages], users, stages, teachers, weights, args.rank_by)
    if args.readout_run:
        readout_rows(args.readout_run, ds, sasrecs, users, stages, args.readout_variant, states_files)
    if args.ease_l2:
        floats = lambda text: [float(x) for x in text.split(",") if x.strip()]  # noqa: E731
        ease_rows(split, sasrecs, stages, floats(args.ease_l2), floats(args.ease_temperature))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
