"""LoRA-tune a causal LM to continue a behavior prompt with the next item's title (``m6gen train``).

    m6gen train --output-dir runs/lora                    # default model, ML-100K, a few minutes on CPU
    accelerate launch --multi_gpu -m m6gen train --output-dir runs/lora   # several GPUs (DDP)
    torchrun --nproc_per_node 2 -m m6gen train --output-dir runs/lora     # several CPU processes (DDP, gloo)

Examples come from the train split only (``m6gen.training.examples``); ``m6gen.training.prepare``
loads the data and model and batches every epoch before the first step. The loss is on target tokens
only. Validation HR@10/NDCG@10 with trie-constrained beam search every ``--eval-every`` steps
keeps the best adapter and stops early. Checkpoints are written to a temporary folder and made
current by an atomic rename, so ``--resume`` continues a killed run at the next step, with the
same data order. Output folder (Hugging Face layout): the LoRA adapter, tokenizer,
``m6gen_config.json``, ``trie/``, ``train_log.csv``, ``valid_log.csv``, ``train_loss.png``,
``train_summary.json``, ``checkpoints/`` and, with ``--merge``, ``merged/``. The config and that folder
(checks, checkpoints, logs, loading back) are handled in ``m6gen.training.run_folder``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from m6gen.config import TrainConfig
from m6gen.files import write_atomic
from m6gen.runs import load_trained
from m6gen.training.prepare import Run, parameter_groups, prepare_run
from m6gen.training.run_folder import (
    ADAPTER_FILES,
    CsvLog,
    checkpoint_pointer,
    load_checkpoint,
    plot_log,
    save_checkpoint,
)


# ---------------------------------------------------------------------------------- model side
def validate(
    model,
    tokenizer,
    trie,
    split,
    catalog,
    template,
    users: list[str],
    *,
    k: int = 10,
    num_beams: int = 10,
    batch_size: int = 16,
    profiles=None,
    retriever=None,
    n_candidates: int = 20,
    progress: bool = False,
) -> list[list[int]]:
    """Top items for predicting each user's valid item from ``valid_history``, by ``Recommender.generate``
    (the same search recommending uses: the user's train items banned, a retriever's candidates ranked)."""
    from m6gen.prompts import user_vars
    from m6gen.recommender import RecommendConfig, Recommender

    config = RecommendConfig(
        template=template.name,
        max_history=template.max_history,
        beams=num_beams,
        batch_size=batch_size,
        n_candidates=n_candidates,
    )
    rec = Recommender(model, tokenizer, catalog, template, config, trie=trie, retriever=retriever)
    was_training = model.training
    model.eval()
    try:
        beams = rec.generate(
            [split.valid_history(u) for u in users],
            [user_vars(u, profiles) for u in users],
            progress=progress,
            prior=None,
            desc="validating",
        )
    finally:
        model.train(was_training)
    return [[h.item for h in b][:k] for b in beams]


def run_validation(run: Run) -> dict[str, float]:
    """HR@k/NDCG@k on the validation users (each process decodes its share)."""
    import time

    import numpy as np
    from accelerate.utils import gather_object

    from m6gen.ranking.metrics import hit_rate_at_k, ndcg_at_k

    t0 = time.perf_counter()
    # Under FSDP every forward gathers weights from all processes, so all of them must run the same
    # forwards: each decodes every user (same inputs, same weights, hence the same beam steps).
    # The root's own weights (embeddings, output layer) are gathered once for the whole search.
    mine = run.val_users if run.sharded else run.val_users[run.acc.process_index :: run.acc.num_processes]
    if run.sharded:
        run.module.unshard()
    try:
        with run.acc.autocast():
            ranked = validate(
                run.model,
                run.tokenizer,
                run.trie,
                run.split,
                run.dataset.catalog,
                run.template,
                mine,
                k=run.k,
                num_beams=run.cfg.eval_beams,
                batch_size=run.cfg.eval_batch_size,
                profiles=run.dataset.profiles,
                retriever=run.retriever,
                n_candidates=run.cfg.n_candidates,
                progress=run.cfg.progress and run.acc.is_main_process,
            )
    finally:
        if run.sharded:
            run.module.reshard()
    by_user = dict(zip(mine, ranked)) if run.sharded else dict(gather_object(list(zip(mine, ranked))))
    ranked_all = [by_user[u] for u in run.val_users]
    targets = np.array([run.split.valid[u] for u in run.val_users])
    return {
        f"HR@{run.k}": hit_rate_at_k(ranked_all, targets, run.k),
        f"NDCG@{run.k}": ndcg_at_k(ranked_all, targets, run.k),
        "seconds": time.perf_counter() - t0,
    }


@dataclass(frozen=True)
class StepLoss:
    """What one optimizer step logs."""

    loss: float  # mean cross-entropy per target (title) token
    tokens: int  # non-pad tokens read, all processes
    readout_loss: float | None = None  # mean cross-entropy per next item under the readout (--readout-loss)


def train_step(run: Run, module, optimizer, scheduler, step: int) -> StepLoss:
    """One optimizer step (0-based ``step``) over its micro-batches."""
    import contextlib

    import torch

    from m6gen.training.examples import collate

    acc, world = run.acc, run.acc.num_processes
    batches = run.step_batches(step)
    soft_from = run.soft_from if run.soft_from is not None else float("inf")
    n_targets = sum(t < soft_from for b in batches for row in b for ex in row for t in ex.target_ids)
    n_targets = torch.tensor(float(n_targets), device=acc.device)
    n_targets = float(acc.reduce(n_targets, "sum")) if world > 1 else float(n_targets)
    # (loss sum, tokens, readout loss sum, next items it read) of this process
    stats = torch.zeros(4, dtype=torch.float64, device=acc.device)
    inner = acc.unwrap_model(module)  # the loss module: its LossParts, which the wrapper does not pass on
    for m, rows in enumerate(batches):
        batch = collate(rows, run.tokenizer.pad_token_id, run.soft_from, run.target_weight)
        with contextlib.nullcontext() if m == len(batches) - 1 else acc.no_sync(module):
            inputs = ("input_ids", "labels", "position_ids", "readout_at", "readout_items", "weights")
            loss_sum, _ = module(**{key: batch[key].to(acc.device) for key in inputs if key in batch})
            # The sum over all target tokens of the step / their count (DDP and FSDP average over processes,
            # hence the factor world): packing, batching and accumulation leave the loss unchanged.
            acc.backward(loss_sum * (world / n_targets))
        parts = inner.last
        stats += torch.tensor(
            [parts.title, batch["n_tokens"], parts.item, parts.items], dtype=stats.dtype, device=acc.device
        )
    if run.cfg.max_grad_norm > 0:
        acc.clip_grad_norm_(module.parameters(), run.cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        stats = acc.reduce(stats, "sum")
    readout_loss = float(stats[2] / stats[3]) if stats[3] else None
    return StepLoss(float(stats[0]) / n_targets, int(stats[1]), readout_loss)


def train(
    cfg: TrainConfig, step_callback: Callable[[int, float], None] | None = None, *, model=None, tokenizer=None
) -> dict[str, Any]:
    """Run (or resume) a training run as ``cfg`` says; returns the summary also saved as ``train_summary.json``.

    Args:
        step_callback: ``f(step, loss)`` after every optimizer step (tests interrupt a run with it).
        model, tokenizer: the base model and tokenizer of ``cfg.model`` when already loaded
            (benchmarks); the model is modified in place (LoRA layers are injected).
    """
    import time

    import torch
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    run = prepare_run(cfg, model, tokenizer)
    cfg, acc, out, k = run.cfg, run.acc, run.out, run.k
    optimizer = torch.optim.AdamW(parameter_groups(run.model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=round(cfg.warmup_ratio * run.total_steps),
        num_training_steps=run.total_steps,
    )
    module, optimizer = acc.prepare(run.module, optimizer)
    run.module = module
    sharded = module if run.sharded else None  # checkpoints gather and scatter the trainable state through it

    state: dict[str, Any] = {
        "step": 0,
        "best": None,
        "bad_evals": 0,
        "stopped_early": False,
        "evals": [],
        "train_seconds": 0.0,
        "train_tokens": 0,
    }
    pointer = checkpoint_pointer(out) if run.mode == "resume" else {}
    if pointer.get("last"):
        state = load_checkpoint(acc, out / "checkpoints" / pointer["last"], run.model, optimizer, scheduler, sharded)
        acc.print(f"resuming {out} at step {state['step']} of {run.total_steps}")
    keep = state["step"] if run.mode == "resume" else None
    if acc.is_main_process:
        columns = ["step", "epoch", "loss", "lr", "tokens_per_s", "elapsed_s"]
        train_log = CsvLog(out / "train_log.csv", columns + (["readout_loss"] if cfg.readout_loss else []), keep)
        valid_log = CsvLog(out / "valid_log.csv", ["step", f"HR@{k}", f"NDCG@{k}", "seconds"], keep)

    def evaluate_and_save(step: int) -> None:
        row = {"step": step, **run_validation(run)}
        state["evals"].append(row)
        if acc.is_main_process:
            valid_log.write(row)
        improved = state["best"] is None or row[f"NDCG@{k}"] > state["best"][f"NDCG@{k}"]
        state["best"], state["bad_evals"] = (row, 0) if improved else (state["best"], state["bad_evals"] + 1)
        # early only when steps were left to skip (the last validation ends the run anyway)
        state["stopped_early"] = bool(cfg.patience) and state["bad_evals"] >= cfg.patience and step < run.total_steps
        save_checkpoint(acc, out, run.model, optimizer, scheduler, state, best=improved, sharded=sharded)

    bar = tqdm(
        total=run.total_steps,
        initial=state["step"],
        disable=not (acc.is_main_process and cfg.progress),
        unit="step",
        desc="train",
        dynamic_ncols=True,
    )
    try:
        short = bool(cfg.eval_every) and run.total_steps < cfg.eval_every  # validated only at the end anyway
        if state["step"] == 0 and cfg.eval_at_start and short and not state["evals"]:
            acc.print(
                f"note: {run.total_steps} steps, fewer than --eval-every {cfg.eval_every}: validating at the "
                "end only, not also before training (--eval-every N validates the untuned model too)"
            )
        if state["step"] == 0 and cfg.eval_at_start and not short and not state["evals"]:
            evaluate_and_save(0)
            first = state["evals"][0]
            acc.print(f"untuned: HR@{k} {first[f'HR@{k}']:.4f} NDCG@{k} {first[f'NDCG@{k}']:.4f}")
        module.train()
        while state["step"] < run.total_steps and not state["stopped_early"]:
            t0 = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            logged = train_step(run, module, optimizer, scheduler, state["step"])
            loss, tokens = logged.loss, logged.tokens
            seconds = time.perf_counter() - t0
            state["step"] += 1
            step = state["step"]
            state["train_seconds"] += seconds
            state["train_tokens"] += tokens
            if acc.is_main_process and (step % cfg.log_every == 0 or step == run.total_steps):
                train_log.write(
                    {
                        "step": step,
                        "epoch": run.locate(step - 1)[0],
                        "loss": loss,
                        "lr": lr,
                        "tokens_per_s": tokens / seconds,
                        "elapsed_s": state["train_seconds"],
                        **({"readout_loss": logged.readout_loss} if cfg.readout_loss else {}),
                    }
                )
            if step_callback is not None:
                step_callback(step, loss)
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == run.total_steps:
                evaluate_and_save(step)
                module.train()
            elif cfg.save_every and step % cfg.save_every == 0:
                save_checkpoint(acc, out, run.model, optimizer, scheduler, state, best=False, sharded=sharded)
            # after this step's validation, so the bar ends on the last one, not the one before
            last_eval = {f"ndcg@{k}": f"{state['evals'][-1][f'NDCG@{k}']:.4f}"} if state["evals"] else {}
            readout = {"readout": f"{logged.readout_loss:.2f}"} if logged.readout_loss is not None else {}
            bar.set_postfix(loss=f"{loss:.3f}", **readout, tok_s=f"{tokens / seconds:.0f}", **last_eval, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if acc.is_main_process:
            train_log.close()
            valid_log.close()
    return finish(run, state)


def finish(run: Run, state: dict) -> dict[str, Any]:
    """Save the best adapter (the last one when nothing was validated), tokenizer, plot, summary, merged model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    out, k = run.out, run.k
    pointer = checkpoint_pointer(out)
    chosen = (pointer.get("best") if run.cfg.final_adapter == "best" else None) or pointer.get("last")
    if run.sharded and not chosen:  # no checkpoint yet: gather the weights as they are (all processes)
        save_checkpoint(run.acc, out, run.model, None, None, dict(state), best=False, sharded=run.module)
        chosen = checkpoint_pointer(out)["last"]
    if chosen and not run.sharded:
        set_peft_model_state_dict(run.model, load_file(out / "checkpoints" / chosen / "adapter_model.safetensors"))
    summary = {
        "output_dir": str(out),
        "steps": state["step"],
        "total_steps": run.total_steps,
        "stopped_early": state["stopped_early"],
        "adapter_from_step": int(chosen.split("-")[1]) if chosen else 0,
        "untuned": next((e for e in state["evals"] if e["step"] == 0), None),
        "best": state["best"],
        "last_eval": state["evals"][-1] if state["evals"] else None,
        "examples_per_epoch": len(run.epochs[0][0]),
        "train_seconds": round(state["train_seconds"], 1),
        "train_tokens_per_s": round(state["train_tokens"] / max(state["train_seconds"], 1e-9), 1),
        "example_user": run.split.users[0],  # for the next steps' commands: a user this data has
    }
    if chosen == "step-000000" and state["step"] > 0:
        run.acc.print(
            f"note: kept the untuned adapter (step 0): no later validation beat its NDCG@{k} on "
            f"{len(run.val_users)} users (noisy); --final-adapter last keeps the last one"
        )
    if run.acc.is_main_process:
        if run.sharded:  # the processes hold shards: use the chosen checkpoint's adapter files
            for name in ADAPTER_FILES:
                if (out / "checkpoints" / chosen / name).is_file():
                    shutil.copy2(out / "checkpoints" / chosen / name, out / name)
        else:
            run.model.save_pretrained(out)
        run.tokenizer.save_pretrained(out)
        plot_log(out)
        if run.cfg.merge:
            merged = load_trained(out, merge=True)[0] if run.sharded else run.model.merge_and_unload()
            merged.save_pretrained(out / "merged")
            run.tokenizer.save_pretrained(out / "merged")
            summary["merged"] = str(out / "merged")
        from m6gen.training.model_card import model_card

        # after the adapter files: peft's save_pretrained writes a blank card there
        write_atomic(out / "README.md", model_card(run.cfg, summary, len(run.val_users), k))
        write_atomic(out / "train_summary.json", json.dumps(summary, indent=2))
    run.acc.wait_for_everyone()
    return summary
