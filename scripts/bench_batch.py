"""Users per second of batch recommendation at several batch sizes, constrained vs unconstrained.

    .venv/bin/python scripts/bench_batch.py                       # batch sizes 1, 8, 32; 32 users each
    .venv/bin/python scripts/bench_batch.py --users 16 --beams 10 --dtype bfloat16

Run it on an otherwise idle machine. Both modes use the same model, dtype, beams and real
MovieLens-100K prompts (template ``titles``, sorted by length into batches); "unconstrained" is transformers'
``generate(num_beams=B, num_return_sequences=B)`` capped at the catalog's longest title.
"""

from __future__ import annotations

import argparse
import sys
import time


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=32, help="users per measurement")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--history", type=int, default=20)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--modes", default="constrained,unconstrained")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import numpy as np
    import torch

    from m6gen.data import build_histories, leave_one_out, load_dataset
    from m6gen.decoding.open_ended import open_generate
    from m6gen.decoding.search import constrained_beam_search
    from m6gen.model import build_catalog_trie, encode_prompts, load_model, load_tokenizer
    from m6gen.prompts import TemplateLibrary

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "CPU")
    ds = load_dataset()
    split = leave_one_out(build_histories(ds))
    tok, model = load_tokenizer(), load_model(dtype=args.dtype)
    tpl = TemplateLibrary(max_history=args.history).get("titles")
    targets = [tpl.render_target(it) for it in ds.catalog]
    trie = build_catalog_trie(tok, targets)
    users = split.users[: args.users]
    hist = [split.test_history(u) for u in users]
    prompts = encode_prompts(tok, [tpl.render_prompt([ds.catalog[i] for i in h]) for h in hist])
    order = np.argsort([len(p) for p in prompts], kind="stable")  # as Recommender.generate batches them
    prompts, hist = [prompts[i] for i in order], [hist[i] for i in order]

    rows = []
    for bs in map(int, args.batch_sizes.split(",")):
        row = [str(bs)]
        for mode in args.modes.split(","):
            t0 = time.perf_counter()
            for s in range(0, len(users), bs):
                p = prompts[s : s + bs]
                with torch.no_grad():
                    if mode == "constrained":
                        constrained_beam_search(
                            model,
                            trie,
                            p,
                            args.beams,
                            banned=[np.array(h) for h in hist[s : s + bs]],
                            pad_token_id=tok.pad_token_id,
                        )
                    else:
                        open_generate(model, tok, p, targets, args.beams, max_new_tokens=trie.max_depth)
            el = time.perf_counter() - t0
            row.append(f"{len(users) / el:.3f}")
        rows.append(row)
        print(
            f"batch {bs}: " + ", ".join(f"{m} {v} users/s" for m, v in zip(args.modes.split(","), row[1:])), flush=True
        )

    header = ["batch size"] + [f"{m} users/s" for m in args.modes.split(",")]
    if len(header) == 3:
        header.append("ratio")
        rows = [r + [f"{float(r[1]) / float(r[2]):.1f}x"] for r in rows]
    print(f"\n{cpu}: {len(users)} users, B={args.beams}, {args.dtype}, {torch.get_num_threads()} threads")
    print("| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
