"""Batch recommendation lists: top-k for many users, appended as it goes, resumable, shardable.

    m6gen recommend --output recs.jsonl                   # every user, full history
    m6gen recommend --users-file ids.txt --output recs.csv --k 20
    accelerate launch -m m6gen recommend --output recs.jsonl  # users sharded across processes

JSONL: one line per user, ``{"user_id", "items": [{"rank", "item_id", "title", "score",
"accuracy", "diversity", "novelty", "logprob"}], "filled"}``. CSV: one row per (user, rank).
A killed run restarted with the same command skips the users already written (a half-written
last user is rewritten), so every user ends up exactly once. The options that decide the lists are
recorded in ``<output>.m6gen.json``; appending with other ones is refused.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from m6gen.commands.common import Processes, UsageError
from m6gen.config import (
    DataArgs,
    DecodeArgs,
    DeviceArgs,
    ModelArgs,
    PriorArgs,
    PromptArgs,
    RerankArgs,
    RuntimeArgs,
    at_least,
    option,
)
from m6gen.files import append_synced as append
from m6gen.outputs import (
    CSV_FIELDS,
    UserListError,
    appending_alone,
    check_settings,
    done_users,
    format_records,
    interactions_fingerprint,
    merge_shards,
    record_settings,
)


@dataclass
class RecommendArgs:
    """Whose lists, from which history, into which file."""

    _argument_group_name = "recommend"

    output: str = option(help="output file: .jsonl or .csv (appended; resumes after a kill)")
    users: str | None = option(None, "comma-separated user ids, e.g. 196,186 (default: all users)")
    users_file: str | None = option(None, "file with one user id per line (default: all users)")
    max_users: int | None = option(None, "only the first N users (default: all)")
    history: Literal["full", "test", "valid"] = option(
        "full", "what each prompt shows: every known item (full), all but the test item, or the train items"
    )
    cold_only: bool = option(
        False,
        "recommend only the cold items, those no training interaction names: a shelf of new arrivals (catalog "
        "entries no one has interacted with yet; with --new-items FRAC, the held-out new items)",
    )

    def __post_init__(self):
        at_least(self, 1, "max_users", optional=True)
        if self.users is not None and self.users_file is not None:
            from m6gen.config import ConfigError

            raise ConfigError("users: give --users or --users-file, not both")


GROUPS = [DataArgs, PromptArgs, ModelArgs, DeviceArgs, DecodeArgs, PriorArgs, RerankArgs, RuntimeArgs, RecommendArgs]
HELP = "top-k lists for many users as JSONL/CSV, resumable"


def read_user_ids(path: str | Path, known: set[str], dropped=()) -> list[str]:
    """User ids from a file, one per line (blank lines and ``#`` comments skipped), in file order.

    ``dropped``: users in the data without a split (too few interactions), named as such.
    """
    path = Path(path)
    if path.is_dir():
        raise UserListError(f"{path}: is a folder; give a users file (one id per line)")
    if not path.is_file():
        raise UserListError(f"{path}: users file does not exist")
    ids, seen = [], set()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is not part of the first id
    except UnicodeDecodeError as err:
        raise UserListError(f"{path}: not UTF-8 text (byte {err.start})") from None
    for n, line in enumerate(lines, 1):
        uid = line.split("#", 1)[0].strip()
        if not uid:
            continue
        if any(c.isspace() or c == "," for c in uid):
            raise UserListError(f"{path}:{n}: expected one user id per line, got {line.strip()!r}")
        if uid not in known:
            why = "too few interactions for --min-history" if uid in dropped else "unknown user id"
            raise UserListError(f"{path}:{n}: {why} {uid!r}")
        if uid not in seen:
            seen.add(uid)
            ids.append(uid)
    if not ids:
        raise UserListError(f"{path}: no user ids in it")
    return ids


SETTINGS = (
    "data",
    "format",
    "title_field",
    "dedupe",
    "min_history",
    "unknown_items",
    "new_items",
    "model",
    "gguf_file",
    "templates",
    "template",
    "max_history",
    "dtype",
    "beams",
    "k",
    "rank_by",
    "candidates",
    "n_candidates",
    "sasrec",
    "sasrec_weight",
    "readout_weight",
    "history",
    "diversity",
    "novelty",
    "cold_only",
)


def settings_of(args) -> dict:
    """The result-deciding options of a ``recommend`` run; paths that exist are made absolute."""
    from m6gen.data import default_data_dir

    out = {}
    for name in SETTINGS:
        value = getattr(args, name, None)
        if name == "data" and value is None:
            value = str(default_data_dir(must_exist=False))
        if (
            isinstance(value, str)
            and name in ("data", "model", "templates", "candidates", "sasrec", "template")
            and Path(value).exists()
        ):
            value = str(Path(value).resolve())
        out[name] = value
    if out["sasrec"] is None:  # a weight of nothing changes nothing
        out["sasrec_weight"] = None
    # as files recorded before these options say (None): the defaults, 0 and False, change nothing
    out["new_items"] = out["new_items"] or None
    out["cold_only"] = out["cold_only"] or None
    out["readout_weight"] = out["readout_weight"] or None
    return out


def run(args) -> int:
    from m6gen.commands.common import (
        load_data,
        pick_users,
        resolve_prompt_args,
    )
    from m6gen.config import check_k_fits_beams

    check_k_fits_beams(args.groups[RerankArgs], args.groups[DecodeArgs])
    output = Path(args.output)
    if args.output.endswith(("/", os.sep)):  # Path() drops the slash, which asked for a folder
        raise UserListError(f"{args.output}: --output ends in a slash; name a .jsonl or .csv file")
    if output.suffix not in (".jsonl", ".csv"):
        raise UserListError(f"{output}: --output must end in .jsonl or .csv")
    if output.is_dir():
        raise UserListError(f"{output}: --output is a folder; name a .jsonl or .csv file")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file" if blocker else err.strerror
        raise UserListError(f"{output}: cannot create its folder ({why})") from None
    state = Processes()
    ds, split = load_data(args)
    if args.users is not None:
        users = pick_users(split, args.users, 0, ds.interactions)
    elif args.users_file:
        users = read_user_ids(args.users_file, set(split.train), ds.interactions)
    else:
        users = split.users
    users = users[: args.max_users] if args.max_users else users
    if not users:
        raise UsageError(
            f"no user left to recommend for: every user of {args.data or 'the data'} has fewer than "
            f"--min-history {args.min_history} interactions (after --unknown-items {args.unknown_items})"
        )
    if state.count > 1:  # each process writes its own shard, merged at the end
        users = users[state.index :: state.count]
        target = output.with_name(f"{output.stem}.shard{state.index}of{state.count}{output.suffix}")
    else:
        target = output
    resolve_prompt_args(args)  # the run's template, history length and candidates: part of the settings
    settings = {**settings_of(args), "interactions": interactions_fingerprint(ds)}
    with appending_alone(target):  # a second run on the same output is refused, not doubled
        return write_lists(args, output, target, settings, users, ds, split, state)


def write_lists(args, output: Path, target: Path, settings: dict, users: list[str], ds, split, state) -> int:
    """Append the lists of ``users`` not yet in ``target`` (``output``, or this process's shard of it)."""
    from tqdm.auto import tqdm

    from m6gen.commands.common import item_features, load_recommender, required_cold_items
    from m6gen.prompts import user_vars
    from m6gen.ranking.rerank import RerankConfig

    recorded = check_settings(output, settings, written=target)
    finished = set(done_users(target, k=args.k))
    if recorded == "unrecorded":  # written before settings were recorded: trusted, and recorded from now on
        print(f"note: {output} has no settings record; appending with this run's options", file=sys.stderr)
    todo = [u for u in users if u not in finished]
    if output.suffix == ".csv" and (not target.exists() or target.stat().st_size == 0):
        append(target, ",".join(CSV_FIELDS) + "\n")
    history_of = {
        "full": lambda u: split.test_history(u) + [split.test[u]],
        "test": split.test_history,
        "valid": split.valid_history,
    }[args.history]
    cold = required_cold_items(split, len(ds.catalog)) if args.cold_only else None  # before the model loads
    if todo:  # a finished file needs no model
        rec = load_recommender(args, ds.catalog, preview=(history_of(todo[0]), user_vars(todo[0], ds.profiles)))
        rec.features = item_features(ds, split)
    rcfg = RerankConfig(k=args.k, diversity=args.diversity, novelty=args.novelty)
    bar = tqdm(
        total=len(users),
        initial=len(users) - len(todo),
        desc=f"recommend[{state.index}]",
        unit="user",
        disable=not args.progress,
    )
    for s in range(0, len(todo), args.batch_size):
        chunk = todo[s : s + args.batch_size]
        histories = [history_of(u) for u in chunk]
        results = rec.recommend(
            histories,
            rcfg,
            profiles=[user_vars(u, ds.profiles) for u in chunk],
            allowed=None if cold is None else [cold] * len(chunk),
        )
        append(target, format_records(chunk, results, ds.catalog, output.suffix.lstrip(".")))
        if recorded != "same" and state.is_main:  # with the first rows: a run that fails before leaves no record
            record_settings(output, settings)
            recorded = "same"
        bar.update(len(chunk))
    bar.close()
    if state.count > 1:
        state.wait_for_everyone()
        if state.is_main:
            merge_shards(
                output,
                [output.with_name(f"{output.stem}.shard{i}of{state.count}{output.suffix}") for i in range(state.count)],
            )
    if state.is_main and state.count == 1:
        already = f" ({len(users) - len(todo)} already there)" if len(todo) < len(users) else ""
        print(f"wrote {len(todo)} users to {output}{already}", file=sys.stderr)
    elif state.is_main:
        print(f"wrote all users to {output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen recommend", HELP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
