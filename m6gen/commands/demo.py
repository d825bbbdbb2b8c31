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

    def __post_init__(self):
        from m6gen.config import _at_least

        _at_least(self, 1, "n_users")


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
    for user, hist, res in zip(users, histories, results):
        show_list(ds, split, user, hist, res, args.k)
    print(f"\n{len(users)} users in {elapsed:.1f} s ({elapsed / max(len(users), 1):.2f} s/user)")
    return 0


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
