"""Benchmark what collaborative tokens change in cost: prompt tokens, training throughput, decoding speed.

    .venv/bin/python scripts/bench_hybrid.py --cf-source runs/hybrid/baselines/sasrec
    .venv/bin/python scripts/bench_hybrid.py --cf-source runs/hybrid/baselines/sasrec --templates sequence,hybrid_recent

For each template, on the default model and MovieLens-100K, in one run: the mean prompt tokens of
test histories; training (one LoRA model with the projector attached, the target-only loss, AdamW):
tokens/s and next items taught per second over ``--train-steps`` optimizer steps of packed batches
built as ``m6gen train`` builds them (history blocks where the template is token-incremental, one
example per next item otherwise); decoding: users/s of ``Recommender.generate`` (20 beams) on the
same ``--users``. Speed does not depend on the weights, so the projector is left untrained.
Run it on an otherwise idle machine: the ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import time

from bench_decode import cpu_model


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cf-source", required=True, help="a saved SASRec folder or an items x d .npy/.safetensors")
    p.add_argument("--templates", default="sequence,hybrid,hybrid_recent")
    p.add_argument("--users", type=int, default=32, help="users decoded per template")
    p.add_argument("--train-steps", type=int, default=6, help="timed optimizer steps per template")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv=None) -> None:
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    from m6gen.data import build_histories, item_popularity, leave_one_out, load_dataset
    from m6gen.hybrid import attach, load_item_table
    from m6gen.hybrid.soft_tokens import PROJECTOR
    from m6gen.model import encode_prompts, encode_targets, load_model, load_tokenizer
    from m6gen.prompts import TemplateLibrary
    from m6gen.recommender import RecommendConfig, Recommender
    from m6gen.training import examples as td
    from m6gen.training.lora import LLAMA_LIKE
    from m6gen.training.loss import loss_module

    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset()
    split = leave_one_out(build_histories(ds))
    tok = load_tokenizer()
    model = load_model()
    table = load_item_table(args.cf_source, len(ds.catalog), trained=item_popularity(split, len(ds.catalog)) > 0)
    embedding = attach(model, table, offset=len(tok))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=LLAMA_LIKE, modules_to_save=[PROJECTOR], task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    users = split.users[: args.users]
    print(f"{cpu_model()}, float32, {torch.get_num_threads()} threads; {args.users} users, 20 beams")
    rows = []
    for name in args.templates.split(","):
        template = TemplateLibrary(max_history=20).get(name)
        reads_cf = "it.cf" in template.path.read_text()
        soft = td.SoftTokens(embedding) if reads_cf else None
        prompts = [
            template.render_prompt([ds.catalog[i] for i in split.test_history(u)], tokenizer=tok, cf=soft)
            for u in split.users[:200]
        ]
        prompt_tokens = float(np.mean([len(p) for p in encode_prompts(tok, prompts)]))
        target_ids = encode_targets(tok, template.render_targets(ds.catalog))
        packed = td.is_token_incremental(template, tok, ds.catalog, target_ids, split.train, soft=soft)
        if packed:
            blocks = td.sample_blocks(split.train, block=20, per_user=1)
            exs, _ = td.build_block_examples(blocks, split.train, ds.catalog, template, tok, target_ids, soft=soft)
        else:
            steps = td.sample_steps(split.train, per_user=2)
            exs, _ = td.build_examples(steps, split.train, ds.catalog, template, tok, target_ids, soft=soft)
        batches = td.plan_batches([len(x) for x in exs], pack_len=512, batch_size=2)
        module = loss_module(model)
        module.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        tokens = items = 0
        t0 = None
        for step, batch in enumerate(batches[: args.train_steps + 1]):
            if step == 1:  # the first step warms up
                t0, tokens, items = time.perf_counter(), 0, 0
            b = td.collate([[exs[i] for i in row] for row in batch], tok.pad_token_id, len(tok))
            loss, _ = module(b["input_ids"], b["labels"], b["position_ids"])
            loss.backward()
            opt.step()
            opt.zero_grad()
            tokens += b["n_tokens"]
            items += sum(len(exs[i].items) for row in batch for i in row)
        train_s = time.perf_counter() - t0
        model.eval()
        rec = Recommender(model, tok, ds.catalog, template, RecommendConfig(beams=20, batch_size=8))
        t0 = time.perf_counter()
        rec.generate([split.test_history(u) for u in users])
        decode_s = time.perf_counter() - t0
        rows.append((name, prompt_tokens, packed, tokens / train_s, items / train_s, len(users) / decode_s))
    print("\n| template | prompt tokens | history packing | train tokens/s | next items taught/s | decode users/s |")
    print("|---|---:|---|---:|---:|---:|")
    for name, pt, packed, tps, ips, ups in rows:
        print(f"| {name} | {pt:.1f} | {'yes' if packed else 'no'} | {tps:.0f} | {ips:.2f} | {ups:.3f} |")


if __name__ == "__main__":
    main()
