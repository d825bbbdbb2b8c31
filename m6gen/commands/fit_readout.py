"""``m6gen fit-readout``: a hybrid run's collaborative readout (:mod:`m6gen.hybrid.readout`), fitted on
its frozen prompt states and saved in the run folder.

m6gen fit-readout --model runs/hybrid-state-400                 # about 11 min on 2 CPU cores; a refit
                                                                # with other fitting options reuses the states
m6gen fit-readout --model runs/my-run --readout-per-user 5 --readout-epochs 50
m6gen fit-readout --model runs/hybrid-state-400 --readout-distill 0   # true next items only (default: 0.9)
m6gen fit-readout --model runs/hybrid-state-400 --readout-hidden 0 --readout-members 1   # one linear map
m6gen fit-readout --model runs/hybrid-state-400 --readout-teachers runs/seed1/sasrec runs/seed2/sasrec
                                     # distil from the run's SASRec and two more (m6gen baselines --sasrec-seed N)
m6gen fit-readout --model runs/hybrid-state-400 --readout-teachers runs/ease/ease   # and an EASE
                                     # (m6gen baselines --methods EASE --out runs/ease)
m6gen eval --model runs/my-run --decode-prior Readout --decode-blend 1,3 --choose-on-valid
m6gen recommend --model runs/my-run --readout-weight 3
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from m6gen.config import DataArgs, DeviceArgs, ModelArgs, RuntimeArgs, at_least, option

AUTO_DISTILL = 0.9  # chosen on validation among 0, 0.5, 0.9 and 1 (docs/results.md)
HIDDEN = 1024  # these defaults were chosen on validation (docs/results.md, "Five distilled MLP readouts")
MEMBERS = 5


@dataclass
class ReadoutArgs:
    """Which training pairs, and how the readout is fitted."""

    _argument_group_name = "readout"

    readout_per_user: int = option(
        30,
        "training pairs per user: its last N training items, each after the history before it (read in one "
        "forward of the user's last N - 1 training items after the run's history length, where the template allows)",
    )
    readout_epochs: int = option(
        60, "passes over the pairs; the epoch with the lowest held-out loss on the true next items is kept"
    )
    readout_lr: float = option(1e-3, "AdamW learning rate")
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
    readout_teachers: list[str] = option(
        [],
        "more saved SASRec or EASE folders (m6gen baselines --sasrec-seed N --out DIR gives DIR/sasrec, "
        "--methods EASE gives DIR/ease), trained on this run's training interactions, to distil from besides the "
        "run's own SASRec: the readout matches their log-probabilities averaged kind by kind (the SASRecs, then "
        "the EASEs, then the two kinds alike); an ensemble ranks better than one model",
        metavar="DIR",
    )
    readout_teacher_temperature: float = option(
        1.0,
        "the teachers' distribution is softmax(their mean log-probability / T): below 1 sharper, so that the top of "
        "their ranking weighs more than its long tail; 1 keeps it as it is",
        metavar="T",
    )
    readout_hidden: int = option(
        HIDDEN,
        "width of the readout's hidden layer (a two-layer MLP from the prompt state to the item table's space); "
        "0: one linear map",
    )
    readout_members: int = option(
        MEMBERS,
        "readouts fitted apart (seeds --readout-seed, +1, ...; each holds out other users) whose log-probabilities "
        "the search averages: one fit's ranking moves with its seed",
    )
    readout_batch_size: int = option(16, "prompts per forward pass")
    max_users: int | None = option(
        None,
        "fit on the first N users' pairs only (default: all): a quick trial, whose readout is weaker and whose "
        "prompt states replace the run's cached ones",
    )
    readout_seed: int = option(0, "seed of the held-out users and the minibatches")

    def __post_init__(self):
        at_least(self, 1, "readout_per_user", "readout_epochs", "readout_batch_size", "readout_members")
        at_least(self, 0, "readout_lr", "readout_weight_decay", "readout_held_out", "readout_hidden")
        at_least(self, 0, "readout_teacher_temperature")  # finite; 0 itself is refused below
        at_least(self, 1, "max_users", optional=True)
        from m6gen.config import ConfigError

        if self.readout_held_out >= 1:
            raise ConfigError(f"readout_held_out: a fraction below 1, got {self.readout_held_out}")
        if self.readout_distill is not None and not 0 <= self.readout_distill <= 1:
            raise ConfigError(f"readout_distill: a share between 0 and 1, got {self.readout_distill}")
        if self.readout_teacher_temperature <= 0:
            raise ConfigError(f"readout_teacher_temperature: above 0, got {self.readout_teacher_temperature}")


GROUPS = [DataArgs, ModelArgs, DeviceArgs, ReadoutArgs, RuntimeArgs]
HELP = "fit a hybrid run's collaborative readout (an item prior read from its own prompt states)"


def run(args) -> int:
    import time

    import numpy as np
    from tqdm.auto import tqdm

    from m6gen.commands.common import UsageError, load_data
    from m6gen.hybrid.readout import fit_readouts, save_readout, states_at, training_windows
    from m6gen.recommender import RecommendConfig, Recommender
    from m6gen.runs import trained_run_config

    if not args.model or trained_run_config(args.model) is None:
        raise UsageError("--model: a trained m6gen run folder (m6gen train --cf-source ...) is needed")
    for folder in args.readout_teachers:  # before the model loads
        check_teacher_folder(folder)
    t0 = time.perf_counter()
    ds, split = load_data(args)
    rec = Recommender.from_pretrained(args.model, ds.catalog, RecommendConfig(dtype=args.dtype), device=args.device)
    if rec.collaborative is None:
        raise UsageError(f"--model {args.model}: the run has no collaborative tokens (trained without --cf-source)")
    table = rec.collaborative.table
    if args.readout_teachers and args.readout_distill == 0:
        raise UsageError("--readout-teachers: nothing is distilled with --readout-distill 0")
    own = distillation_teacher(rec, split, len(ds.catalog)) if args.readout_distill != 0 else None
    teachers = [own] if own is not None else []
    teachers += [extra_teacher(folder, split, len(ds.catalog)) for folder in args.readout_teachers]
    distill = args.readout_distill
    if distill is None:  # the default: distil where there is a SASRec
        distill = AUTO_DISTILL if teachers else 0.0
    if distill and not teachers:
        raise UsageError(
            f"--readout-distill: --model {args.model} has no SASRec to distil from (no state tokens, and its "
            f"collaborative source {table.source} is not a saved SASRec folder); give --readout-teachers"
        )
    train = {u: split.train[u] for u in split.users[: args.max_users]} if args.max_users else split.train
    windows = training_windows(train, args.readout_per_user, table.known, rec.config.max_history)
    pairs = readout_pairs(rec, ds.profiles, windows)

    def read_states():
        with tqdm(total=len(pairs.prompt_ids), desc="prompt states", unit="prompt", disable=not args.progress) as bar:
            return states_at(
                rec.model,
                pairs.prompt_ids,
                pairs.positions,
                rec.tokenizer.pad_token_id,
                args.readout_batch_size,
                bar.update,
            )

    run_folder = Path(args.model)
    states = cached_states(run_folder, states_key(run_folder, rec, pairs, args.readout_batch_size), read_states)
    teacher = teacher_log_probs(teachers, pairs.histories) if distill else None
    fitting = tqdm(total=args.readout_members, desc="fitting readouts", unit="readout", disable=not args.progress)
    readout, fits = fit_readouts(
        states,
        pairs.targets,
        pairs.users,
        table.vectors,
        members=args.readout_members,
        seed=args.readout_seed,
        epochs=args.readout_epochs,
        lr=args.readout_lr,
        weight_decay=args.readout_weight_decay,
        held_out=args.readout_held_out,
        teacher=teacher,
        distill=distill,
        hidden=args.readout_hidden,
        teacher_temperature=args.readout_teacher_temperature,
        progress=fitting.update,
    )
    fitting.close()
    save_readout(readout, args.model, fits, table.fingerprint, teachers=list(args.readout_teachers))
    head = f"MLP width {args.readout_hidden}" if args.readout_hidden else "linear"
    first, held_out = np.mean([f.first_loss for f in fits]), np.mean([f.held_out_loss for f in fits])
    source = describe_teachers(teachers) if distill else "no teacher"
    if distill and args.readout_teacher_temperature != 1:
        source += f" at temperature {args.readout_teacher_temperature:g}"
    print(
        f"{len(fits)} readout(s) ({head}) fitted on {fits[0].examples} pairs ({fits[0].held_out} held out), "
        f"{distill:g} of the loss distilled from {source}: held-out loss {first:.3f} -> {held_out:.3f} at "
        f"epoch{'s' if len(fits) > 1 else ''} {', '.join(str(f.epochs) for f in fits)}; saved in {args.model} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


def readout_pairs(rec, profiles, windows):
    """The training ``windows``' pairs (:func:`m6gen.hybrid.readout.window_pairs`), each user's prompts
    written by the run's template showing a whole window; the first pair still sees --max-history items."""
    import copy

    from m6gen.hybrid.readout import window_pairs
    from m6gen.model import encode_prompts
    from m6gen.prompts import user_vars

    wide = copy.copy(rec.template)
    wide.max_history = None

    def encode(histories: list[list[int]], user: str) -> list[list[int]]:
        return encode_prompts(
            rec.tokenizer, rec.prompts(histories, [user_vars(user, profiles)] * len(histories), template=wide)
        )

    return window_pairs(windows, encode)


STATES_CACHE = "readout_states-{key}.npy"


def states_key(run_folder: Path, rec, pairs, batch_size: int) -> str:
    """12 hex digits naming the training pairs' prompt states: the run's adapter and base model, the
    dtype, the batch size (bf16 states move a little with the padding), and every pair's prompt tokens
    and read positions (which cover the data, the template and the pair options)."""
    import hashlib

    from m6gen.hybrid.readout import adapter_fingerprint

    digest = hashlib.sha1()
    base = getattr(rec.model, "name_or_path", "") or ""
    dtype = next(rec.model.parameters()).dtype
    digest.update(f"{adapter_fingerprint(run_folder)}|{base}|{dtype}|{batch_size}".encode())
    for ids, positions in zip(pairs.prompt_ids, pairs.positions):
        digest.update(f"{ids}|{positions}\n".encode())
    return digest.hexdigest()[:12]


def cached_states(folder: Path, key: str, read):
    """The training pairs' prompt states, read by ``read()`` once and kept in the run folder
    (``readout_states-<key>.npy``, written atomically): fitting again with other readout options
    (``--readout-distill``, ``--readout-hidden``, ``--readout-members``, ...) runs no forward. Only
    the latest pairs' states are kept."""
    import io

    import numpy as np

    from m6gen.files import write_atomic

    path = folder / STATES_CACHE.format(key=key)
    if path.is_file():
        print(f"prompt states read from {path} (delete it to read them again)")
        return np.load(path)
    print(f"prompt states: one forward per prompt, once; then kept in {path.name} for later fits")
    states = read()
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(states, dtype=np.float32))
    write_atomic(path, buffer.getvalue())
    for old in folder.glob(STATES_CACHE.format(key="*")):
        if old != path:
            old.unlink()
    return states


def distillation_teacher(rec, split, n_items: int):
    """The SASRec to distil from: the one behind the run's state tokens, else its --cf-source folder
    when that is a saved SASRec; None without one. Its source folder's record must name ``split``'s
    training interactions, as every --readout-teachers folder's must."""
    from pathlib import Path

    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.commands.common import check_same_interactions

    source = Path(rec.collaborative.table.source)
    if rec.collaborative.has_states:
        teacher = rec.collaborative.sequence
    elif (source / "sasrec.json").is_file():
        teacher = load_sasrec(source, n_items)
    else:
        return None
    check_same_interactions(source, split, f"the run's SASRec ({source})")
    return teacher


def check_teacher_folder(folder: str) -> None:
    """A one-line error unless ``folder`` holds a saved SASRec or EASE."""
    from m6gen.baselines.ease import is_ease_folder
    from m6gen.commands.common import UsageError

    path = Path(folder)
    if not path.exists():
        raise UsageError(f"--readout-teachers: {folder} does not exist")
    if not (path / "sasrec.json").is_file() and not is_ease_folder(path):
        raise UsageError(
            f"--readout-teachers: {folder} holds no saved SASRec or EASE (sasrec.json or ease.json): "
            "m6gen baselines --out DIR saves them in DIR/sasrec and DIR/ease"
        )


def extra_teacher(folder: str, split, n_items: int):
    """A --readout-teachers model: a saved SASRec or EASE folder (``m6gen baselines --out DIR`` writes
    DIR/sasrec and DIR/ease). One trained on other interactions than ``split``'s training ones (recorded
    by ``m6gen baselines`` in ``../baselines.json``) may have seen validation or test items, so it is an error."""
    from m6gen.baselines.ease import is_ease_folder, load_ease
    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.commands.common import UsageError, check_same_interactions
    from m6gen.model import ModelError

    check_teacher_folder(folder)
    try:
        teacher = load_ease(folder, n_items) if is_ease_folder(folder) else load_sasrec(folder, n_items)
    except ModelError as err:
        raise UsageError(f"--readout-teachers: {err}") from None
    check_same_interactions(folder, split, f"--readout-teachers: {folder}")
    return teacher


def teacher_log_probs(teachers, histories):
    """The teachers' next-item log-probabilities averaged, kind by kind: the SASRecs among themselves,
    the EASEs among themselves, then the kinds with equal weight, so that five SASRec seeds and one
    EASE count half each (chosen on validation: docs/results.md). The softmax of a mean of
    log-probabilities is their normalized geometric mean. One SASRec alone gives its logits (the same
    softmax). For five SASRec seeds the mean ranked within 0.002 NDCG@10 of the mean of their
    probabilities on validation."""
    import numpy as np
    import torch

    from m6gen.baselines.ease import EASE

    if len(teachers) == 1 and not isinstance(teachers[0], EASE):
        return teachers[0].score(histories)
    kinds: dict[str, list] = {}
    for teacher in teachers:
        kinds.setdefault(type(teacher).__name__, []).append(teacher)

    def log_probs(teacher):
        if isinstance(teacher, EASE):
            return teacher.log_probs(histories)
        return torch.log_softmax(torch.from_numpy(teacher.score(histories)), dim=-1).numpy()

    means = [sum(log_probs(t) for t in group) / len(group) for group in kinds.values()]
    return (sum(means) / len(means)).astype(np.float32)


def describe_teachers(teachers) -> str:
    """'5 SASRec(s) and 1 EASE' (each kind in the order first given)."""
    counts: dict[str, int] = {}
    for teacher in teachers:
        counts[type(teacher).__name__] = counts.get(type(teacher).__name__, 0) + 1
    return " and ".join(f"{n} {kind}" + ("(s)" if kind == "SASRec" else "") for kind, n in counts.items())


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen fit-readout", HELP, run, argv)
