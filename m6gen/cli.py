"""The ``m6gen`` command: sub-commands over the data, templates, model and decoder.

    m6gen demo                 # data summary, one prompt per template, top-10 for a few users
    m6gen data --data DIR      # summary of a data set
    m6gen prompts --user 1     # render every template for one user
    m6gen recommend ...        # top-k lists for many users (JSONL/CSV)
    m6gen train ...            # LoRA-tune the model (see m6gen/train.py)

Heavy imports (torch, transformers) happen inside the commands so ``--help`` is instant.
Every error a user can cause is printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys


class UsageError(ValueError):
    """Bad command-line input (unknown user, bad option value)."""


# ---------------------------------------------------------------------- option types
# argparse turns an ArgumentTypeError into one line naming the flag, with exit status 2.
def int_at_least(low: int, why: str = ""):
    """An integer >= ``low``; ``why`` is added to the message."""
    because = f" ({why})" if why else ""

    def check(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}{because}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}{because}")
        return value

    return check


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def comma_list(item_type):
    """A comma-separated list whose every entry passes ``item_type``; the text itself is kept ('' = none)."""

    def check(text: str) -> str:
        for part in filter(None, (x.strip() for x in str(text).split(","))):
            item_type(part)
        return text

    return check


def one_of_each(allowed: tuple[str, ...]):
    """A comma-separated list of names from ``allowed``; the text itself is kept ('' = none)."""

    def check(text: str) -> str:
        unknown = [x.strip() for x in str(text).split(",") if x.strip() and x.strip() not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return text

    return check


# ---------------------------------------------------------------------- shared options
def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config FILE`` (YAML or JSON) fill in, flags on the command line win.

    Keys are option names (``max_history`` or ``max-history``); keys this command does not take
    are skipped, so one file can serve train, recommend and eval.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        import yaml

        path = known.config
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}  # JSON is YAML
        except OSError as err:
            parser.exit(2, f"error: {path}: cannot read config ({err.strerror})\n")
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            parser.exit(2, f"error: {path}{where}: not valid YAML/JSON\n")
        if not isinstance(data, dict):
            parser.exit(2, f"error: {path}: expected a mapping of option names to values\n")
        target = parser  # the parser whose options the file fills: the sub-command's, if there is one
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                command = next((a for a in argv or sys.argv[1:] if not a.startswith("-")), None)
                target = action.choices.get(command, parser)
        dests = {a.dest for a in target._actions}
        values = {str(k).replace("-", "_"): v for k, v in data.items()}
        skipped = sorted(k for k in values if k not in dests)
        if skipped:  # shared files are fine; a typo should not pass unseen
            print(f"note: {path}: {target.prog} does not take {', '.join(skipped)} (skipped)", file=sys.stderr)
        actions = {a.dest: a for a in target._actions}
        target.set_defaults(**{k: _config_value(path, actions[k], v, target) for k, v in values.items() if k in dests})
    return parser.parse_args(argv)


def _config_value(path: str, action: argparse.Action, value, parser: argparse.ArgumentParser):
    """A config file's value checked as the same flag on the command line would be (type, choices, on/off)."""
    flag = action.option_strings[-1] if action.option_strings else action.dest

    def fail(problem: str):
        parser.exit(2, f"error: {path}: {action.dest}: {problem} (as {flag})\n")

    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            fail(f"expected true or false, got {value!r}")
        return value
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    if action.type is not None:
        try:
            converted = action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            fail(str(err))
    else:
        converted = text
    if action.choices is not None and converted not in action.choices:
        fail(f"invalid choice {converted!r} (choose from {', '.join(map(str, action.choices))})")
    return converted


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML/JSON file of option values (command-line flags win)")


DATA_DEFAULTS = {"format": "auto", "title_field": None, "dedupe": "first", "unknown_items": "error"}


def add_data_args(p: argparse.ArgumentParser) -> None:
    add_config_arg(p)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="data folder (default: MovieLens-100K from scripts/setup.sh, or $M6GEN_DATA)")
    g.add_argument("--format", default=DATA_DEFAULTS["format"], choices=["auto", "recbole", "ml-100k", "ml-1m", "plain"],
                   help="data format (default: auto, detected from the files)")
    g.add_argument("--title-field", default=DATA_DEFAULTS["title_field"], help="item title column (default: detected)")
    g.add_argument("--dedupe", default=DATA_DEFAULTS["dedupe"], choices=["first", "keep", "last"], help="repeated items in a history")
    g.add_argument("--min-history", type=int_at_least(3, "leave-one-out needs a train, a validation and a test item"),
                   default=3, help="drop users with fewer interactions (at least 3)")
    g.add_argument("--unknown-items", default=DATA_DEFAULTS["unknown_items"], choices=["error", "skip"],
                   help="interactions whose item is not in the item file: an error (default), or skip them")


def add_template_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prompts")
    g.add_argument("--templates", default=None, help="extra folder of .jinja templates (searched before prompts/)")
    g.add_argument("--template", default=None, help="template name or .jinja path (default: the trained model's, else titles)")
    g.add_argument("--max-history", type=positive_int, default=None, help="most recent items shown in the prompt (default: the trained model's, else 20)")


def add_model_args(p: argparse.ArgumentParser, prior: bool = True) -> None:
    """Model and decoding options; ``prior=False`` leaves out --sasrec (commands with their own SASRec)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="HF model id/path, .gguf file, or a trained m6gen output dir (default: SmolLM2-135M-Instruct)")
    g.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's folder")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="model dtype; auto = bf16 where the device computes it natively, else float32")
    g.add_argument("--device", default="auto",
                   help="where the model runs: auto (the GPU or other accelerator torch sees, else cpu), cpu, cuda, cuda:1, mps")
    g.add_argument("--beams", type=positive_int, default=20, help="beams (candidate items) per user")
    g.add_argument("--k", type=positive_int, default=10, help="recommendations per user")
    g.add_argument("--rank-by", default="logprob", choices=["logprob", "normalized", "catalog"], help="beam score used for ranking")
    g.add_argument("--batch-size", type=positive_int, default=8, help="users decoded together")
    g.add_argument("--candidates", default=None,
                   help="a saved SASRec folder as retriever: m6gen ranks its top --n-candidates unseen items, all of "
                        "them and only them (candidate templates also list them in the prompt; default: the "
                        "retriever a model trained with m6gen train --candidates used)")
    g.add_argument("--n-candidates", type=positive_int, default=None, help="retrieved items per user (default: the trained model's, else 20)")
    if not prior:
        return
    g.add_argument("--sasrec", default=None,
                   help="a saved SASRec folder (m6gen eval writes <out>/baselines/sasrec) whose log-probabilities "
                        "join the beam search as an item prior")
    g.add_argument("--sasrec-weight", type=nonnegative_float, default=1.0, help="weight of the SASRec prior (with --sasrec)")


def use_run_data(args) -> None:
    """Without ``--data``, a trained run's own data folder and data options (those left at their defaults)."""
    from pathlib import Path

    from m6gen.data import default_data_dir
    from m6gen.train_io import trained_run_config

    run = trained_run_config(getattr(args, "model", None)) if args.data is None else None
    if run is None or not run.data:
        return
    if not Path(run.data).is_dir():  # e.g. trained on another machine
        print(f"note: {args.model} was trained on data at {run.data}, which is not here; using the default data "
              f"(pass --data)", file=sys.stderr)  # fmt: skip
        return
    args.data = run.data
    trained = {"format": run.data_format, "title_field": run.title_field, "dedupe": run.dedupe,
               "unknown_items": run.unknown_items}  # fmt: skip
    for option, default in DATA_DEFAULTS.items():
        if getattr(args, option) == default:
            setattr(args, option, trained[option])
    if Path(run.data).resolve() != default_data_dir(must_exist=False).resolve():
        print(f"note: data {run.data} (the one {args.model} was trained on; --data to change)", file=sys.stderr)


def load_data(args):
    from m6gen.data import build_histories, leave_one_out, load_dataset_noted

    use_run_data(args)
    ds = load_dataset_noted(args.data, args.format, args.title_field, args.unknown_items,
                            say=lambda text: print(text, file=sys.stderr))
    split = leave_one_out(build_histories(ds, dedupe=args.dedupe, min_history=args.min_history))
    return ds, split


def resolve_template_args(args) -> None:
    """Fill ``--template``/``--max-history`` left unset: a trained model's own, else the defaults."""
    from pathlib import Path

    from m6gen.pipeline import run_prompt_defaults
    from m6gen.train_io import trained_run_config

    run = trained_run_config(getattr(args, "model", None))
    defaults = run_prompt_defaults(run)
    if args.template is None:
        args.template = defaults["template"]
    # the run's own template (by default or by name): the copy in the run folder, else where it was trained from
    if run is not None and args.template in (run.template, Path(run.template).stem) \
            and getattr(args, "templates", None) is None:  # fmt: skip
        from m6gen.pipeline import run_templates

        args.templates, args.template = run_templates(args.model, run)
    if args.max_history is None:
        args.max_history = defaults["max_history"]
    if getattr(args, "n_candidates", 0) is None:
        args.n_candidates = defaults["n_candidates"]


def load_recommender(args, catalog):
    """``Recommender.from_pretrained`` with the shared model/template options."""
    from m6gen.pipeline import RecommendConfig, Recommender

    resolve_template_args(args)
    config = RecommendConfig(template=args.template, max_history=args.max_history, num_beams=args.beams,
                             batch_size=args.batch_size, rank_by=args.rank_by, dtype=args.dtype,
                             n_candidates=args.n_candidates)
    return Recommender.from_pretrained(args.model, catalog, config, templates=args.templates, gguf_file=args.gguf_file,
                                       device=args.device, sasrec=getattr(args, "sasrec", None),
                                       sasrec_weight=getattr(args, "sasrec_weight", 1.0), candidates=args.candidates)  # fmt: skip


def item_features(ds, split):
    from m6gen.data import item_popularity
    from m6gen.rerank import ItemFeatures

    return ItemFeatures.from_genres([list(it.genres) for it in ds.catalog], popularity=item_popularity(split, len(ds.catalog)))


def pick_users(split, users: str | None, n: int, all_users=()) -> list[str]:
    """The users asked for (comma list), else the first ``n``; ``all_users``: every user in the data."""
    if not users:
        return split.users[:n]
    chosen = list(dict.fromkeys(u.strip() for u in users.split(",") if u.strip()))
    for u in chosen:
        if u not in split.train:
            raise UsageError(unknown_user(u, split, all_users))
    return chosen


def unknown_user(user: str, split, all_users=()) -> str:
    """Why ``user`` has no split: too few interactions for --min-history, or not in the data."""
    if user in all_users:
        return f"user {user!r} has too few interactions for --min-history (so no test item)"
    return f"unknown user id {user!r} (ids look like {', '.join(split.users[:3])})"


# ---------------------------------------------------------------------- commands
def cmd_data(args) -> int:
    from m6gen.data import summary

    ds, split = load_data(args)
    print(format_summary(summary(ds, split)))
    return 0


def format_summary(info: dict) -> str:
    width = max(len(k) for k in info)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in info.items())


def cmd_prompts(args) -> int:
    from m6gen.prompts import TemplateLibrary, user_vars

    ds, split = load_data(args)
    users = pick_users(split, args.user, 1, ds.interactions)
    only = args.template  # asked for by name or path: render just that one
    resolve_template_args(args)
    lib = TemplateLibrary(args.templates, max_history=args.max_history)
    tokenizer = None
    if args.chat_tokenizer:  # chat-style templates render through the model's own chat template
        from m6gen.model import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    retriever = None
    if args.candidates:  # what a candidate template lists: the retriever's items for this history
        from m6gen.candidates import retrieve
        from m6gen.pipeline import load_sasrec

        retriever = load_sasrec(args.candidates, len(ds.catalog))
    templates = [lib.load_template(name) for name in ([only] if only else lib.names())]
    for user in users:
        history = [ds.catalog[i] for i in split.test_history(user)]
        candidates = []
        if retriever is not None:
            found = retrieve(retriever, [split.test_history(user)], args.n_candidates)
            candidates = [ds.catalog[int(i)] for i in found[0]]
        for tpl in templates:
            prompt = tpl.render_prompt(history, user=user_vars(user, ds.profiles), tokenizer=tokenizer,
                                       candidates=candidates)  # fmt: skip
            target = tpl.render_target(ds.catalog[split.test[user]])
            who = f" for user {user}" if len(users) > 1 else ""
            print(f"===== template {tpl.name!r}{who}: {tpl.description}")
            print(prompt + "\u2502" + target + "\u2502  <- target (held out)")
    return 0


def cmd_demo(args) -> int:
    """The README's main job on the embedded defaults."""
    import time

    from m6gen.data import summary
    from m6gen.prompts import user_vars
    from m6gen.rerank import RerankConfig

    print("== data")
    ds, split = load_data(args)
    print(format_summary(summary(ds, split)))
    users = pick_users(split, args.users, args.n_users, ds.interactions)  # a wrong id fails before the model loads
    args.user = users[0]
    args.chat_tokenizer = True
    print("\n== prompts (one per template, for one user; the held-out test item is shown after the prompt)")
    cmd_prompts(args)

    print(f"\n== top-{args.k} recommendations with {args.model or 'the default model (untuned)'}, template {args.template!r}")
    t0 = time.time()
    rec = load_recommender(args, ds.catalog)
    rec.features = item_features(ds, split)
    print(f"   model and trie ready in {time.time() - t0:.1f} s ({rec.trie.n_items} items, {rec.trie.n_nodes} trie nodes)")
    histories = [split.test_history(u) for u in users]
    t0 = time.time()
    results = rec.recommend(histories, RerankConfig(k=args.k), profiles=[user_vars(u, ds.profiles) for u in users], progress=True)
    elapsed = time.time() - t0
    for user, hist, res in zip(users, histories, results):
        target = split.test[user]
        recent = "; ".join(ds.catalog[i].title for i in hist[-3:])
        print(f"\nuser {user}: {len(hist)} items seen, most recent: {recent}")
        for r in res.items:
            mark = "  <- held-out test item" if r.item_id == target else ""
            print(f"  {r.rank:>2}. {ds.catalog[r.item_id].title:<55} logp {r.logprob:8.2f}  p {r.accuracy:.3f}{mark}")
        if not res.filled:
            print(f"  ({res.shortfall()})")
        in_catalog = all(0 <= r.item_id < len(ds.catalog) for r in res.items)
        print(f"  held-out: {ds.catalog[target].title} ({'in' if target in res.item_ids else 'not in'} top-{args.k}); all in catalog: {in_catalog}")
    print(f"\n{len(users)} users in {elapsed:.1f} s ({elapsed / max(len(users), 1):.2f} s/user)")
    return 0


DELEGATES = {"train": "m6gen.train", "recommend": "m6gen.batch", "chat": "m6gen.chat", "eval": "m6gen.evaluate",
             "tune-prompts": "m6gen.tune"}
DELEGATES_HELP = {
    "train": "LoRA-tune the model on the train split (m6gen train --help)",
    "recommend": "top-k lists for many users as JSONL/CSV, resumable (m6gen recommend --help)",
    "chat": "interactive session: type titles you liked, get recommendations (m6gen chat --help)",
    "eval": "full-ranking evaluation against Pop and SASRec (m6gen eval --help)",
    "tune-prompts": "leaderboard of the prompt templates on validation (m6gen tune-prompts --help)",
}


def other_command_options(but: str) -> set[str]:
    """Option names (``max_history``) of every m6gen command except ``but``: keys a shared config file may hold."""
    import importlib

    names: set[str] = set()
    for action in make_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                if command not in DELEGATES:
                    names |= {a.dest for a in sub._actions}
    for command, module in DELEGATES.items():
        if command != but:
            names |= {a.dest for a in importlib.import_module(module).make_parser()._actions}
    return names - {"help", "config", "func"}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m6gen", description="Generative recommendation by constrained generation of item titles.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="data summary, prompts and top-k recommendations on the defaults")
    add_data_args(p), add_template_args(p), add_model_args(p)
    p.add_argument("--users", default=None, help="comma-separated user ids (default: the first --n-users)")
    p.add_argument("--n-users", type=positive_int, default=3, help="how many users to recommend for")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="summary of a data set and its leave-one-out split")
    add_data_args(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("prompts", help="render every template (or only --template) for one user")
    add_data_args(p), add_template_args(p)
    p.add_argument("--user", default=None, help="user id, or a comma list of them (default: the first user)")
    p.add_argument("--model", default=None, help="tokenizer for chat templates (with --chat-tokenizer)")
    p.add_argument("--chat-tokenizer", action="store_true", help="load the model's tokenizer for chat-style templates")
    p.add_argument("--candidates", default=None, help="a saved SASRec folder whose top items candidate templates list")
    p.add_argument("--n-candidates", type=positive_int, default=20, help="items listed (with --candidates)")
    p.set_defaults(func=cmd_prompts)

    for name, helptext in DELEGATES_HELP.items():  # listed here, parsed by their own modules
        sub.add_parser(name, help=helptext, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:  # sub-commands with parsers of their own
        import importlib

        return importlib.import_module(DELEGATES[argv[0]]).main(argv[1:])
    args = parse_with_config(make_parser(), argv)
    return run_guarded(args.func, args)


def run_guarded(func, args) -> int:
    """Run a command; errors a user can cause become one line on stderr, exit status 2."""
    from m6gen.data import DataError
    from m6gen.model import ModelError
    from m6gen.prompts import TemplateError

    try:
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
