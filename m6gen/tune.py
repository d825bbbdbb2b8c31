"""``m6gen tune-prompts``: a leaderboard of the prompt templates on the validation split.

    m6gen tune-prompts --max-users 100                       # zero-shot, every template in prompts/
    m6gen tune-prompts --templates my_prompts/ --history 10,20 --write-config m6gen.yaml
    m6gen tune-prompts --train-steps 200 --max-users 100     # after a short LoRA run per template

Each template (and each history length asked for) is scored on the same validation users with
constrained decoding: NDCG@10, HR@10, catalog coverage@10 (share of the catalog in anyone's
top 10), mean prompt tokens and seconds. The winner's name (and history length) is written to
``--write-config`` (YAML), which ``m6gen train/recommend/eval --config`` read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from m6gen.cli import UsageError


def make_parser() -> argparse.ArgumentParser:
    from m6gen.cli import add_data_args, add_model_args, comma_list, nonnegative_int, positive_int

    p = argparse.ArgumentParser(prog="m6gen tune-prompts", description="Leaderboard of prompt templates on validation.")
    add_data_args(p), add_model_args(p, prior=False)
    p.add_argument("--templates", default=None, help="extra folder of .jinja templates (searched before prompts/)")
    p.add_argument("--only", default=None, help="comma list of template names (default: all)")
    p.add_argument("--history", default="20", type=comma_list(positive_int), help="comma list of history lengths to try (the knob search)")
    p.add_argument("--max-users", type=positive_int, default=100, help="validation users scored")
    p.add_argument("--train-steps", type=nonnegative_int, default=0, help="short LoRA run per template before scoring (0: zero-shot)")
    p.add_argument("--write-config", default="m6gen.yaml", help="YAML file to record the best template in ('' to skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def score_template(rec, histories, targets, profiles: list[dict] | None = None, progress: bool = False) -> dict[str, float]:
    from m6gen.metrics import catalog_coverage, hit_rate_at_k, ndcg_at_k

    t0 = time.perf_counter()
    beams = rec.generate(histories, profiles=profiles, progress=progress)
    seconds = time.perf_counter() - t0
    ranked = [np.array([h.item for h in b], dtype=np.int64) for b in beams]
    prompt_tokens = np.mean([len(rec.tokenizer(p)["input_ids"]) for p in rec.prompts(histories, profiles)])
    # Every output is a catalog item by construction (the trie), so validity would always read 1.0;
    # coverage tells whether a template makes the model recommend the same few titles to everyone.
    return {"NDCG@10": ndcg_at_k(ranked, targets, 10), "HR@10": hit_rate_at_k(ranked, targets, 10),
            "coverage@10": catalog_coverage(ranked, len(rec.catalog), 10), "prompt_tokens": float(prompt_tokens),
            "seconds": seconds}  # fmt: skip


def run(args) -> int:
    from m6gen.cli import load_data
    from m6gen.metrics import format_table
    from m6gen.model import load_model, load_tokenizer
    from m6gen.pipeline import RecommendConfig, Recommender, load_sasrec
    from m6gen.prompts import TemplateLibrary, user_vars

    lib = TemplateLibrary(args.templates)
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else lib.names()
    lengths = [int(x) for x in args.history.split(",") if x.strip()]
    if not names or not lengths:
        raise UsageError(f"nothing to score: --only {args.only!r} --history {args.history!r}")
    templates = {(name, n): lib.load_template(name, max_history=n) for name in names for n in lengths}
    ds, split = load_data(args)
    users = split.users[: args.max_users]
    histories = [split.valid_history(u) for u in users]
    profiles = [user_vars(u, ds.profiles) for u in users]
    targets = np.array([split.valid[u] for u in users])
    # every template renders its prompts and the catalog's targets before the first one costs minutes of scoring
    for template in templates.values():
        template.render_targets(ds.catalog)
        for hist, prof in zip(histories, profiles):
            template.render_prompt([ds.catalog[i] for i in hist], user=prof)
    tokenizer = load_tokenizer(args.model, args.gguf_file)
    base = None if args.train_steps else load_model(args.model, args.gguf_file, dtype=args.dtype, device=args.device)
    # a retriever: every template is scored on ranking its candidates (candidate templates list them)
    retriever = load_sasrec(args.candidates, len(ds.catalog)) if args.candidates else None
    args.n_candidates = args.n_candidates or RecommendConfig.n_candidates  # short_train reads it too
    rows: dict[str, dict[str, float]] = {}
    for name in names:
        for max_history in lengths:
            label = f"{name} (history {max_history})"
            template = templates[name, max_history]
            model = base if base is not None else short_train(args, name, max_history)
            cfg = RecommendConfig(template=name, max_history=max_history, num_beams=args.beams, batch_size=args.batch_size,
                                  rank_by=args.rank_by, n_candidates=args.n_candidates)  # fmt: skip
            rec = Recommender(model, tokenizer, ds.catalog, template, cfg, retriever=retriever)
            rows[label] = score_template(rec, histories, targets, profiles, progress=not args.no_progress)
            print(f"{label}: NDCG@10 {rows[label]['NDCG@10']:.4f}, HR@10 {rows[label]['HR@10']:.4f}", flush=True)
    board = dict(sorted(rows.items(), key=lambda kv: -kv[1]["NDCG@10"]))
    mode = f"after {args.train_steps} LoRA steps" if args.train_steps else "zero-shot"
    print(f"\nvalidation, {len(users)} users, {mode}, {args.beams} beams:\n")
    print(format_table(board, ["NDCG@10", "HR@10", "coverage@10", "prompt_tokens", "seconds"]))
    best = next(iter(board))
    best_name, best_len = best.rsplit(" (history ", 1)[0], int(best.rsplit(" ", 1)[1].rstrip(")"))
    print(f"\nbest: {best_name} with history {best_len}")
    if args.write_config:
        record_best(Path(args.write_config), best_name, best_len, args.templates)
        print(f"recorded in {args.write_config} (used by `--config {args.write_config}`)")
    return 0


def short_train(args, template: str, max_history: int):
    """A short LoRA run for one template; returns the tuned model (its run folder is removed)."""
    import shutil
    import tempfile

    from m6gen.train import load_trained
    from m6gen.train import main as train_main

    out = Path(tempfile.mkdtemp(prefix=f"m6gen-tune-{template}-"))
    # The run's own validation is not used (each template is scored below, on --max-users users):
    # skip it at the start and keep it to one user at the end, where train always validates.
    argv = ["--template", template, "--max-history", str(max_history), "--max-steps", str(args.train_steps),
            "--output-dir", str(out), "--eval-every", "0", "--no-eval-at-start", "--eval-users", "1",
            "--final-adapter", "last"]  # fmt: skip
    if args.model:
        argv += ["--model", args.model]
    if args.gguf_file:
        argv += ["--gguf-file", args.gguf_file]
    if args.templates:
        argv += ["--templates", args.templates]
    if args.data:
        argv += ["--data", args.data]
    # the same data, read the same way, as the templates are scored on
    argv += ["--format", args.format, "--dedupe", args.dedupe, "--unknown-items", args.unknown_items]
    if args.title_field:
        argv += ["--title-field", args.title_field]
    if args.candidates:
        argv += ["--candidates", args.candidates, "--n-candidates", str(args.n_candidates)]
    try:
        if train_main(argv) != 0:  # train has printed why
            raise UsageError(f"the short training run of template {template!r} failed (its error is above)")
        return load_trained(out, dtype=args.dtype, merge=True, device=args.device)[0]  # merged: weights in memory, folder not needed
    finally:
        shutil.rmtree(out, ignore_errors=True)


def record_best(path: Path, template: str, max_history: int, templates: str | None = None) -> None:
    """Set ``template``, ``max_history`` and the template folder (if any) in a YAML config, keeping its other keys."""
    import yaml

    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    data = data or {}
    data.update({"template": template, "max_history": max_history})
    if templates:  # an absolute path: the config may be read from another folder
        data["templates"] = str(Path(templates).expanduser().resolve())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    from m6gen.cli import parse_with_config, run_guarded

    args = parse_with_config(make_parser(), argv)
    return run_guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
