"""Benchmark constrained decoding against transformers' unconstrained beam search.

    .venv/bin/python scripts/bench_decode.py                 # everything (about 15-25 min on 2 cores)
    .venv/bin/python scripts/bench_decode.py --users 40 --trie-sizes 10000,100000

Run it on an otherwise idle machine. Prints, measured side by side in one run:
1. throughput: m6gen constrained vs ``model.generate(num_beams=B, max_new_tokens=T)`` on the same
   model, dtype and real MovieLens-100K prompts (template ``titles``, 15 watched titles), batch 8;
   per dtype; plus m6gen at full trie depth (every title can finish) and the constraint time alone;
2. users/s of m6gen over ``--users`` MovieLens users and the projected time for all of them;
3. validity of the untuned default model: share in catalog, duplicates, seen items; open mode's
   share of titles outside the catalog;
4. trie build time and peak memory for synthetic catalogs (a subprocess each, so RSS is its own).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--history", type=int, default=15, help="watched titles per prompt")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--users", type=int, default=200, help="users for users/s and validity")
    p.add_argument("--open-users", type=int, default=8, help="users for open-mode validity")
    p.add_argument("--trie-sizes", default="10000,100000,1000000")
    p.add_argument("--skip", default="", help="comma list of parts to skip: speed,users,trie")
    p.add_argument("--trie-child", type=int, default=None, help=argparse.SUPPRESS)
    return p


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trie_child(n: int) -> None:
    """Subprocess body: tokenize n synthetic titles with the default tokenizer, build the trie."""
    import random

    from m6gen.decoding.trie import CatalogTrie
    from m6gen.model import encode_targets_flat, load_tokenizer

    tok = load_tokenizer()
    rng = random.Random(0)
    words = [w.strip("Ġ") for w in list(tok.get_vocab())[:20000] if w.isascii() and w.strip("Ġ").isalpha()]
    titles = list(
        {
            " "
            + " ".join(rng.choice(words).capitalize() for _ in range(rng.randint(1, 5)))
            + f" ({rng.randint(1920, 2024)})"
            for _ in range(int(n * 1.05))
        }
    )[:n]
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    seqs = encode_targets_flat(tok, titles)  # chunked, as build_catalog_trie does
    t1 = time.perf_counter()
    trie = CatalogTrie.from_sequences(seqs)
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "n": len(titles),
                "tokenize_s": t1 - t0,
                "build_s": t2 - t1,
                "nodes": trie.n_nodes,
                "rss_before_mb": rss0,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]]
    )


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.trie_child:
        trie_child(args.trie_child)
        return 0
    skip = set(filter(None, args.skip.split(",")))

    import numpy as np
    import torch

    from m6gen.data import build_histories, leave_one_out, load_dataset
    from m6gen.decoding.open_ended import open_generate
    from m6gen.decoding.search import constrained_beam_search
    from m6gen.model import build_catalog_trie, encode_prompts, load_model, load_tokenizer
    from m6gen.prompts import TemplateLibrary

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ds = load_dataset()
    split = leave_one_out(build_histories(ds))
    tok = load_tokenizer()
    tpl = TemplateLibrary(max_history=args.history).get("titles")
    targets = [tpl.render_target(it) for it in ds.catalog]
    trie = build_catalog_trie(tok, targets)
    users = split.users
    hist = {u: split.test_history(u) for u in users}
    prompt = {
        u: encode_prompts(tok, [tpl.render_prompt([ds.catalog[i] for i in hist[u]])])[0]
        for u in users[: max(args.users, args.batch, args.open_users)]
    }
    batch = users[: args.batch]
    print(f"prompt tokens (first batch): {[len(prompt[u]) for u in batch]}; trie depth {trie.max_depth}")

    def m6(model, us, max_new, stats=None):
        with torch.no_grad():
            return constrained_beam_search(
                model,
                trie,
                [prompt[u] for u in us],
                args.beams,
                banned=[np.array(hist[u]) for u in us],
                pad_token_id=tok.pad_token_id,
                max_new_tokens=max_new,
                stats=stats,
            )

    if "speed" not in skip:
        rows = []
        for dtype in args.dtypes.split(","):
            model = load_model(dtype=dtype)
            pids = [prompt[u] for u in batch]
            width = max(map(len, pids))
            ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in pids])
            mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in pids])[:, None]).long()
            m6(model, batch[:1], 2)  # warm-up
            t0 = time.perf_counter()
            with torch.no_grad():
                model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    num_beams=args.beams,
                    max_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            hf = time.perf_counter() - t0
            stats: dict = {}
            t0 = time.perf_counter()
            m6(model, batch, args.max_new_tokens, stats)
            ours = time.perf_counter() - t0
            full_stats: dict = {}
            t0 = time.perf_counter()
            m6(model, batch, None, full_stats)
            full = time.perf_counter() - t0
            rows.append(
                [
                    dtype,
                    f"{hf:.1f}",
                    f"{ours:.1f}",
                    f"{hf / ours:.1f}x",
                    f"{stats['constraint_s']:.2f} ({stats['steps']} steps)",
                    f"{full:.1f}",
                    f"{full_stats['constraint_s']:.2f} ({full_stats['steps']} steps)",
                ]
            )
            del model
        print(f"\n## Throughput: {args.batch} prompts, B={args.beams}, max_new_tokens={args.max_new_tokens} (seconds)")
        print(
            table(
                rows,
                [
                    "dtype",
                    "HF generate (unconstrained)",
                    "m6gen constrained",
                    "speed-up",
                    "m6gen constraint time",
                    "m6gen full depth",
                    "constraint time (full)",
                ],
            )
        )

    if "users" not in skip:
        model = load_model(dtype=args.dtypes.split(",")[-1])
        us = users[: args.users]
        t0 = time.perf_counter()
        outs = []
        for s in range(0, len(us), args.batch):
            outs += m6(model, us[s : s + args.batch], None)
        el = time.perf_counter() - t0
        items = [[h.item for h in o] for o in outs]
        n_out = sum(map(len, items))
        in_cat = sum(0 <= i < len(ds.catalog) and trie.lookup(trie.sequence(i)) == i for r in items for i in r)
        dups = sum(len(r) - len(set(r)) for r in items)
        seen = sum(len(set(r) & set(hist[u])) for r, u in zip(items, us))
        opened = open_generate(
            model, tok, [prompt[u] for u in us[: args.open_users]], targets, args.beams, max_new_tokens=24
        )
        n_open = sum(map(len, opened))
        outside = sum(not o.in_catalog for r in opened for o in r)
        print(f"\n## Users ({args.dtypes.split(',')[-1]}, B={args.beams}, batch {args.batch}, full depth)")
        print(
            table(
                [[len(us), f"{el:.1f}", f"{len(us) / el:.2f}", f"{el / len(us) * len(users) / 60:.1f} min"]],
                ["users", "seconds", "users/s", f"projected for all {len(users)}"],
            )
        )
        print("\n## Validity (untuned default model)")
        print(
            table(
                [
                    ["constrained", n_out, f"{in_cat / n_out:.1%}", dups, seen],
                    [f"open ({args.open_users} users)", n_open, f"{(n_open - outside) / n_open:.1%}", "-", "-"],
                ],
                ["mode", "outputs", "in catalog", "duplicates", "seen items"],
            )
        )

    if "trie" not in skip:
        rows = []
        for n in map(int, args.trie_sizes.split(",")):
            out = subprocess.run([sys.executable, __file__, "--trie-child", str(n)], capture_output=True, text=True)
            if out.returncode:
                rows.append([n, "failed", out.stderr.strip().splitlines()[-1][:60], "", ""])
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(
                [
                    r["n"],
                    f"{r['tokenize_s']:.1f}",
                    f"{r['build_s']:.1f}",
                    r["nodes"],
                    f"{r['peak_rss_mb']:.0f}",
                    f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f}",
                ]
            )
        print("\n## Trie build (synthetic titles, default tokenizer)")
        print(
            table(
                rows, ["titles", "tokenize s", "build s", "nodes", "peak RSS MB (process)", "MB above tokenizer+titles"]
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
