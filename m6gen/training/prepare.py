"""Everything a training run builds before its first step (``m6gen train``): the precision, accelerate's
Accelerator, the data, the model with LoRA (and collaborative tokens), every epoch's batches and the
run folder, gathered in a :class:`Run`; and the optimizer's parameter groups. The loop that steps,
validates and saves is :mod:`m6gen.training.loop`.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m6gen.config import TrainConfig, TrainError
from m6gen.training.collaborative import attach_collaborative, collaborative_table
from m6gen.training.epochs import ExampleSources, plan_epochs
from m6gen.training.lora import attach_lora, resolve_target_modules
from m6gen.training.run_folder import check_output_dir, resolve_paths, write_run_folder

# DeepSpeed wraps the model in its own engine, whose checkpoints and forward this module does not handle.
REFUSED = ("DEEPSPEED",)


def resolve_precision(mode: str) -> str:
    """``auto``: bf16 on a GPU that supports it or a CPU with native bf16 (AVX512-BF16/AMX), else no."""
    if mode != "auto":
        return mode
    from m6gen.model import native_bf16

    return "bf16" if native_bf16() else "no"


@dataclass
class Run:
    """Everything a training run builds before its first step (see :func:`prepare_run`)."""

    cfg: TrainConfig  # resolved: absolute paths, target modules filled in
    acc: Any  # accelerate.Accelerator
    out: Path
    mode: str  # "new", "resume" or "overwrite"
    template: Any
    dataset: Any
    split: Any
    tokenizer: Any
    model: Any  # the peft model
    trie: Any
    module: Any  # the target-only loss module around ``model`` (after ``train`` prepares it: the wrapped one)
    packing: bool  # several examples per row (off when the model's loss differs with it)
    epochs: list[tuple[list, list]]  # per epoch: (examples, micro-batches of rows of example indices)
    total_steps: int
    val_users: list[str]
    k: int  # metrics at k = min(10, eval_beams)
    retriever: Any = None  # the SASRec proposing each prompt's candidates (--candidates)
    soft_from: int | None = None  # first virtual (collaborative-token) id: never a label (--cf-source)
    target_weight: Any = None  # (n_items,) loss weight per target item (--rare-target-power), or None

    @property
    def sharded(self) -> bool:
        """FSDP: each process holds a shard of every weight; forwards gather them from all processes."""
        return self.acc.distributed_type.value == "FSDP"

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, step within it) of optimizer step ``step`` (0-based)."""
        per_step = self.cfg.grad_accum * self.acc.num_processes
        for epoch, (_, batches) in enumerate(self.epochs):
            n = -(-len(batches) // per_step)
            if step < n:
                return epoch, step
            step -= n
        raise IndexError(step)

    def step_batches(self, step: int) -> list[list[list]]:
        """This process's micro-batches (rows of examples) of optimizer step ``step`` (0-based)."""
        epoch, j = self.locate(step)
        examples, batches = self.epochs[epoch]
        per_step, world = self.cfg.grad_accum * self.acc.num_processes, self.acc.num_processes
        group = batches[j * per_step : (j + 1) * per_step][self.acc.process_index :: world]
        return [[[examples[i] for i in row] for row in b] for b in group]


def make_accelerator(precision: str):
    """accelerate's Accelerator for this launch, refusing the engines this module does not handle."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # accelerate keeps one global state: let a second run in a process choose again
    # On a machine without an accelerator, accelerate sets up several processes (torchrun, mpirun)
    # only when told cpu=True; without it every process would train alone on all the data.
    acc = Accelerator(mixed_precision=precision, cpu=not torch.accelerator.is_available())
    if acc.distributed_type.value in REFUSED:
        raise TrainError(
            f"{acc.distributed_type.value} is not supported yet (its engine needs its own checkpoints): "
            "launch with DDP or FSDP, e.g. accelerate launch --multi_gpu -m m6gen train, or torchrun"
        )
    if acc.distributed_type.value == "FSDP" and not acc.is_fsdp2:
        raise TrainError(
            "FSDP version 1 is not supported (validation gathers weights the FSDP2 way): "
            "launch with --fsdp_version 2 (or fsdp_version: 2 in the accelerate config)"
        )
    return acc


def prepare_run(cfg: TrainConfig, model=None, tokenizer=None) -> Run:
    """Check the inputs (cheap ones first), load data and model, attach LoRA, build every epoch's batches."""
    import numpy as np
    import torch

    from m6gen.data import build_histories, leave_one_out, load_dataset_noted, new_item_split
    from m6gen.model import (
        build_catalog_trie,
        encode_targets,
        load_model,
        load_tokenizer,
    )
    from m6gen.prompts import TemplateLibrary
    from m6gen.training.examples import rare_target_weights
    from m6gen.training.loss import calibrate_readout, loss_module

    cfg = resolve_paths(cfg)
    template = TemplateLibrary(cfg.templates, max_history=cfg.max_history).load_template(cfg.template)
    mode = check_output_dir(cfg)
    precision = resolve_precision(cfg.mixed_precision)
    acc = make_accelerator(precision)
    out = Path(cfg.output_dir)
    dataset = load_dataset_noted(cfg.data, cfg.format, cfg.title_field, cfg.unknown_items, say=acc.print)
    split = leave_one_out(build_histories(dataset, dedupe=cfg.dedupe, min_history=cfg.min_history))
    split = new_item_split(dataset, split, cfg.new_items)  # --new-items: new items never reach training
    table = collaborative_table(cfg, split, dataset.catalog, say=acc.print)  # a bad --cf-source fails here

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model, cfg.gguf_file)
    base = model if model is not None else load_model(cfg.model, cfg.gguf_file)
    cfg = dataclasses.replace(cfg, target_modules=resolve_target_modules(base, cfg.target_modules))
    collaborative = attach_collaborative(cfg, base, tokenizer, split, dataset.catalog, template, table, acc.print)
    peft_model = attach_lora(cfg, base, collaborative)

    target_texts = template.render_targets(dataset.catalog)
    target_ids = encode_targets(tokenizer, target_texts)  # the trie's sequences, shared by every example
    retriever = None
    if cfg.candidates:
        from m6gen.baselines.sasrec import load_sasrec

        retriever = load_sasrec(cfg.candidates, len(dataset.catalog))
    module = loss_module(peft_model, readout_weight=cfg.readout_loss)
    world = acc.num_processes
    sources = ExampleSources(template, tokenizer, dataset, split, target_ids, collaborative, retriever)
    plan = plan_epochs(cfg, sources, module, world)
    module.fast_head, packing, n_steps = plan.fast_head, plan.packing, plan.n_steps
    if not plan.fast_head or packing != cfg.packing:
        note = "packing off" if plan.fast_head else "full logits"
        acc.print(f"note: this model's loss differs with the shortcut; {note}")
    soft_from = collaborative.offset if collaborative is not None else None
    if calibrate_readout(module, plan.epochs[0][0][:32], tokenizer.pad_token_id, soft_from):
        acc.print(f"readout trained with LoRA, weight {cfg.readout_loss:g} per next item")
    target_weight = rare_target_weights(split.train, len(dataset.catalog), cfg.rare_target_power)
    if target_weight is not None:
        acc.print(
            f"rare targets taught more (power {cfg.rare_target_power:g}): loss weight {target_weight.min():.2f} "
            f"for the most-watched item to {target_weight.max():.2f} for one seen once"
        )
    total_steps = n_steps if cfg.max_steps is None else min(n_steps, cfg.max_steps)
    n_users = len(split.users)
    pick = np.random.default_rng(cfg.seed).choice(n_users, min(cfg.eval_users, n_users), replace=False)

    # --overwrite deletes the old run only now, after every check above could still refuse this one
    # (and after --init-adapter has read it, so a run can be trained further into its own folder)
    if mode == "overwrite" and acc.is_main_process:
        shutil.rmtree(out)
    acc.wait_for_everyone()
    if acc.is_main_process:
        resolved = {
            "precision": precision,
            **plan.record(),
            "n_items": len(dataset.catalog),
            "n_users": n_users,
            "total_steps": total_steps,
            "world_size": world,
            "engine": acc.distributed_type.value,
        }
        write_run_folder(cfg, out, template, tokenizer, target_texts, collaborative, resolved)
    acc.wait_for_everyone()
    trie = build_catalog_trie(tokenizer, target_texts, cache_dir=out / "trie")  # loads what the main process saved
    acc.print(
        f"{n_users} users, {len(dataset.catalog)} items; {plan.describe()}, {total_steps} steps of {n_steps}; LoRA on "
        f"{', '.join(cfg.target_modules)}; several examples per row (--packing) {'on' if packing else 'off'}; "
        f"precision {precision}"
    )
    return Run(
        cfg,
        acc,
        out,
        mode,
        template,
        dataset,
        split,
        tokenizer,
        peft_model,
        trie,
        module,
        packing,
        plan.epochs,
        total_steps,
        [split.users[i] for i in sorted(pick)],
        min(10, cfg.eval_beams),
        retriever,
        soft_from,
        target_weight,
    )


def parameter_groups(model, cfg: TrainConfig) -> list[dict]:
    """The trainable parameters for the optimizer: LoRA's at ``--lr``, the collaborative projectors' and
    readout's at ``--lr`` x ``--cf-lr-scale`` (their own group only when the scale differs, so runs
    without it are unchanged)."""
    from m6gen.hybrid.soft_tokens import PROJECTOR, READOUT, STATE_PROJECTOR

    def is_projector(name: str) -> bool:
        return any(f".{module}." in f".{name}." for module in (PROJECTOR, STATE_PROJECTOR, READOUT))

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    projector = [p for n, p in trainable if is_projector(n)]
    if not projector or cfg.cf_lr_scale == 1.0:
        return [{"params": [p for _, p in trainable]}]
    rest = [p for n, p in trainable if not is_projector(n)]
    return [{"params": rest}, {"params": projector, "lr": cfg.lr * cfg.cf_lr_scale}]
