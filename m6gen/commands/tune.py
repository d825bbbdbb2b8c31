"""``m6gen tune-prompts``: a leaderboard of the prompt templates on the validation split.

    m6gen tune-prompts --tune-users 100                      # zero-shot, every template in prompts/
    m6gen tune-prompts --templates my_prompts/ --history-lengths 10,20 --write-config m6gen.yaml
    m6gen tune-prompts --train-steps 200 --tune-users 100    # after a short LoRA run per template

Each template (and each history length asked for) is scored on the same validation users with
constrained decoding: NDCG@10, HR@10, catalog coverage@10 (share of the catalog in anyone's
top 10), mean prompt tokens and seconds; at @5 with ``--beams 5``, since the lists hold the beams.
The winner's name (and history length) is written to ``--write-config`` (YAML), which
``m6gen train/recommend/eval --config`` read.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m6gen.commands.common import UsageError
from m6gen.config import (
    ConfigError,
    DataArgs,
    DecodeArgs,
    DeviceArgs,
    HybridArgs,
    ModelArgs,
    PromptArgs,
    RuntimeArgs,
    at_least,
    option,
)


@dataclass
class TuneArgs:
    """What the leaderboard tries."""

    _argument_group_name = "tune-prompts"

    history_lengths: str = option("20", "comma list of history lengths to try (each template with each)")
    tune_users: int = option(100, "validation users scored")
    train_steps: int = option(0, "short LoRA run per template before scoring (0: zero-shot)")
    write_config: str = option("m6gen.yaml", "YAML file to record the best template in ('' to skip)")

    def __post_init__(self):
        at_least(self, 1, "tune_users")
        at_least(self, 0, "train_steps")
        for part in filter(None, (x.strip() for x in self.history_lengths.split(","))):
            if not part.isdigit() or int(part) < 1:
                raise ConfigError(f"history_lengths: expected a comma list of whole numbers >= 1, got {part!r}")


@dataclass
class TunePromptArgs(PromptArgs):
    """How a history becomes a prompt; the leaderboard tries several templates and lengths."""

    template: str | None = option(None, "comma list of the templates to score (default: every template found)")
    max_history: int | None = option(None, "not used here: give the lengths to try with --history-lengths")


GROUPS = [DataArgs, TunePromptArgs, ModelArgs, DeviceArgs, DecodeArgs, HybridArgs, TuneArgs, RuntimeArgs]
HELP = "leaderboard of the prompt templates on validation (--template a,b: only those)"


def score_template(
    rec, histories, targets, profiles: list[dict] | None = None, progress: bool = False, k: int = 10
) -> dict[str, float]:
    """NDCG, HR and catalog coverage at ``k`` of the template's lists, with its prompt length and time.

    The keys name ``k`` (``NDCG@5`` for lists of 5 beams), so a table never labels @10 what is @5.
    """
    from m6gen.model import encode_prompts
    from m6gen.ranking.metrics import catalog_coverage, hit_rate_at_k, ndcg_at_k, per_user_scores

    t0 = time.perf_counter()
    beams = rec.generate(histories, profiles=profiles, progress=progress)
    seconds = time.perf_counter() - t0
    ranked = [np.array([h.item for h in b], dtype=np.int64) for b in beams]
    prompt_tokens = np.mean([len(ids) for ids in encode_prompts(rec.tokenizer, rec.prompts(histories, profiles))])
    # Every output is a catalog item by construction (the trie), so validity would always read 1.0;
    # coverage tells whether a template makes the model recommend the same few titles to everyone.
    return {
        "per_user_NDCG": per_user_scores(ranked, targets, k)["NDCG"],
        f"NDCG@{k}": ndcg_at_k(ranked, targets, k),
        f"HR@{k}": hit_rate_at_k(ranked, targets, k),
        f"coverage@{k}": catalog_coverage(ranked, len(rec.catalog), k),
        "prompt_tokens": float(prompt_tokens),
        "seconds": seconds,
    }


def run(args) -> int:
    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.commands.common import load_data
    from m6gen.model import load_model, load_tokenizer
    from m6gen.prompts import TemplateLibrary, user_vars
    from m6gen.ranking.metrics import format_table
    from m6gen.recommender import RecommendConfig, Recommender

    lib = TemplateLibrary(args.templates)
    if args.write_config:  # before minutes of scoring, not after
        check_config_target(Path(args.write_config))
    if args.max_history is not None:
        raise UsageError(
            "--max-history: tune-prompts tries each of --history-lengths (now "
            f"{args.history_lengths!r}); give the lengths there"
        )
    names = [n.strip() for n in args.template.split(",") if n.strip()] if args.template else lib.names()
    lengths = [int(x) for x in args.history_lengths.split(",") if x.strip()]
    if not names or not lengths:
        raise UsageError(f"nothing to score: --template {args.template!r} --history-lengths {args.history_lengths!r}")
    templates = {(name, n): lib.load_template(name, max_history=n) for name in names for n in lengths}
    ds, split = load_data(args)
    users = split.users[: args.tune_users]
    histories = [split.valid_history(u) for u in users]
    profiles = [user_vars(u, ds.profiles) for u in users]
    targets = np.array([split.valid[u] for u in users])
    # every template renders its prompts and the catalog's targets before the first one costs minutes of scoring
    for template in templates.values():
        template.render_targets(ds.catalog)
        for hist, prof in zip(histories, profiles):
            template.render_prompt([ds.catalog[i] for i in hist], user=prof)
    from m6gen.hybrid.placeholders import places_tokens
    from m6gen.runs import load_trained, trained_run_config

    if args.cf_source and not args.train_steps:
        raise UsageError(
            "--cf-source trains a projector for collaborative tokens: give --train-steps N "
            "(or score a run trained with --cf-source: --model RUN)"
        )
    if trained_run_config(args.model) is not None and not args.train_steps:  # a run: its adapter (and cf tokens)
        base, tokenizer, _ = load_trained(args.model, dtype=args.dtype, merge=True, device=args.device)
    else:
        tokenizer = load_tokenizer(args.model, args.gguf_file)
        base = None
        if not args.train_steps:
            base = load_model(args.model, args.gguf_file, dtype=args.dtype, device=args.device)
    # a retriever: every template is scored on ranking its candidates (candidate templates list them)
    retriever = load_sasrec(args.candidates, len(ds.catalog)) if args.candidates else None
    args.n_candidates = args.n_candidates or 20  # short_train reads it too
    if retriever is None:  # scored without candidates, such a template could only score 0
        skipped = [n for n in names if templates[n, lengths[0]].reads("candidates")]
        if skipped:
            print(
                f"note: skipping {', '.join(skipped)}: it lists a retriever's candidates; pass --candidates DIR "
                "(a saved SASRec) to score it",
                file=sys.stderr,
            )
            names = [n for n in names if n not in skipped]
    if not names:
        raise UsageError(
            "nothing to score: every template asked for lists a retriever's candidates; "
            "pass --candidates DIR (a saved SASRec)"
        )
    k = min(10, args.beams)  # the lists hold --beams items: with 5 beams the table is @5, not @10
    ndcg, hr = f"NDCG@{k}", f"HR@{k}"
    rows: dict[str, dict[str, float]] = {}
    for name in names:
        for max_history in lengths:
            label = f"{name} (history {max_history})"
            template = templates[name, max_history]
            with_cf = places_tokens(template, ds.catalog.items[:3])
            model = base if base is not None else short_train(args, name, max_history, with_cf)
            cfg = RecommendConfig(
                template=name,
                max_history=max_history,
                beams=args.beams,
                batch_size=args.batch_size,
                rank_by=args.rank_by,
                n_candidates=args.n_candidates,
            )
            rec = Recommender(model, tokenizer, ds.catalog, template, cfg, retriever=retriever)
            rows[label] = score_template(rec, histories, targets, profiles, progress=args.progress, k=k)
            print(f"{label}: {ndcg} {rows[label][ndcg]:.4f}, {hr} {rows[label][hr]:.4f}", flush=True)
    board = dict(sorted(rows.items(), key=lambda kv: -kv[1][ndcg]))
    mode = f"after {args.train_steps} LoRA steps" if args.train_steps else "zero-shot"
    print(f"\nvalidation, {len(users)} users, {mode}, {args.beams} beams:\n")
    columns = [ndcg, hr, f"coverage@{k}", "prompt_tokens", "seconds"]
    print(format_table(board, columns, digits={"prompt_tokens": 1, "seconds": 1}))
    best = next(iter(board))
    top = board[best][ndcg]
    tied = [label for label, row in board.items() if row[ndcg] == top]
    if len(tied) > 1:  # the board's order among them is only the order they were scored in
        kept = f"; {args.write_config} left as it was" if args.write_config else ""
        print(
            f"\nno best: {len(tied)} of {len(board)} tie at {ndcg} {top:.4f} on {len(users)} users "
            f"({', '.join(tied[:3])}{', ...' if len(tied) > 3 else ''}){kept}. Score more users "
            "(--tune-users)" + (", or train each first (--train-steps N)" if not args.train_steps else "")
        )
        return 0
    warn_if_within_noise(board)
    best_name, best_len = best.rsplit(" (history ", 1)[0], int(best.rsplit(" ", 1)[1].rstrip(")"))
    print(f"\nbest: {best_name} with history {best_len}")
    if args.write_config:
        record_best(Path(args.write_config), best_name, best_len, args.templates)
        print(f"recorded in {args.write_config} (used by `--config {args.write_config}`)")
    return 0


def warn_if_within_noise(board: dict[str, dict]) -> None:
    """Say so when the leader's lead over the runner-up is within a paired bootstrap's 95% interval."""
    from m6gen.ranking.metrics import paired_bootstrap

    if len(board) < 2:
        return
    (first, a), (second, b) = list(board.items())[:2]
    test = paired_bootstrap(a["per_user_NDCG"], b["per_user_NDCG"], n_resamples=2000)
    if test["diff_low"] <= 0:
        print(
            f"note: the lead of {first!r} over {second!r} is within noise: NDCG difference {test['diff']:+.4f}, "
            f"95% interval [{test['diff_low']:+.4f}, {test['diff_high']:+.4f}] over {len(a['per_user_NDCG'])} "
            "users; score more users (--tune-users) before trusting the winner",
            file=sys.stderr,
        )


def short_train(args, template: str, max_history: int, with_cf: bool = False):
    """A short LoRA run for one template (with ``with_cf``, its collaborative tokens from --cf-source
    train too); returns the tuned model (its run folder is removed)."""
    import shutil
    import tempfile
    from dataclasses import asdict

    from m6gen.commands.common import library_notes_silenced
    from m6gen.config import DataArgs, TrainConfig
    from m6gen.runs import load_trained
    from m6gen.training.loop import train

    out = Path(tempfile.mkdtemp(prefix=f"m6gen-tune-{template}-"))
    # The run's own validation is not used (each template is scored below, on --tune-users users):
    # skip it at the start and keep it to one user at the end, where train always validates.
    cfg = TrainConfig(
        **asdict(args.groups[DataArgs]),
        **(asdict(args.groups[HybridArgs]) if with_cf else {}),  # a template without tokens trains on titles
        template=template,
        max_history=max_history,
        templates=args.templates,
        candidates=args.candidates,
        n_candidates=args.n_candidates,
        model=args.model,
        gguf_file=args.gguf_file,
        max_steps=args.train_steps,
        output_dir=str(out),
        eval_every=0,
        eval_at_start=False,
        eval_users=1,
        final_adapter="last",
        overwrite=True,
        progress=args.progress,
    )
    try:
        with library_notes_silenced():
            train(cfg)
        return load_trained(out, dtype=args.dtype, merge=True, device=args.device)[0]  # weights in memory
    finally:
        shutil.rmtree(out, ignore_errors=True)


def check_config_target(path: Path) -> None:
    """A one-line error unless --write-config can be written: its folder exists and it is not a folder."""
    from m6gen.commands.common import UsageError

    if path.is_dir():
        raise UsageError(f"--write-config {path}: is a folder; name a .yaml file")
    if not path.parent.is_dir():
        raise UsageError(f"--write-config {path}: its folder {path.parent} does not exist")


def record_best(path: Path, template: str, max_history: int, templates: str | None = None) -> None:
    """Set ``template``, ``max_history`` (and ``templates``) in the YAML file ``path``, keeping every
    other line, comments included, and a key's place under a group heading (``prompts:``) where the
    file nests it there; keys not there yet are appended at the top level."""
    import json
    import re

    from m6gen.files import write_atomic

    values = {"template": template, "max_history": max_history}
    if templates:  # an absolute path: the config may be read from another folder
        values["templates"] = str(Path(templates).expanduser().resolve())
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for key, value in values.items():
        text = f"{key}: {json.dumps(value, ensure_ascii=False)}"  # JSON scalars are YAML scalars
        pattern = re.compile(rf"^(\s*){key}\s*:[^#]*(#.*)?$")
        hits = [i for i, line in enumerate(lines) if pattern.match(line)]
        for i in hits:
            indent, comment = pattern.match(lines[i]).groups()
            lines[i] = f"{indent}{text}  {comment}" if comment else f"{indent}{text}"
        if not hits:
            lines.append(text)
    write_atomic(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen tune-prompts", HELP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
