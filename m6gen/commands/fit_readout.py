"""``m6gen fit-readout``: a hybrid run's collaborative readout (:mod:`m6gen.hybrid.readout`), fitted on
its frozen prompt states and saved in the run folder.

m6gen fit-readout --model runs/hybrid-state-400                 # about 5 min on 2 CPU cores
m6gen fit-readout --model runs/my-run --readout-per-user 5 --readout-epochs 50
m6gen fit-readout --model runs/hybrid-state-400 --readout-distill 0   # true next items only (default: 0.9)
m6gen eval --model runs/my-run --decode-prior Readout --decode-blend 1,3 --choose-on-valid
m6gen recommend --model runs/my-run --readout-weight 3
"""

from __future__ import annotations

from dataclasses import dataclass

from m6gen.config import DataArgs, DeviceArgs, ModelArgs, RuntimeArgs, at_least, option

AUTO_DISTILL = 0.9  # chosen on validation among 0, 0.5, 0.9 and 1 (docs/results.md)


@dataclass
class ReadoutArgs:
    """Which training pairs, and how the readout is fitted."""

    _argument_group_name = "readout"

    readout_per_user: int = option(
        10,
        "training pairs per user: its last N training items, each after the history before it (read in one "
        "forward of the user's last --max-history + N - 1 training items where the template allows)",
    )
    readout_epochs: int = option(
        30, "passes over the pairs; the epoch with the lowest held-out loss on the true next items is kept"
    )
    readout_lr: float = option(3e-3, "AdamW learning rate")
    readout_weight_decay: float = option(1e-2, "AdamW weight decay")
    readout_held_out: float = option(
        0.1, "fraction of users whose pairs choose the epoch (never validation or test items)"
    )
    readout_distill: float | None = option(
        None,
        "share of the loss (0..1) that matches the run's SASRec's next-item distribution on the same training "
        "history (knowledge distillation; the SASRec behind its state tokens, or its --cf-source folder); "
        f"the rest is the true next item's cross-entropy. Default: {AUTO_DISTILL} where the run has such a "
        "SASRec, else 0",
    )
    readout_batch_size: int = option(16, "prompts per forward pass")
    readout_seed: int = option(0, "seed of the held-out users and the minibatches")

    def __post_init__(self):
        at_least(self, 1, "readout_per_user", "readout_epochs", "readout_batch_size")
        at_least(self, 0, "readout_lr", "readout_weight_decay", "readout_held_out")
        from m6gen.config import ConfigError

        if self.readout_held_out >= 1:
            raise ConfigError(f"readout_held_out: a fraction below 1, got {self.readout_held_out}")
        if self.readout_distill is not None and not 0 <= self.readout_distill <= 1:
            raise ConfigError(f"readout_distill: a share between 0 and 1, got {self.readout_distill}")


GROUPS = [DataArgs, ModelArgs, DeviceArgs, ReadoutArgs, RuntimeArgs]
HELP = "fit a hybrid run's collaborative readout (an item prior read from its own prompt states)"


def run(args) -> int:
    import copy
    import time

    from tqdm.auto import tqdm

    from m6gen.commands.common import UsageError, load_data
    from m6gen.hybrid.readout import fit_readout, save_readout, states_at, training_windows, window_pairs
    from m6gen.model import encode_prompts
    from m6gen.prompts import user_vars
    from m6gen.recommender import RecommendConfig, Recommender
    from m6gen.runs import trained_run_config

    if not args.model or trained_run_config(args.model) is None:
        raise UsageError("--model: a trained m6gen run folder (m6gen train --cf-source ...) is needed")
    t0 = time.perf_counter()
    ds, split = load_data(args)
    rec = Recommender.from_pretrained(args.model, ds.catalog, RecommendConfig(dtype=args.dtype), device=args.device)
    if rec.collaborative is None:
        raise UsageError(f"--model {args.model}: the run has no collaborative tokens (trained without --cf-source)")
    table = rec.collaborative.table
    sasrec = distillation_teacher(rec, len(ds.catalog)) if args.readout_distill != 0 else None
    distill = args.readout_distill
    if distill is None:  # the default: distil where there is a SASRec
        distill = AUTO_DISTILL if sasrec is not None else 0.0
    if distill and sasrec is None:
        raise UsageError(
            f"--readout-distill: --model {args.model} has no SASRec to distil from (no state tokens, and its "
            f"collaborative source {table.source} is not a saved SASRec folder)"
        )
    windows = training_windows(split.train, args.readout_per_user, table.known, rec.config.max_history)
    wide = copy.copy(rec.template)  # shows a whole window; the first pair still sees --max-history items
    wide.max_history = None

    def encode(histories: list[list[int]], user: str) -> list[list[int]]:
        profiles = [user_vars(user, ds.profiles)] * len(histories)
        return encode_prompts(rec.tokenizer, rec.prompts(histories, profiles, template=wide))

    pairs = window_pairs(windows, encode)
    with tqdm(total=len(pairs.prompt_ids), desc="prompt states", unit="prompt", disable=not args.progress) as bar:
        states = states_at(
            rec.model,
            pairs.prompt_ids,
            pairs.positions,
            rec.tokenizer.pad_token_id,
            args.readout_batch_size,
            bar.update,
        )
    teacher = sasrec.score(pairs.histories) if distill else None
    readout, fit = fit_readout(
        states,
        pairs.targets,
        pairs.users,
        table.vectors,
        epochs=args.readout_epochs,
        lr=args.readout_lr,
        weight_decay=args.readout_weight_decay,
        held_out=args.readout_held_out,
        seed=args.readout_seed,
        teacher=teacher,
        distill=distill,
    )
    save_readout(readout, args.model, fit, table.fingerprint)
    print(
        f"readout fitted on {fit.examples} pairs ({fit.held_out} held out), {fit.distill:g} of the loss distilled "
        f"from SASRec: held-out loss "
        f"{fit.first_loss:.3f} -> {fit.held_out_loss:.3f} at epoch {fit.epochs}; saved in {args.model} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


def distillation_teacher(rec, n_items: int):
    """The SASRec to distil from: the one behind the run's state tokens, else its --cf-source folder
    when that is a saved SASRec; None without one."""
    from pathlib import Path

    from m6gen.recommender import load_sasrec

    if rec.collaborative.has_states:
        return rec.collaborative.sequence
    source = Path(rec.collaborative.table.source)
    return load_sasrec(source, n_items) if (source / "sasrec.json").is_file() else None


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen fit-readout", HELP, run, argv)
