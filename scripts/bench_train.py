"""Benchmark LoRA training: the training loop's tokens/s against a bare forward+backward+step, and the epoch time.

    .venv/bin/python scripts/bench_train.py                         # default model, ML-100K, 8 timed steps
    .venv/bin/python scripts/bench_train.py --steps 12 --threads 1 --mixed-precision bf16 --hf-loss

Both loops train the same LoRA model (two copies of one loaded base) on the same micro-batches,
interleaved step by step (a ``m6gen.training.loop.train`` step, then the bare step on the same batches),
so a busy machine slows both alike. "loop" is the wall time between consecutive training steps
(collation, accelerate, logging, everything but the final save); "bare" is only
``loss.backward(); optimizer.step()`` on batches collated beforehand, with the same target-only
loss. ``--hf-loss`` also times the usual ``model(..., labels=...).loss`` (full-vocabulary logits
at every position) to show what the target-only output layer saves. The epoch projection is the
measured seconds per token times the tokens of one epoch: as configured (``--examples-per-user``)
with every next-item step of every user, and with every step taught by history packing
(``prompts/sequence.jinja`` unless the configured template is token-incremental itself).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    p.add_argument("--hf-loss", action="store_true", help="also time the standard full-logits loss")
    for flag, kind, default in [
        ("--model", str, "default"),
        ("--data", str, None),
        ("--template", str, "titles"),
        ("--max-history", int, None),
        ("--examples-per-user", int, None),
        ("--history-block", int, None),
        ("--train-batch-size", int, None),
        ("--pack-len", int, None),
        ("--lora-r", int, None),
        ("--mixed-precision", str, None),
        ("--threads", int, None),
    ]:
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--target-modules", nargs="+", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        print("error: --warmup and --steps must be >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        return bench(args, Path(tmp))


def bench(args: argparse.Namespace, tmp: Path) -> int:
    """Run the benchmark with its two output folders under ``tmp``; prints the table."""
    import numpy as np
    import torch

    from m6gen.config import TrainConfig
    from m6gen.model import encode_targets, load_model, load_tokenizer
    from m6gen.training import examples as td
    from m6gen.training.loop import train
    from m6gen.training.prepare import prepare_run
    from m6gen.training.run_folder import resolve_paths

    options = {k: v for k, v in vars(args).items() if v is not None and k not in ("steps", "warmup", "hf_loss")}
    # Validation is not timed; the one at the end of the run is made as small as it can be.
    cfg = resolve_paths(
        TrainConfig(
            **options,
            output_dir=str(tmp / "loop"),
            max_steps=args.steps + args.warmup,
            eval_every=0,
            eval_at_start=False,
            eval_users=1,
            eval_beams=1,
            progress=False,
        )
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok, base = load_tokenizer(cfg.model, cfg.gguf_file), load_model(cfg.model, cfg.gguf_file)

    # The bare side: the same preparation (same seed: same LoRA init, same batches) on a copy of the base.
    bare_run = prepare_run(
        dataclasses.replace(cfg, output_dir=str(tmp / "bare")), model=copy.deepcopy(base), tokenizer=tok
    )
    bare, bare_loss = bare_run.model, bare_run.module
    bare_loss.train()
    optimizer = torch.optim.AdamW([p for p in bare.parameters() if p.requires_grad], lr=cfg.lr)
    collated = [
        [td.collate(rows, tok.pad_token_id) for rows in bare_run.step_batches(s)] for s in range(bare_run.total_steps)
    ]
    step_tokens = [sum(b["n_tokens"] for b in g) for g in collated]
    precision = bare_run.acc.mixed_precision
    autocast = torch.autocast(bare_run.acc.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def bare_step(group, hf: bool) -> float:
        t0 = time.perf_counter()
        n = sum(b["n_targets"] for b in group)
        for b in group:
            with autocast:
                if hf:
                    loss = bare(input_ids=b["input_ids"], position_ids=b["position_ids"], labels=b["labels"]).loss
                    loss = loss * b["n_targets"]
                else:
                    loss, _ = bare_loss(b["input_ids"], b["labels"], b["position_ids"])
            (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"loop": [], "bare": [], "hf": []}
    mark = [0.0]

    def after_step(step: int, loss: float) -> None:
        now = time.perf_counter()
        if step > args.warmup:
            times["loop"].append(now - mark[0])
        if step > args.warmup or step == 1:  # step 1 also warms the bare copy up
            t = bare_step(collated[step - 1], hf=False)
            if step > args.warmup:
                times["bare"].append(t)
                if args.hf_loss:
                    times["hf"].append(bare_step(collated[step - 1], hf=True))
        mark[0] = time.perf_counter()

    train(cfg, after_step, model=base, tokenizer=tok)
    timed = step_tokens[args.warmup : args.warmup + len(times["loop"])]
    tok_s = {k: sum(timed) / sum(v) for k, v in times.items() if v}
    per_step = {k: statistics.median(v) for k, v in times.items() if v}
    examples, batches = bare_run.epochs[0]
    steps_per_epoch = -(-len(batches) // cfg.grad_accum)
    print(
        f"\n{len(examples)} examples/epoch, {steps_per_epoch} steps/epoch, {np.mean(step_tokens):.0f} tokens/step "
        f"(packing {'on' if bare_run.packing else 'off'}, fast head "
        f"{'on' if bare_loss.fast_head else 'off'}), threads {torch.get_num_threads()}, precision {precision}"
    )
    print(f"{'':<28}{'tokens/s':>10}{'median s/step':>15}")
    names = {"loop": "training loop (m6gen train)", "bare": "bare fwd+bwd+step", "hf": "bare, HF full-logits loss"}
    for k in tok_s:
        print(f"{names[k]:<28}{tok_s[k]:>10.1f}{per_step[k]:>15.2f}")
    print(
        f"loop overhead vs bare: {tok_s['bare'] / tok_s['loop'] - 1:+.1%} "
        f"(tokens/s ratio loop/bare {tok_s['loop'] / tok_s['bare']:.3f})"
    )
    epoch_tokens = sum(len(e) for e in examples)
    print(
        f"one epoch as configured ({len(examples)} examples, {epoch_tokens} tokens): "
        f"{epoch_tokens / tok_s['loop'] / 60:.1f} min"
    )
    ds, split, template = bare_run.dataset, bare_run.split, bare_run.template
    target_ids = encode_targets(tok, [template.render_target(it) for it in ds.catalog])
    every, _ = td.build_examples(
        td.sample_steps(split.train, min_history=cfg.min_prompt_items, per_user=None),
        split.train,
        ds.catalog,
        template,
        tok,
        target_ids,
        profiles=ds.profiles,
        max_len=cfg.max_seq_len,
    )
    every_tokens = sum(len(e) for e in every)
    print(
        f"one epoch over every next-item step ({len(every)} examples, {every_tokens} tokens): "
        f"{every_tokens / tok_s['loop'] / 3600:.1f} h"
    )
    # The same steps taught by history packing (a token-incremental template, blocks of --history-block).
    from m6gen.prompts import TemplateLibrary

    name = template.name if td.is_token_incremental(template, tok, ds.catalog, target_ids, split.train) else "sequence"
    seq = TemplateLibrary(cfg.prompts_dir, max_history=cfg.max_history).load_template(name)
    seq_targets = encode_targets(tok, [seq.render_target(it) for it in ds.catalog])
    blocks = td.sample_blocks(split.train, block=cfg.history_block, min_history=cfg.min_prompt_items, per_user=None)
    packed, _ = td.build_block_examples(
        blocks, split.train, ds.catalog, seq, tok, seq_targets, profiles=ds.profiles, max_len=cfg.max_seq_len
    )
    packed_tokens = sum(len(e) for e in packed)
    print(
        f"the same with history packing (template {name}, {cfg.history_block} steps per sequence, "
        f"{len(packed)} sequences, {packed_tokens} tokens, {every_tokens / packed_tokens:.1f}x fewer): "
        f"{packed_tokens / tok_s['loop'] / 3600:.1f} h at the tokens/s above"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
