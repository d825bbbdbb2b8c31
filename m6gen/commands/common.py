"""What the sub-commands share: parsing into option groups, loading data and the recommender, one-line errors.

Heavy imports (torch, transformers) happen inside functions so ``--help`` stays fast. Every error a
user can cause is printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from types import SimpleNamespace


class UsageError(ValueError):
    """Bad command-line input (unknown user, bad option value)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit): handled like Ctrl-C, so a command says how to resume."""


def interrupted_status(stop: KeyboardInterrupt) -> int:
    """The exit status after ``stop``: 143 for a SIGTERM, as the shell reports a killed process, else 130."""
    return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130


@contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` instead of ending the process at once: files
    close and flush their complete lines, and the command's interrupt message is printed. A handler
    someone else installed (``m6gen serve``'s, or an embedding program's) is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def parse(groups: list[type], prog: str, description: str, argv: list[str] | None) -> SimpleNamespace:
    """The options of a command: one instance per group (``args.groups``) and a flat view (``args.k``)."""
    from m6gen.commands.registry import all_groups
    from m6gen.config import ConfigParser

    parsed = ConfigParser(groups, prog=prog, description=description, every_group=all_groups()).parse(argv)
    args = SimpleNamespace()
    for group in parsed:
        vars(args).update(vars(group))
    args.groups = {type(g): g for g in parsed}
    return args


def run_command(groups: list[type], prog: str, description: str, func: Callable, argv: list[str] | None) -> int:
    """Parse ``argv`` into ``groups`` and run ``func(args)``; option errors are one line, exit 2."""
    from m6gen.config import ConfigError

    try:
        args = parse(groups, prog, description, argv)
    except ConfigError as err:
        print(f"error: {' '.join(str(err).split())} ({prog} --help)", file=sys.stderr)
        return 2
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if getattr(args, "progress", True) is False:
        quiet_library_progress()
    return run_guarded(func, args)


@contextmanager
def library_notes_silenced():
    """Training's deprecation and config notes from transformers and peft, which a user cannot act on."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")
        yield


def quiet_library_progress() -> None:
    """--no-progress also silences transformers' own bars (GGUF de-quantizing, weight loading)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import functools

    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights"
    # the GGUF reader uses tqdm directly, with no switch of its own
    gguf_loading.tqdm = functools.partial(tqdm, disable=True)


def say(text: str) -> None:
    print(text, file=sys.stderr)


def load_data(args):
    """(dataset, split) for the data options; a trained run's own data when no --data is given."""
    from m6gen.config import DataArgs
    from m6gen.data import build_histories, leave_one_out, load_dataset_noted, new_item_split
    from m6gen.runs import resolve_data

    data = resolve_data(getattr(args, "model", None), args.groups[DataArgs], say=say)
    vars(args).update(vars(data))
    ds = load_dataset_noted(data.data, data.format, data.title_field, data.unknown_items, say=say)
    split = leave_one_out(build_histories(ds, dedupe=data.dedupe, min_history=data.min_history))
    return ds, new_item_split(ds, split, data.new_items)


def resolve_prompt_args(args) -> None:
    """Fill the prompt options left unset from the trained run (``args.model``), else the defaults."""
    from m6gen.config import PromptArgs
    from m6gen.runs import resolve_prompt

    prompt = resolve_prompt(getattr(args, "model", None), args.groups[PromptArgs])
    args.groups[PromptArgs] = prompt
    vars(args).update(vars(prompt))


def load_recommender(args, catalog, preview: tuple[list[int], dict] | None = None):
    """``Recommender.from_pretrained`` with the command's model, prompt, decoding and prior options.

    ``preview``: a real (history, profile) rendered with the template first, so that a template
    error that shows only when rendering is reported before the model loads, not after.
    """
    from m6gen.recommender import RecommendConfig, Recommender

    resolve_prompt_args(args)
    if preview is not None:
        render_preview(args, catalog, *preview)
    config = RecommendConfig(
        template=args.template,
        max_history=args.max_history,
        beams=args.beams,
        batch_size=args.batch_size,
        rank_by=args.rank_by,
        dtype=args.dtype,
        n_candidates=args.n_candidates,
    )
    return Recommender.from_pretrained(
        args.model,
        catalog,
        config,
        templates=args.templates,
        gguf_file=args.gguf_file,
        device=args.device,
        sasrec=getattr(args, "sasrec", None),
        sasrec_weight=getattr(args, "sasrec_weight", 1.0),
        readout_weight=getattr(args, "readout_weight", 0.0),
        candidates=args.candidates,
    )


def render_preview(args, catalog, history: list[int], profile: dict) -> None:
    """Render the catalog's targets and one prompt with the command's template (raises TemplateError)."""
    from m6gen.prompts import TemplateLibrary

    template = TemplateLibrary(args.templates, max_history=args.max_history).load_template(args.template)
    template.render_targets(catalog)
    template.render_prompt([catalog[i] for i in history], user=profile, candidates=[])


def item_features(ds, split):
    from m6gen.data import item_popularity
    from m6gen.ranking.rerank import ItemFeatures

    return ItemFeatures.from_genres(
        [list(it.genres) for it in ds.catalog], popularity=item_popularity(split, len(ds.catalog))
    )


def required_cold_items(split, n_items: int):
    """``--cold-only``'s items (:func:`m6gen.data.cold_items`), or a one-line error when none is cold."""
    from m6gen.data import cold_items

    cold = cold_items(split, n_items)
    if not cold.size:
        raise UsageError(
            "--cold-only: every catalog item has a training interaction, so none is cold; add the new items to the "
            "item file, or hold the latest out with --new-items FRAC"
        )
    return cold


def pick_users(split, users: str | None, n: int, all_users=()) -> list[str]:
    """The users asked for (comma list), else the first ``n``; ``all_users``: every user in the data."""
    if users is None:
        return split.users[:n]
    chosen = list(dict.fromkeys(u.strip() for u in users.split(",") if u.strip()))
    if not chosen:  # --users "" or " , ": a list that lost its ids, not a request for the default
        raise UsageError(f"users: no user id in {users!r} (ids look like {', '.join(split.users[:3])})")
    for u in chosen:
        if u not in split.train:
            raise UsageError(unknown_user(u, split, all_users))
    return chosen


def unknown_user(user: str, split, all_users=()) -> str:
    """Why ``user`` has no split: too few interactions for --min-history, or not in the data."""
    if user in all_users:
        return f"user {user!r} has too few interactions for --min-history (so no test item)"
    return f"unknown user id {user!r} (ids look like {', '.join(split.users[:3])})"


def format_summary(info: dict) -> str:
    width = max(len(k) for k in info)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in info.items())


def run_guarded(func, args) -> int:
    """Run a command; errors a user can cause become one line on stderr, exit status 2."""
    from m6gen.data import DataError
    from m6gen.model import ModelError
    from m6gen.prompts import TemplateError

    try:
        with sigterm_as_interrupt():
            return func(args)
    except BrokenPipeError:  # output piped into e.g. `head`, which has seen enough: not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 1
    except (DataError, ModelError, TemplateError, UsageError, OSError) as err:  # OSError: e.g. a file not writable
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # a bad value that got past the option checks; M6GEN_DEBUG=1 shows the traceback
        if os.environ.get("M6GEN_DEBUG"):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print("terminated" if isinstance(stop, Terminated) else "interrupted", file=sys.stderr)
        return interrupted_status(stop)


def display_width(text: str) -> int:
    """Terminal columns of ``text``: wide (CJK, emoji) characters take two, combining marks none."""
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text
    )


def pad(text: str, width: int) -> str:
    """``text`` clipped to ``width`` columns and padded with spaces to exactly that many."""
    out, used = [], 0
    for c in text:
        w = display_width(c)
        if used + w > width - (1 if display_width(text) > width else 0):
            out.append("\u2026")
            used += 1
            break
        out.append(c)
        used += w
    return "".join(out) + " " * max(0, width - used)


class Processes:
    """This process's rank among those started by ``accelerate launch`` or ``torchrun`` (recommend and
    eval split their users among them).

    Read from the launcher's environment (RANK, WORLD_SIZE), which both set on CPU and GPU alike;
    the barrier before merging uses a gloo process group, which needs no GPU.
    """

    def __init__(self):
        self.index = int(os.environ.get("RANK", "0"))
        self.count = int(os.environ.get("WORLD_SIZE", "1"))
        self.is_main = self.index == 0

    def wait_for_everyone(self) -> None:
        if self.count == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            from datetime import timedelta

            # the others may wait long at a barrier: the main process trains SASRec alone, or scores
            dist.init_process_group("gloo", timeout=timedelta(hours=24))
        dist.barrier()


def check_same_interactions(folder, split, what: str, required: bool = False) -> None:
    """A one-line error where ``m6gen baselines`` recorded (``../baselines.json``) that the model in
    ``folder`` was trained on other interactions than ``split``'s training ones: it may have seen
    validation or test items, or the run was trained on other data than the one given. ``required``:
    a model with no such record is refused too."""
    from m6gen.baselines.run import recorded_split, split_fingerprint

    saw = recorded_split(folder)
    if saw is None and required:
        raise UsageError(
            f"{what}: no record of what it was trained on (../baselines.json, written by `m6gen baselines` and "
            "`m6gen eval`), so it may have seen test items"
        )
    if saw is not None and saw != split_fingerprint(split):
        raise UsageError(
            f"{what} was trained on other interactions than these training ones (it may have seen validation "
            "or test items): give the data options the run was trained with, or train it with these"
        )
