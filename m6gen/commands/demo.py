"""``m6gen demo``: the main job on the embedded defaults: data summary, prompts, top-k for a few users.

m6gen demo --users 196,186 --template instruct
"""

from __future__ import annotations

from dataclasses import dataclass

from m6gen.config import (
    DataArgs,
    DecodeArgs,
    DeviceArgs,
    ModelArgs,
    PriorArgs,
    PromptArgs,
    RerankArgs,
    RuntimeArgs,
    option,
)


@dataclass
class DemoArgs:
    """Which users to show."""

    _argument_group_name = "demo"

    users: str | None = option(None, "comma-separated user ids (default: the first --n-users)")
    n_users: int = option(3, "how many users to recommend for")
    quick_prior: bool = option(
        True,
        "an untuned model without --sasrec: train a quick SASRec once (about a minute, cached in data/cache/) "
        "and search with it as the prior, so the lists follow each user's history (--no-quick-prior: the "
        "untuned model alone)",
    )

    def __post_init__(self):
        from m6gen.config import at_least

        at_least(self, 1, "n_users")


GROUPS = [DataArgs, PromptArgs, ModelArgs, DeviceArgs, DecodeArgs, PriorArgs, RerankArgs, RuntimeArgs, DemoArgs]
HELP = "data summary, prompts and top-k recommendations on the defaults"


def run(args) -> int:
    import time

    from m6gen.commands import prompts
    from m6gen.commands.common import format_summary, item_features, load_data, load_recommender, pick_users
    from m6gen.config import check_k_fits_beams
    from m6gen.data import summary
    from m6gen.prompts import user_vars
    from m6gen.ranking.rerank import RerankConfig

    check_k_fits_beams(args.groups[RerankArgs], args.groups[DecodeArgs])
    print("== data")
    ds, split = load_data(args)
    print(format_summary(summary(ds, split)))
    users = pick_users(split, args.users, args.n_users, ds.interactions)  # a wrong id fails before the model loads
    args.users, args.chat_tokenizer = users[0], True
    print("\n== prompts (one per template, for one user; the held-out test item is shown after the prompt)")
    prompts.run(args)

    quick = args.quick_prior and args.sasrec is None and not is_trained_run(args.model)
    if quick:
        args.sasrec, args.sasrec_weight = quick_sasrec(split, len(ds.catalog), args.progress), QUICK_PRIOR_WEIGHT
    model = args.model or "the default model (untuned)"
    print(f"\n== top-{args.k} recommendations with {model}, template {args.template!r}")
    t0 = time.time()
    rec = load_recommender(args, ds.catalog, preview=(split.test_history(users[0]), user_vars(users[0], ds.profiles)))
    rec.features = item_features(ds, split)
    print(
        f"   model and trie ready in {time.time() - t0:.1f} s ({rec.trie.n_items} items, {rec.trie.n_nodes} trie nodes)"
    )
    histories = [split.test_history(u) for u in users]
    t0 = time.time()
    rerank = RerankConfig(k=args.k, diversity=args.diversity, novelty=args.novelty)
    profiles = [user_vars(u, ds.profiles) for u in users]
    results = rec.recommend(histories, rerank, profiles=profiles, progress=args.progress)
    elapsed = time.time() - t0
    print(LIST_COLUMNS)
    for user, hist, res in zip(users, histories, results):
        show_list(ds, split, user, hist, res, args.k)
    print(f"\n{len(users)} users in {elapsed:.1f} s ({elapsed / max(len(users), 1):.2f} s/user)")
    if quick:
        print(
            f"\nThe lists above are the untuned language model searched with a quick SASRec as its prior "
            f"(weight {QUICK_PRIOR_WEIGHT:g}; --no-quick-prior shows the model alone). A trained run "
            "(m6gen train, docs/training.md) teaches the model itself to continue a history with the next "
            "title; docs/results.md has what each adds."
        )
    return 0


QUICK_PRIOR_WEIGHT = 10.0  # the decoding weight chosen on validation in docs/results.md
# A fixed length, not a time budget, so that every machine caches the same prior: 20 epochs take
# about a minute on 2 idle cores (validation NDCG@10 about 0.12; SASRec's own early stop ends near 0.13).
QUICK_SASREC_EPOCHS = 20


def is_trained_run(model: str | None) -> bool:
    from m6gen.runs import trained_run_config

    return trained_run_config(model) is not None


def quick_sasrec(split, n_items: int, progress: bool) -> str:
    """A SASRec trained for ``QUICK_SASREC_EPOCHS`` epochs on this split's training interactions (its best
    epoch on validation kept), saved once in ``data/cache/demo-sasrec-<split fingerprint>-e<epochs>`` and
    reused by later demos; returns its folder."""
    import os
    import time
    from pathlib import Path

    from m6gen.baselines.config import SASRecConfig
    from m6gen.baselines.run import split_fingerprint
    from m6gen.baselines.sasrec import fit
    from m6gen.data import default_data_dir

    cache = os.environ.get("M6GEN_CACHE") or default_data_dir(must_exist=False).parent  # data/cache by default
    folder = Path(cache) / f"demo-sasrec-{split_fingerprint(split)}-e{QUICK_SASREC_EPOCHS}"
    if (folder / "sasrec.json").is_file() and not (folder / "resume.pt").is_file():
        print(f"   quick SASRec prior: {folder} (cached)")
        return str(folder)
    t0 = time.time()
    print(f"   quick SASRec prior: training {QUICK_SASREC_EPOCHS} epochs once (about a minute on 2 cores)")
    config = SASRecConfig(epochs=QUICK_SASREC_EPOCHS)
    model = fit(split, n_items, config, valid=True, progress=progress, checkpoint=folder)
    model.save(folder)
    (folder / "resume.pt").unlink(missing_ok=True)  # finished: what is there now is the model to reuse
    best = max(row["valid_NDCG@10"] for row in model.log)
    print(
        f"   quick SASRec prior: trained in {time.time() - t0:.0f} s (validation NDCG@10 {best:.4f}), "
        f"cached in {folder}"
    )
    return str(folder)


LIST_COLUMNS = (
    "   logp: the language model's log-probability of the title alone; p: the item's share of the search's\n"
    "   score (the language model, plus the prior where one is used) among the user's beams, which orders the list"
)


def show_list(ds, split, user: str, hist: list[int], res, k: int) -> None:
    from m6gen.commands.common import pad

    target = split.test[user]
    recent = "; ".join(ds.catalog[i].title for i in hist[-3:])
    print(f"\nuser {user}: {len(hist)} items seen, most recent: {recent}")
    for r in res.items:
        mark = "  <- held-out test item" if r.item_id == target else ""
        print(f"  {r.rank:>2}. {pad(ds.catalog[r.item_id].title, 55)} logp {r.logprob:8.2f}  p {r.accuracy:.3f}{mark}")
    if not res.filled:
        print(f"  ({res.shortfall()})")
    found = "in" if target in res.item_ids else "not in"
    print(f"  held-out: {ds.catalog[target].title} ({found} top-{k})")


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen demo", HELP, run, argv)
