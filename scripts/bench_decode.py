"""Benchmark constrained decoding: speed against the hardware's limit, against transformers, and validity.

    .venv/bin/python scripts/bench_decode.py                     # everything (about 20 min on 2 cores)
    .venv/bin/python scripts/bench_decode.py --users 32 --skip hf,processes,trie

Run it on an otherwise idle machine. Prints the CPU, torch's threads and each path's dtype, then,
measured side by side in one run on real MovieLens-100K prompts (the default template and
history, test histories, users sorted by prompt length into batches as ``Recommender`` does):
1. ``paths``: users/s of each decoding path (``--paths``): ``shared`` (the default: the prompt's KV
   once per user), ``copy`` (a KV copy per beam, the previous default), ``int8`` (shared, with
   torch's dynamic int8 quantization of every linear layer: weights, and activations per batch);
   the projection for all users; a per-phase split (prefill, decode steps, and within those the LM
   head and attention; constraint; bookkeeping); and the FLOP bound: the model's FLOPs for the
   prompt and beam tokens each path processed, at the GFLOP/s a plain matmul of the model's own
   shapes reaches in this run (fp32 or int8 as the path), with the achieved fraction;
2. ``hf``: m6gen against ``model.generate(num_beams=B, max_new_tokens=T)`` (unconstrained) on one batch;
3. ``processes``: one process with 2 threads against 2 processes with 1 thread each (what
   ``torchrun --nproc_per_node 2 -m m6gen recommend`` runs), the same users split in halves;
4. ``quality`` (with ``--model``, e.g. a trained run): what int8 quantization changes, through
   ``Recommender`` on ``--quality-users`` validation users: users/s, NDCG@10 and HR@10 of the beams,
   the paired difference to fp32 with its 95% interval, and the overlap of the top-10 sets;
5. ``validity``: share of outputs in the catalog, duplicates, seen items; open mode's share outside;
6. ``trie``: build time and peak memory for synthetic catalogs (a subprocess each, so RSS is its own).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

PATHS = ("shared", "copy", "int8")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="users decoded together")
    p.add_argument("--history", type=int, default=20, help="watched titles per prompt (the default max_history)")
    p.add_argument("--users", type=int, default=64, help="users timed per path")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {PATHS}")
    p.add_argument("--hf-users", type=int, default=8, help="users of the comparison with transformers' generate")
    p.add_argument("--max-new-tokens", type=int, default=12, help="generate's length in the comparison")
    p.add_argument("--open-users", type=int, default=8, help="users for open-mode validity")
    p.add_argument("--model", default=None, help="model for the quality part: a run folder, model id or path")
    p.add_argument("--quality-users", type=int, default=200, help="validation users of the quality part")
    p.add_argument("--trie-sizes", default="10000,100000,1000000")
    p.add_argument("--skip", default="", help="comma list of parts to skip: paths,hf,processes,quality,validity,trie")
    p.add_argument("--trie-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "start:stop:threads" for processes
    return p


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


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


class Workload:
    """Real prompts for the first users, in the order ``Recommender.generate`` decodes them."""

    def __init__(self, args, n_users: int):
        import numpy as np

        from m6gen.data import build_histories, leave_one_out, load_dataset
        from m6gen.model import build_catalog_trie, encode_prompts, load_tokenizer
        from m6gen.prompts import TemplateLibrary

        ds = load_dataset()
        split = leave_one_out(build_histories(ds))
        self.tok = load_tokenizer()
        self.template = TemplateLibrary(max_history=args.history).get("titles")
        self.targets = [self.template.render_target(it) for it in ds.catalog]
        self.trie = build_catalog_trie(self.tok, self.targets)
        self.catalog_size = len(ds.catalog)
        self.all_users = len(split.users)
        users = split.users[:n_users]
        self.history = [split.test_history(u) for u in users]
        prompts = [self.template.render_prompt([ds.catalog[i] for i in h]) for h in self.history]
        self.prompt = encode_prompts(self.tok, prompts)
        self.order = np.argsort([len(p) for p in self.prompt], kind="stable")
        self.beams, self.batch = args.beams, args.batch

    def decode(self, model, users, share: bool, stats: dict | None = None, max_new_tokens=None) -> dict:
        """Beams of ``users`` (indices into the workload), batch by batch; stats summed over batches."""
        import numpy as np
        import torch

        from m6gen.decoding.search import constrained_beam_search

        out = {}
        for s in range(0, len(users), self.batch):
            batch = users[s : s + self.batch]
            step: dict = {}
            with torch.no_grad():
                hyps = constrained_beam_search(
                    model,
                    self.trie,
                    [self.prompt[u] for u in batch],
                    self.beams,
                    banned=[np.array(self.history[u]) for u in batch],
                    pad_token_id=self.tok.pad_token_id,
                    max_new_tokens=max_new_tokens,
                    share_prompt=share,
                    stats=step,
                )
            out.update(zip(batch, hyps))
            if stats is not None:
                for k, v in step.items():
                    stats[k] = stats.get(k, 0) + v
        return out


class ModelShape:
    """FLOPs of a Llama-family model from its config: per token in the layers, in the LM head, in attention."""

    def __init__(self, config):
        h, heads, kv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or h // heads
        self.heads, self.layers, self.hidden, self.vocab = heads, config.num_hidden_layers, h, config.vocab_size
        q, k = heads * self.head_dim, kv * self.head_dim
        inner = config.intermediate_size
        self.linears = [(h, q), (h, k), (h, k), (q, h), (h, inner), (h, inner), (inner, h)]
        self.per_token = 2 * self.layers * sum(i * o for i, o in self.linears)
        self.head = 2 * h * self.vocab

    def attention(self, keys: int) -> float:
        """QK^T and AV of one query against ``keys`` keys, all layers and heads."""
        return 4.0 * self.layers * self.heads * self.head_dim * keys

    def prefill_flops(self, prompt_lengths) -> tuple[float, float]:
        """(linear + head FLOPs, attention FLOPs) of prefilling these prompts (the head on the last token only)."""
        linear = sum(prompt_lengths) * self.per_token + len(prompt_lengths) * self.head
        return linear, sum(self.attention(n * (n + 1) / 2) for n in prompt_lengths)

    def rates(self, rows_prefill: int, rows_step: int, quantized: bool) -> dict:
        """GFLOP/s of plain matmuls of the model's shapes: layers at prefill and step sizes, head at step size."""
        import torch

        def timed(shapes, rows):
            mods = [torch.nn.Linear(i, o, bias=False) for i, o in shapes]
            if quantized:
                mods = [int8(torch.nn.Sequential(m)) for m in mods]
            xs = [torch.randn(rows, i) for i, _ in shapes]
            flops = sum(2 * rows * i * o for i, o in shapes)
            with torch.no_grad():
                for m, x in zip(mods, xs):
                    m(x)
                reps, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < 1.0:
                    for m, x in zip(mods, xs):
                        m(x)
                    reps += 1
            return flops * reps / (time.perf_counter() - t0) / 1e9

        return {
            "prefill": timed(self.linears, rows_prefill),
            "step": timed(self.linears, rows_step),
            "head": timed([(self.hidden, self.vocab)], rows_step),
        }


class PhaseClock:
    """Seconds in the LM head (hooks) and in the shared cache's attention (wrapped), while active."""

    def __init__(self, model):
        self.model = model
        self.head_s = self.attention_s = 0.0

    def __enter__(self):
        from m6gen.decoding import shared_cache

        head = self.model.get_output_embeddings()
        started = {}
        self._hooks = [
            head.register_forward_pre_hook(lambda *a: started.__setitem__("t", time.perf_counter())),
            head.register_forward_hook(lambda *a: self._add_head(time.perf_counter() - started["t"])),
        ]
        self._attend = shared_cache.SharedPromptCache.attend
        original, clock = self._attend, self

        def attend(cache, *args):
            t0 = time.perf_counter()
            try:
                return original(cache, *args)
            finally:
                clock.attention_s += time.perf_counter() - t0

        shared_cache.SharedPromptCache.attend = attend
        return self

    def _add_head(self, seconds: float) -> None:
        self.head_s += seconds

    def __exit__(self, *exc):
        from m6gen.decoding import shared_cache

        for h in self._hooks:
            h.remove()
        shared_cache.SharedPromptCache.attend = self._attend


def int8(model):
    """torch's dynamic int8 quantization of every linear layer, in place (measured here, not shipped: it drifts)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.ao's eager API is deprecated in favour of torchao, still in torch 2.13
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def load(path: str):
    from m6gen.model import load_model

    model = load_model(dtype="float32")
    return int8(model) if path == "int8" else model


def paths_part(args, work: Workload, shape: ModelShape) -> dict:
    """Users/s, phases and FLOP bound of each path; returns the shared path's beams for the validity part."""
    users = list(work.order[: args.users])
    rows, kept = [], {}
    for path in args.paths.split(","):
        model = load(path)
        share = path != "copy"
        work.decode(model, users[:1], share, max_new_tokens=2)  # warm-up
        stats: dict = {}
        with PhaseClock(model) as clock:
            t0 = time.perf_counter()
            beams = work.decode(model, users, share, stats)
            total = time.perf_counter() - t0
        if path == "shared":
            kept = beams
        prompt_lengths = [len(work.prompt[u]) for u in users]
        pre_linear, pre_attention = shape.prefill_flops(prompt_lengths)
        step_linear = stats["rows"] * shape.per_token
        step_head = stats["rows"] * shape.head
        step_attention = shape.attention(stats["attended"])
        rate = shape.rates(
            rows_prefill=int(sum(prompt_lengths) / max(1, -(-len(users) // args.batch))),
            rows_step=max(1, stats["rows"] // max(1, stats["steps"])),
            quantized=path == "int8",
        )
        bound = (pre_linear + pre_attention) / rate["prefill"] + (step_linear + step_attention) / rate["step"]
        bound = (bound + step_head / rate["head"]) / 1e9
        steps_s = stats["model_s"] - stats["prefill_s"]
        rows.append(
            [
                path,
                "float32+int8" if path == "int8" else "float32",
                len(users),
                f"{total:.1f}",
                f"{len(users) / total:.2f}",
                f"{total / len(users) * work.all_users / 60:.1f}",
                f"{stats['prefill_s']:.1f}",
                f"{steps_s:.1f}",
                f"{clock.head_s:.1f}",
                f"{clock.attention_s:.1f}" if share else "-",
                f"{stats['constraint_s']:.1f}",
                f"{total - stats['model_s'] - stats['constraint_s']:.1f}",
                f"{(pre_linear + pre_attention + step_linear + step_head + step_attention) / 1e9 / len(users):.0f}",
                f"{rate['prefill']:.0f}/{rate['step']:.0f}/{rate['head']:.0f}",
                f"{bound:.1f}",
                f"{bound / total:.0%}",
            ]
        )
        del model
    print(f"\n## Paths: {len(users)} users, B={work.beams}, batch {work.batch}, full depth (seconds)")
    print(
        table(
            rows,
            [
                "path",
                "weights",
                "users",
                "total",
                "users/s",
                f"min for {work.all_users}",
                "prefill",
                "steps",
                "LM head",
                "attention",
                "constraint",
                "bookkeeping",
                "GFLOP/user",
                "matmul GFLOP/s pre/step/head",
                "FLOP bound",
                "of bound",
            ],
        )
    )
    print("(LM head and attention are inside prefill + steps; bookkeeping = total - model - constraint)")
    return kept


def hf_part(args, work: Workload) -> None:
    """transformers' unconstrained beam search against m6gen on the same batch, model and dtype."""
    import torch

    model = load("shared")
    users = list(work.order[: args.hf_users])
    pids = [work.prompt[u] for u in users]
    width = max(map(len, pids))
    pad = work.tok.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in pids])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in pids])[:, None]).long()
    work.decode(model, users[:1], True, max_new_tokens=2)  # warm-up
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            num_beams=args.beams,
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    hf = time.perf_counter() - t0
    timed = {}
    for name, share, depth in [("copy", False, args.max_new_tokens), ("shared", True, args.max_new_tokens)]:
        t0 = time.perf_counter()
        batch, work.batch = work.batch, len(users)
        try:
            work.decode(model, users, share, max_new_tokens=depth)
        finally:
            work.batch = batch
        timed[name] = time.perf_counter() - t0
    print(
        f"\n## Against transformers: {len(users)} prompts in one batch, B={args.beams}, "
        f"{args.max_new_tokens} new tokens"
    )
    print(
        table(
            [
                [
                    "float32",
                    f"{hf:.1f}",
                    f"{timed['copy']:.1f}",
                    f"{timed['shared']:.1f}",
                    f"{hf / timed['shared']:.1f}x",
                ]
            ],
            ["dtype", "HF generate (unconstrained) s", "m6gen copy s", "m6gen shared s", "speed-up (shared)"],
        )
    )


def worker(args) -> None:
    """Subprocess body for the processes part: decode a slice of the workload with a thread count."""
    import torch

    start, stop, threads = map(int, args.worker.split(":"))
    torch.set_num_threads(threads)
    work = Workload(args, args.users)
    model = load("shared")
    users = list(work.order[: args.users])[start:stop]
    work.decode(model, users[:1], True, max_new_tokens=2)
    t0 = time.time()
    work.decode(model, users, True)
    print(json.dumps({"start": t0, "end": time.time(), "users": len(users)}))


def processes_part(args) -> None:
    """One process with 2 threads against 2 processes with 1 thread each, on the same users."""

    def launch(slices):
        common = [sys.executable, __file__, "--users", str(args.users), "--batch", str(args.batch)]
        common += ["--history", str(args.history), "--beams", str(args.beams)]
        env = dict(os.environ, OMP_NUM_THREADS=str(slices[0][2]))
        procs = [
            subprocess.Popen(common + ["--worker", f"{a}:{b}:{t}"], stdout=subprocess.PIPE, text=True, env=env)
            for a, b, t in slices
        ]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        return sum(o["users"] for o in outs) / (max(o["end"] for o in outs) - min(o["start"] for o in outs))

    half = args.users // 2
    one = launch([(0, args.users, 2)])
    two = launch([(0, half, 1), (half, args.users, 1)])
    print(f"\n## Processes: {args.users} users, shared path, float32 (decode time; each process loads its own model)")
    print(
        table(
            [
                ["1 process x 2 threads", f"{one:.2f}", "1.00x"],
                ["2 processes x 1 thread", f"{two:.2f}", f"{two / one:.2f}x"],
            ],
            ["layout", "users/s", "ratio"],
        )
    )


def quality_part(args) -> None:
    """fp32 against int8 through ``Recommender``, on a fixed random set of validation users."""
    import numpy as np

    from m6gen.data import build_histories, leave_one_out, load_dataset
    from m6gen.ranking.metrics import paired_bootstrap, per_user_scores
    from m6gen.recommender import RecommendConfig, Recommender

    ds = load_dataset()
    split = leave_one_out(build_histories(ds))
    rng = np.random.default_rng(0)
    users = sorted(rng.choice(split.users, size=min(args.quality_users, len(split.users)), replace=False).tolist())
    histories = [split.valid_history(u) for u in users]
    targets = np.array([split.valid[u] for u in users])
    results = {}
    for method in ("none", "int8"):
        config = RecommendConfig(beams=args.beams, batch_size=args.batch, dtype="float32")
        rec = Recommender.from_pretrained(args.model, ds.catalog, config)
        if method == "int8":
            int8(rec.model)
        rec.generate(histories[:1])  # warm-up
        t0 = time.perf_counter()
        beams = rec.generate(histories)
        seconds = time.perf_counter() - t0
        top = [[h.item for h in b[:10]] for b in beams]
        results[method] = (seconds, top, per_user_scores(top, targets, 10))
        del rec
    (fp_s, fp_top, fp), (q_s, q_top, q) = results["none"], results["int8"]
    ndcg = paired_bootstrap(q["NDCG"], fp["NDCG"])
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(fp_top, q_top)])
    name = args.model or "the default model (untuned)"
    print(f"\n## int8 against fp32: {len(users)} validation users, {name}, B={args.beams}, batch {args.batch}")
    print(
        table(
            [
                ["float32", f"{len(users) / fp_s:.2f}", f"{fp['NDCG'].mean():.4f}", f"{fp['HR'].mean():.4f}", "", ""],
                [
                    "float32+int8",
                    f"{len(users) / q_s:.2f}",
                    f"{q['NDCG'].mean():.4f}",
                    f"{q['HR'].mean():.4f}",
                    f"{ndcg['diff']:+.4f} [{ndcg['diff_low']:+.4f}, {ndcg['diff_high']:+.4f}]",
                    f"{overlap:.0%}",
                ],
            ],
            ["weights", "users/s", "NDCG@10", "HR@10", "NDCG@10 - fp32 [95%]", "top-10 overlap"],
        )
    )


def validity_part(args, work: Workload, beams: dict) -> None:
    from m6gen.decoding.open_ended import open_generate

    items = {u: [h.item for h in hyps] for u, hyps in beams.items()}
    n_out = sum(map(len, items.values()))
    trie = work.trie
    in_cat = sum(0 <= i < work.catalog_size and trie.lookup(trie.sequence(i)) == i for r in items.values() for i in r)
    dups = sum(len(r) - len(set(r)) for r in items.values())
    seen = sum(len(set(r) & set(work.history[u])) for u, r in items.items())
    model = load("shared")
    opened = open_generate(
        model,
        work.tok,
        [work.prompt[u] for u in list(work.order[: args.open_users])],
        work.targets,
        args.beams,
        max_new_tokens=24,
    )
    n_open = sum(map(len, opened))
    outside = sum(not o.in_catalog for r in opened for o in r)
    print("\n## Validity (untuned default model, shared path)")
    print(
        table(
            [
                ["constrained", n_out, f"{in_cat / n_out:.1%}", dups, seen],
                [f"open ({args.open_users} users)", n_open, f"{(n_open - outside) / n_open:.1%}", "-", "-"],
            ],
            ["mode", "outputs", "in catalog", "duplicates", "seen items"],
        )
    )


def trie_part(args) -> None:
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
        table(rows, ["titles", "tokenize s", "build s", "nodes", "peak RSS MB (process)", "MB above tokenizer+titles"])
    )


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.trie_child:
        trie_child(args.trie_child)
        return 0
    if args.worker:
        worker(args)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    unknown = [p for p in args.paths.split(",") if p not in PATHS]
    if unknown:
        sys.exit(f"--paths: unknown {unknown}; expected some of {PATHS}")

    import torch

    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if {"paths", "hf", "validity"} - skip:
        work = Workload(args, max(args.users, args.hf_users, args.open_users))
        from m6gen.model import load_model

        shape = ModelShape(load_model(dtype="float32").config)
        lengths = [len(p) for p in work.prompt]
        print(
            f"prompt tokens: mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}; "
            f"trie depth {work.trie.max_depth}"
        )
        beams = paths_part(args, work, shape) if "paths" not in skip else {}
        if "hf" not in skip:
            hf_part(args, work)
        if "validity" not in skip and beams:
            validity_part(args, work, beams)
    if "quality" not in skip:
        quality_part(args)
    if "processes" not in skip:
        processes_part(args)
    if "trie" not in skip:
        trie_part(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
