"""Probe how closely a run's readouts copy the teachers they were distilled from, on validation and on
test, and whether the readout's input is what limits the copy.

    E=runs/hybrid-state-r32-400/eval-943-readout-t07
    .venv/bin/python scripts/probe_readout_fidelity.py --model runs/hybrid-state-r32-400 \\
        --teachers runs/sasrec-seeds/seed{1,2,3,4}/sasrec runs/ease/ease \\
        --states valid=$E/states_valid-*.jsonl --states test=$E/states_test-*.jsonl --inputs

First, the run's saved readouts (nothing is chosen here, so both splits are read): on each split the
NDCG@10 of the teacher (the run's SASRec and ``--teachers``, averaged as ``m6gen fit-readout`` averages
them), of the readouts alone and of the run's SASRec; the top-10 overlap of each with the teacher's
(whole catalog, history excluded); and the mean KL divergence from the teacher's distribution at the
readouts' temperature to the readouts'. A readout that copied its teacher worse on test would show it
here.

``--inputs`` (validation only) then fits one readout with the run's recorded settings (hidden width,
share distilled, teacher temperature) on each input: the language model's last layer (fit-readout's
cached states), the run's SASRec's state after the same history (what its state token starts from), and
the states of every SASRec among the teachers side by side. The last two are not m6gen: they show how
far the copy could go if the language model carried the collaborative states to its last layer intact.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a run folder with fitted readouts (m6gen fit-readout)")
    p.add_argument(
        "--teachers", nargs="*", default=[], help="the --readout-teachers the readouts were fitted with", metavar="DIR"
    )
    p.add_argument(
        "--states", action="append", default=[], metavar="SPLIT=FILE", help="an m6gen eval's cached prompt states"
    )
    p.add_argument("--inputs", action="store_true", help="also fit one readout on each input (validation only)")
    p.add_argument("--per-user", type=int, default=30, help="the --readout-per-user the run's readouts used")
    p.add_argument(
        "--batch-size", type=int, default=16, help="the --readout-batch-size the run's states were read with"
    )
    p.add_argument("--threads", type=int, default=2)
    return p


def top_items(scores, histories, k: int = 10) -> list:
    """Each row's best ``k`` items, its history excluded (the peers' own top-k)."""
    import numpy as np

    from m6gen.ranking.top import mask_items, top_k

    return top_k(mask_items(np.array(scores, dtype=np.float64), histories), k)


def overlap(tops, others) -> float:
    """Mean share of one top-k list found in the other."""
    import numpy as np

    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(tops, others)]))


def kl_from(teacher_logits, temperature: float, log_probs) -> float:
    """Mean KL(softmax(teacher / temperature) || exp(log_probs)) over the rows."""
    import numpy as np
    import torch

    target = torch.log_softmax(torch.as_tensor(teacher_logits, dtype=torch.float64) / temperature, -1)
    kl = (target.exp() * (target - torch.as_tensor(log_probs, dtype=torch.float64))).sum(-1)
    return float(np.mean(kl.numpy()))


class Judge:
    """One split's targets, histories and teacher: NDCG@10, overlap with the teacher, and KL for any scores."""

    def __init__(self, histories, targets, teacher_logits, temperature: float):
        self.histories, self.targets = histories, targets
        self.teacher, self.temperature = teacher_logits, temperature
        self.teacher_top = top_items(teacher_logits, histories)

    def ndcg(self, scores) -> float:
        from m6gen.ranking.metrics import per_user_scores

        return float(per_user_scores(top_items(scores, self.histories), self.targets, 10)["NDCG"].mean())

    def line(self, label: str, scores, log_probs=None) -> str:
        agree = overlap(top_items(scores, self.histories), self.teacher_top)
        text = f"{label}: NDCG@10 {self.ndcg(scores):.4f}, top-10 overlap with the teacher {agree:.3f}"
        if log_probs is not None:
            kl = kl_from(self.teacher, self.temperature, log_probs)
            text += f", KL from the teacher at T {self.temperature:g} {kl:.3f}"
        return text


def main(argv: list[str] | None = None) -> int:
    from types import SimpleNamespace

    import numpy as np
    import torch
    from bench_decode import cpu_model
    from probe_sasrec_ensemble import split_files

    from m6gen.baselines.sasrec import SASRec
    from m6gen.commands.beam_cache import prompt_states_cached
    from m6gen.commands.common import load_data
    from m6gen.commands.fit_readout import (
        ReadoutArgs,
        cached_states,
        distillation_teacher,
        extra_teacher,
        readout_pairs,
        states_key,
        teacher_log_probs,
    )
    from m6gen.config import DataArgs
    from m6gen.hybrid.readout import fit_readouts, training_windows
    from m6gen.prompts import user_vars
    from m6gen.recommender import RecommendConfig, Recommender

    args = make_parser().parse_args(argv)
    states_files = dict(split_files("--states", args.states))
    torch.set_num_threads(args.threads)
    run = Path(args.model)
    info_path = run / "readout.json"
    if not info_path.is_file():
        raise SystemExit(f"error: {info_path}: not there; run m6gen fit-readout --model {run} first")
    info = json.loads(info_path.read_text())
    temperature = float(info.get("teacher_temperature", 1.0))
    ds, split = load_data(SimpleNamespace(model=args.model, groups={DataArgs: DataArgs()}))
    rec = Recommender.from_pretrained(args.model, ds.catalog, RecommendConfig(dtype="auto"), device="cpu")
    own = distillation_teacher(rec, split, len(ds.catalog))
    teachers = [own] + [extra_teacher(folder, split, len(ds.catalog)) for folder in args.teachers]
    dtype = str(next(rec.model.parameters()).dtype).removeprefix("torch.")
    print(
        f"CPU {cpu_model()}, {dtype}, {torch.get_num_threads()} threads; {len(split.users)} users; "
        f"{info.get('members', 1)} readouts at teacher temperature {temperature:g}; {len(teachers)} teachers"
    )
    users = split.users
    splits = {
        "valid": ([split.valid_history(u) for u in users], np.array([split.valid[u] for u in users])),
        "test": ([split.test_history(u) for u in users], np.array([split.test[u] for u in users])),
    }
    judges, prompt_states = {}, {}
    for name, (histories, targets) in splits.items():
        if name in states_files:
            prompt_states[name] = prompt_states_cached(
                rec, users, histories, Path(states_files[name]), True, ds.profiles
            )
        else:
            prompt_states[name] = rec.prompt_states(histories, [user_vars(u, ds.profiles) for u in users])
        judge = judges[name] = Judge(histories, targets, teacher_log_probs(teachers, histories), temperature)
        log_probs = rec.readout.log_probs(prompt_states[name])
        print(f"{name}: the teacher: NDCG@10 {judge.ndcg(judge.teacher):.4f}")
        print(f"{name}: " + judge.line("the readouts alone", log_probs, log_probs))
        print(f"{name}: " + judge.line("the run's SASRec", own.score(histories)))
    if not args.inputs:
        return 0

    windows = training_windows(split.train, args.per_user, rec.collaborative.table.known, rec.config.max_history)
    pairs = readout_pairs(rec, ds.profiles, windows)

    def missing():
        raise SystemExit(f"error: {run}: no cached training states for --per-user {args.per_user}; run fit-readout")

    last_layer = cached_states(run, states_key(run, rec, pairs, args.batch_size), missing)
    sasrecs = [t for t in teachers if isinstance(t, SASRec)]
    valid_histories = splits["valid"][0]
    inputs = {
        "the language model's last layer (fit-readout's input)": (last_layer, prompt_states["valid"]),
        "the run's SASRec's state": (own.states(pairs.histories, 512), own.states(valid_histories, 512)),
        f"the {len(sasrecs)} SASRecs' states side by side": (
            np.concatenate([s.states(pairs.histories, 512) for s in sasrecs], 1),
            np.concatenate([s.states(valid_histories, 512) for s in sasrecs], 1),
        ),
    }
    teacher = teacher_log_probs(teachers, pairs.histories)
    judge, defaults = judges["valid"], ReadoutArgs()
    for name, (train_x, valid_x) in inputs.items():
        readout, fits = fit_readouts(
            train_x,
            pairs.targets,
            pairs.users,
            rec.collaborative.table.vectors,
            epochs=defaults.readout_epochs,
            lr=defaults.readout_lr,
            weight_decay=defaults.readout_weight_decay,
            held_out=defaults.readout_held_out,
            teacher=teacher,
            distill=float(info.get("distill", 1.0)),
            hidden=int(info.get("hidden", 0)),
            teacher_temperature=temperature,
        )
        log_probs = readout.log_probs(valid_x)
        label = f"valid: one readout on {name} (held-out loss {fits[0].held_out_loss:.3f})"
        print(judge.line(label, log_probs, log_probs), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
