"""LoRA-tune a causal LM to continue a behavior prompt with the next item's title (``m6gen train``).

    m6gen train --output-dir runs/lora                    # default model, ML-100K, a few minutes on CPU
    python -m m6gen.train --config train.yaml --lr 1e-3   # flags override the file
    accelerate launch -m m6gen.train --output-dir runs/lora --mixed-precision bf16   # several GPUs (DDP)

Examples come from the train split only (``m6gen.train_data``); the loss is on target tokens
only. Validation HR@10/NDCG@10 with trie-constrained beam search every ``--eval-every`` steps
keeps the best adapter and stops early. Checkpoints are written to a temporary folder and made
current by an atomic rename, so ``--resume`` continues a killed run at the next step, with the
same data order. Output folder (Hugging Face layout): the LoRA adapter, tokenizer,
``m6gen_config.json``, ``trie/``, ``train_log.csv``, ``valid_log.csv``, ``train_loss.png``,
``train_summary.json``, ``checkpoints/`` and, with ``--merge``, ``merged/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from m6gen.config import add_config_args, config_from_args, config_to_dict

CONFIG_FILE = "m6gen_config.json"
# Options that may change between a run and its --resume: they do not change the weights.
OPERATIONAL = {"resume", "overwrite", "merge", "log_every", "eval_batch_size", "output_dir", "progress", "threads"}
LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS = {
    **{t: LLAMA_LIKE for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                               "smollm3", "olmo", "olmo2", "granite", "phi")},  # fmt: skip
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


class TrainError(ValueError):
    """A training option or output folder is unusable; the message says which and what to do."""


def _help(text: str, **kw) -> Any:
    return field(metadata={"help": text, **kw.pop("meta", {})}, **kw)


@dataclass
class TrainConfig:
    """Everything a training run depends on; written resolved to ``m6gen_config.json``."""

    # data and prompts
    data: str | None = _help("data folder (default: $M6GEN_DATA, else data/cache/ml-100k)", default=None)
    data_format: str = _help("data format: auto, recbole, ml-100k, ml-1m, plain", default="auto")
    template: str = _help("prompt template name (prompts/*.jinja) or path to a .jinja file", default="titles")
    prompts_dir: str | None = _help("extra folder of templates, searched first", default=None)
    max_history: int = _help("items shown in a prompt (the most recent ones)", default=10)
    # model and LoRA
    model: str = _help("'default' (SmolLM2-135M-Instruct GGUF), a hub id, a folder or a .gguf file", default="default")
    gguf_file: str | None = _help("GGUF file name inside --model's folder", default=None)
    lora_r: int = _help("LoRA rank", default=8)
    lora_alpha: int = _help("LoRA alpha (scale = alpha / r)", default=16)
    lora_dropout: float = _help("dropout on LoRA inputs", default=0.05)
    target_modules: list[str] | None = _help("module names to adapt, or all-linear (default: per architecture)",
                                             default=None)  # fmt: skip
    # examples
    min_history: int = _help("fewest history items in a training example", default=1)
    examples_per_user: int | None = _help("next-item steps per user per epoch (none: all)", default=2)
    step_sampling: str = _help("which steps: random (fresh each epoch) or last", default="random",
                               meta={"choices": ["random", "last"]})  # fmt: skip
    max_seq_len: int = _help("longest example in tokens (longer ones are dropped, counted in the log)", default=1024)
    # optimization
    epochs: int = _help("passes over the sampled examples", default=1)
    max_steps: int | None = _help("stop after this many optimizer steps (none: epochs decide)", default=40)
    batch_size: int = _help("packed rows per micro-batch", default=2)
    pack_len: int = _help("tokens per packed row", default=512)
    packing: bool = _help("pack several examples per row (position ids restart per example)", default=True)
    grad_accum: int = _help("micro-batches per optimizer step", default=1)
    lr: float = _help("peak learning rate", default=1e-3)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    warmup_ratio: float = _help("share of steps with linear warm-up", default=0.05)
    lr_scheduler: str = _help("transformers scheduler: cosine, linear, constant_with_warmup, ...", default="cosine")
    max_grad_norm: float = _help("gradient clipping (0: none)", default=1.0)
    mixed_precision: str = _help("auto (bf16 where the CPU/GPU has native bf16), no, bf16 or fp16 (autocast)",
                                 default="auto", meta={"choices": ["auto", "no", "bf16", "fp16"]})  # fmt: skip
    seed: int = _help("seed of LoRA init, dropout, step sampling and batch order", default=0)
    # validation and checkpoints
    eval_every: int = _help("validate every N steps (0: only at the end)", default=20)
    eval_users: int = _help("validation users (a fixed random subset)", default=100)
    eval_beams: int = _help("beams of the constrained search (top-k = min(10, beams))", default=10)
    eval_batch_size: int = _help("users per beam-search batch", default=16)
    eval_at_start: bool = _help("validate the untuned model first (the baseline to beat)", default=True)
    patience: int = _help("stop after this many validations without improvement (0: never)", default=3)
    save_every: int | None = _help("checkpoint every N steps (none: at each validation)", default=None)
    # output
    output_dir: str = _help("output folder", default="runs/lora")
    resume: bool = _help("continue the run in --output-dir from its last complete checkpoint", default=False)
    overwrite: bool = _help("delete a previous m6gen run in --output-dir first", default=False)
    merge: bool = _help("also save the adapter merged into the base weights (merged/)", default=False)
    log_every: int = _help("write a train_log.csv row every N steps", default=1)
    threads: int | None = _help("CPU threads for torch (none: torch's default; 1 is faster on a busy machine)",
                                default=None)  # fmt: skip
    progress: bool = _help("show a progress bar", default=True)

    def __post_init__(self):
        positive = ("max_history", "lora_r", "lora_alpha", "min_history", "max_seq_len", "epochs", "batch_size",
                    "pack_len", "grad_accum", "eval_users", "eval_beams", "eval_batch_size", "log_every")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("examples_per_user", "max_steps", "save_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TrainError(f"{name} must be >= 1 or none, got {getattr(self, name)}")
        for name in ("eval_every", "patience"):
            if getattr(self, name) < 0:
                raise TrainError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            raise TrainError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lr <= 0:
            raise TrainError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise TrainError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.step_sampling not in ("random", "last"):
            raise TrainError(f"step_sampling must be random or last, got {self.step_sampling!r}")


# ---------------------------------------------------------------------------------- model side
def resolve_precision(mode: str) -> str:
    """``auto``: bf16 on a GPU that supports it or a CPU with native bf16 (AVX512-BF16/AMX), else no."""
    if mode != "auto":
        return mode
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:  # private helpers; where missing, stay in fp32
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:
        native = False
    return "bf16" if native else "no"


def linear_module_names(model) -> list[str]:
    """Short names (last dotted part) of the model's linear layers, the output layer excluded."""
    import torch

    head = model.get_output_embeddings()
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if m is not head and (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")}  # fmt: skip
    return sorted(names)


def resolve_target_modules(model, requested: list[str] | None) -> list[str]:
    """The LoRA target modules: ``requested`` (checked against the model) or the architecture's default."""
    available = linear_module_names(model)
    if requested is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

        model_type = model.config.model_type
        wanted = DEFAULT_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type) or ["all-linear"]
        present = [m for m in wanted if m in available]
        return present if present else ["all-linear"]
    if requested == ["all-linear"]:
        return requested
    missing = [m for m in requested if m not in available]
    if missing:
        raise TrainError(f"LoRA target module(s) {', '.join(missing)} not in {model.config.model_type} model; "
                         f"its linear layers: {', '.join(available)} (or all-linear)")  # fmt: skip
    return list(requested)


def validate(model, tokenizer, trie, split, catalog, template, users: list[str], *, k: int = 10, num_beams: int = 10,
             batch_size: int = 16, profiles=None) -> list[list[int]]:  # fmt: skip
    """Top items (constrained beam search) for predicting each user's valid item from ``valid_history``.

    The user's train items are banned, as at test time; returns one ranked item list per user.
    """
    import numpy as np
    import torch

    from m6gen.generate import constrained_beam_search
    from m6gen.model import encode_prompts
    from m6gen.train_data import render_prompts

    was_training = model.training
    model.eval()
    ranked: list[list[int]] = []
    with torch.no_grad():
        for s in range(0, len(users), batch_size):
            chunk = users[s : s + batch_size]
            histories = [split.valid_history(u) for u in chunk]
            prompts = render_prompts(template, catalog, histories, chunk, profiles, tokenizer)
            hyps = constrained_beam_search(model, trie, encode_prompts(tokenizer, prompts), num_beams,
                                           banned=[np.asarray(split.train[u], dtype=np.int64) for u in chunk],
                                           pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            ranked.extend([h.item for h in user_hyps][:k] for user_hyps in hyps)
    model.train(was_training)
    return ranked


# ---------------------------------------------------------------------------------- run folder
def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the data folder, a local model and a template file made absolute, so the saved
    config reloads from anywhere; a model path that does not exist fails here, before any loading."""
    from m6gen.data import default_data_dir
    from m6gen.model import resolve_model

    absolute = lambda p: str(Path(p).expanduser().resolve())  # noqa: E731
    data = absolute(cfg.data) if cfg.data else absolute(default_data_dir())
    model = cfg.model
    if model not in ("", "default") and Path(model).expanduser().exists():
        model = absolute(model)
    resolve_model(model, cfg.gguf_file)
    template = absolute(cfg.template) if Path(cfg.template).expanduser().is_file() else cfg.template
    prompts_dir = absolute(cfg.prompts_dir) if cfg.prompts_dir else None
    return dataclasses.replace(cfg, data=data, model=model, template=template, prompts_dir=prompts_dir)


def check_output_dir(cfg: TrainConfig) -> str:
    """What to do with ``--output-dir``: "new", "resume" or "overwrite"; TrainError when it holds something else."""
    out = Path(cfg.output_dir)
    if (out / CONFIG_FILE).is_file():
        old, _ = read_run_config(out)
        diffs = [f"{f.name}: {getattr(old, f.name)!r} there, {getattr(cfg, f.name)!r} here"
                 for f in dataclasses.fields(TrainConfig)
                 if f.name not in OPERATIONAL and getattr(old, f.name) != getattr(cfg, f.name)
                 and not (f.name == "target_modules" and cfg.target_modules is None)]  # fmt: skip
        if cfg.overwrite:
            return "overwrite"
        if diffs:
            more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
            raise TrainError(f"{out}: holds a different run ({diffs[0]}{more}); "
                             "choose another --output-dir or pass --overwrite")  # fmt: skip
        if cfg.resume:
            return "resume"
        raise TrainError(f"{out}: holds this run already; pass --resume to continue it or --overwrite to start over")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainError(f"{out}: exists and is not an m6gen training output; choose another --output-dir")
    return "new"


def _pointer(out: Path) -> dict[str, str | None]:
    path = out / "checkpoints" / "latest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_checkpoint(acc, out: Path, peft_model, optimizer, scheduler, state: dict, best: bool) -> None:
    """Write a complete checkpoint, then make it current by renaming it and replacing ``latest.json``.

    A kill at any moment leaves ``latest.json`` naming complete folders only; folders it no
    longer names (older steps, a half-written ``.tmp-*``) are deleted afterwards.
    """
    import torch

    ck = out / "checkpoints"
    name = f"step-{state['step']:06d}"
    tmp = ck / f".tmp-{name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    torch.save(rng, tmp / f"rng-{acc.process_index}.pt")  # dropout streams differ per process
    acc.wait_for_everyone()
    if acc.is_main_process:
        peft_model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(ck / name, ignore_errors=True)  # unreferenced leftover of a killed save
        os.replace(tmp, ck / name)
        old = _pointer(out)
        _atomic_text(ck / "latest.json", json.dumps({"last": name, "best": name if best else old.get("best")}))
        keep = set(_pointer(out).values())
        for d in ck.iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
    acc.wait_for_everyone()


def load_checkpoint(acc, folder: Path, peft_model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint folder; returns the trainer state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(folder / "adapter_model.safetensors"))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng_file = folder / f"rng-{acc.process_index}.pt"
    rng = torch.load(rng_file if rng_file.is_file() else folder / "rng-0.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((folder / "trainer_state.json").read_text())


class CsvLog:
    """A CSV log written row by row; on resume, rows after the checkpoint's step are dropped (they are redone)."""

    def __init__(self, path: Path, columns: list[str], keep_until: int | None):
        import csv
        import io

        rows = []
        if keep_until is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_text(path, text.getvalue())
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, columns, extrasaction="ignore", lineterminator="\n")

    def write(self, row: dict) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def plot_log(out: Path) -> Path:
    """``train_loss.png``: loss per step (and a moving average), validation NDCG/HR below."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with (out / "train_log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    valid = []
    if (out / "valid_log.csv").is_file():
        with (out / "valid_log.csv").open(newline="") as f:
            valid = list(csv.DictReader(f))
    fig, axes = plt.subplots(2 if valid else 1, 1, figsize=(7, 6 if valid else 3.5), sharex=True, squeeze=False)
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    ax = axes[0, 0]
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 10:
        w = max(len(loss) // 20, 5)
        ax.plot(steps[w - 1 :], np.convolve(loss, np.ones(w) / w, mode="valid"), lw=1.5, label=f"mean of {w}")
    ax.set_ylabel("target-token loss")
    ax.legend()
    if valid:
        metrics = [c for c in valid[0] if c.startswith(("NDCG@", "HR@"))]
        for m in metrics:
            axes[1, 0].plot([int(r["step"]) for r in valid], [float(r[m]) for r in valid], marker="o", label=m)
        axes[1, 0].set_ylabel("validation")
        axes[1, 0].legend()
    axes[-1, 0].set_xlabel("optimizer step")
    fig.tight_layout()
    path = out / "train_loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- training
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
    module: Any  # the target-only loss module around ``model``
    packing: bool  # several examples per row (off when the model's loss differs with it)
    epochs: list[tuple[list, list]]  # per epoch: (examples, micro-batches of rows of example indices)
    total_steps: int
    val_users: list[str]
    k: int  # metrics at k = min(10, eval_beams)

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


def prepare_run(cfg: TrainConfig, model=None, tokenizer=None) -> Run:
    """Check the inputs (cheap ones first), load data and model, attach LoRA, build every epoch's batches."""
    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from peft import LoraConfig, get_peft_model

    from m6gen import __version__
    from m6gen import train_data as td
    from m6gen.data import build_histories, leave_one_out, load_dataset
    from m6gen.model import (build_catalog_trie, encode_targets, load_model, load_tokenizer, resolve_model,
                             tokenizer_fingerprint)  # fmt: skip
    from m6gen.prompts import TemplateLibrary

    cfg = resolve_paths(cfg)
    template = TemplateLibrary(cfg.prompts_dir, max_history=cfg.max_history).load_template(cfg.template)
    mode = check_output_dir(cfg)
    precision = resolve_precision(cfg.mixed_precision)
    AcceleratorState._reset_state()  # accelerate keeps one global state: let a second run in a process choose again
    acc = Accelerator(mixed_precision=precision)
    out = Path(cfg.output_dir)
    if mode == "overwrite" and acc.is_main_process:
        shutil.rmtree(out)
    acc.wait_for_everyone()
    dataset = load_dataset(cfg.data, cfg.data_format)
    split = leave_one_out(build_histories(dataset))

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model, cfg.gguf_file)
    base = model if model is not None else load_model(cfg.model, cfg.gguf_file)
    cfg = dataclasses.replace(cfg, target_modules=resolve_target_modules(base, cfg.target_modules))
    targets = "all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                      task_type="CAUSAL_LM")  # fmt: skip
    peft_model = get_peft_model(base, lora)

    target_texts = [template.render_target(it) for it in dataset.catalog]
    target_ids = encode_targets(tokenizer, target_texts)  # the trie's sequences, shared by every example
    examples = []
    for epoch in range(cfg.epochs):
        steps = td.sample_steps(split.train, min_history=cfg.min_history, per_user=cfg.examples_per_user,
                                sampling=cfg.step_sampling, seed=cfg.seed, epoch=epoch)  # fmt: skip
        examples.append(td.build_examples(steps, split.train, dataset.catalog, template, tokenizer, target_ids,
                                          profiles=dataset.profiles, max_len=cfg.max_seq_len))  # fmt: skip
    if not examples[0][0]:
        raise TrainError(f"{cfg.data}: no training examples (users need more than "
                         f"min_history={cfg.min_history} train items)")  # fmt: skip
    # Check the two shortcuts on real examples before trusting them.
    module = td.loss_module(peft_model)
    fast_ok, packed_ok = td.check_loss_paths(module, sorted(examples[0][0], key=len)[:4], tokenizer.pad_token_id)
    module.fast_head, packing = fast_ok, cfg.packing and packed_ok
    if not fast_ok or packing != cfg.packing:
        acc.print(f"note: this model's loss differs with the shortcut; {'packing off' if fast_ok else 'full logits'}")

    world = acc.num_processes
    epochs, n_steps = [], 0
    for epoch, (exs, _) in enumerate(examples):
        batches = td.plan_batches([len(x) for x in exs], pack_len=cfg.pack_len, batch_size=cfg.batch_size,
                                  packed=packing, seed=cfg.seed, epoch=epoch)  # fmt: skip
        batches = batches[: len(batches) - len(batches) % world]  # every process gets a batch in every step
        epochs.append((exs, batches))
        n_steps += -(-len(batches) // (cfg.grad_accum * world))
    total_steps = n_steps if cfg.max_steps is None else min(n_steps, cfg.max_steps)
    n_users = len(split.users)
    pick = np.random.default_rng(cfg.seed).choice(n_users, min(cfg.eval_users, n_users), replace=False)

    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        name, gguf = resolve_model(cfg.model, cfg.gguf_file)
        resolved = {"model_path": name, "gguf_file": gguf, "template_path": str(template.path), "precision": precision,
                    "packing": packing, "fast_head": fast_ok, "n_items": len(dataset.catalog), "n_users": n_users,
                    "examples_per_epoch": len(examples[0][0]), "dropped_too_long": examples[0][1],
                    "total_steps": total_steps, "tokenizer": tokenizer_fingerprint(tokenizer), "world_size": world,
                    "m6gen_version": __version__}  # fmt: skip
        _atomic_text(out / CONFIG_FILE, json.dumps({"config": config_to_dict(cfg), "resolved": resolved}, indent=2))
        build_catalog_trie(tokenizer, target_texts, cache_dir=out / "trie")
    acc.wait_for_everyone()
    trie = build_catalog_trie(tokenizer, target_texts, cache_dir=out / "trie")  # loads what the main process saved
    acc.print(f"{n_users} users, {len(dataset.catalog)} items; {len(examples[0][0])} examples/epoch "
              f"({examples[0][1]} too long dropped), {total_steps} steps of {n_steps}; LoRA on "
              f"{', '.join(cfg.target_modules)}; packing {'on' if packing else 'off'}; precision {precision}")  # fmt: skip
    return Run(cfg, acc, out, mode, template, dataset, split, tokenizer, peft_model, trie, module, packing, epochs,
               total_steps, [split.users[i] for i in sorted(pick)], min(10, cfg.eval_beams))  # fmt: skip


def run_validation(run: Run) -> dict[str, float]:
    """HR@k/NDCG@k on the validation users (each process decodes its share)."""
    import time

    import numpy as np
    from accelerate.utils import gather_object

    from m6gen.metrics import hit_rate_at_k, ndcg_at_k

    t0 = time.perf_counter()
    mine = run.val_users[run.acc.process_index :: run.acc.num_processes]
    with run.acc.autocast():
        ranked = validate(run.model, run.tokenizer, run.trie, run.split, run.dataset.catalog, run.template, mine,
                          k=run.k, num_beams=run.cfg.eval_beams, batch_size=run.cfg.eval_batch_size,
                          profiles=run.dataset.profiles)  # fmt: skip
    by_user = dict(gather_object(list(zip(mine, ranked))))
    ranked_all = [by_user[u] for u in run.val_users]
    targets = np.array([run.split.valid[u] for u in run.val_users])
    return {f"HR@{run.k}": hit_rate_at_k(ranked_all, targets, run.k),
            f"NDCG@{run.k}": ndcg_at_k(ranked_all, targets, run.k), "seconds": time.perf_counter() - t0}  # fmt: skip


def train_step(run: Run, module, optimizer, scheduler, step: int) -> tuple[float, int]:
    """One optimizer step (0-based ``step``) over its micro-batches; returns (mean target-token loss, tokens)."""
    import contextlib

    import torch

    from m6gen.train_data import collate

    acc, world = run.acc, run.acc.num_processes
    batches = run.step_batches(step)
    n_targets = sum(len(ex.target_ids) for b in batches for row in b for ex in row)
    n_targets = torch.tensor(float(n_targets), device=acc.device)
    n_targets = float(acc.reduce(n_targets, "sum")) if world > 1 else float(n_targets)
    stats = torch.zeros(2, dtype=torch.float64, device=acc.device)  # (loss sum, tokens) of this process
    for m, rows in enumerate(batches):
        batch = collate(rows, run.tokenizer.pad_token_id)
        with contextlib.nullcontext() if m == len(batches) - 1 else acc.no_sync(module):
            loss_sum, _ = module(*(batch[key].to(acc.device) for key in ("input_ids", "labels", "position_ids")))
            # The sum over all target tokens of the step / their count (DDP averages over processes,
            # hence the factor world): packing, batching and accumulation leave the loss unchanged.
            acc.backward(loss_sum * (world / n_targets))
        stats[0] += float(loss_sum.detach())
        stats[1] += batch["n_tokens"]
    if run.cfg.max_grad_norm > 0:
        acc.clip_grad_norm_(module.parameters(), run.cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        stats = acc.reduce(stats, "sum")
    return float(stats[0]) / n_targets, int(stats[1])


def train(cfg: TrainConfig, step_callback: Callable[[int, float], None] | None = None, *,
          model=None, tokenizer=None) -> dict[str, Any]:  # fmt: skip
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
    optimizer = torch.optim.AdamW([p for p in run.model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)  # fmt: skip
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=round(cfg.warmup_ratio * run.total_steps),
                              num_training_steps=run.total_steps)  # fmt: skip
    module, optimizer = acc.prepare(run.module, optimizer)

    state: dict[str, Any] = {"step": 0, "best": None, "bad_evals": 0, "stopped_early": False, "evals": [],
                             "train_seconds": 0.0, "train_tokens": 0}  # fmt: skip
    pointer = _pointer(out) if run.mode == "resume" else {}
    if pointer.get("last"):
        state = load_checkpoint(acc, out / "checkpoints" / pointer["last"], run.model, optimizer, scheduler)
        acc.print(f"resuming {out} at step {state['step']} of {run.total_steps}")
    keep = state["step"] if run.mode == "resume" else None
    if acc.is_main_process:
        train_log = CsvLog(out / "train_log.csv", ["step", "epoch", "loss", "lr", "tokens_per_s", "elapsed_s"], keep)
        valid_log = CsvLog(out / "valid_log.csv", ["step", f"HR@{k}", f"NDCG@{k}", "seconds"], keep)

    def evaluate_and_save(step: int) -> None:
        row = {"step": step, **run_validation(run)}
        state["evals"].append(row)
        if acc.is_main_process:
            valid_log.write(row)
        improved = state["best"] is None or row[f"NDCG@{k}"] > state["best"][f"NDCG@{k}"]
        state["best"], state["bad_evals"] = (row, 0) if improved else (state["best"], state["bad_evals"] + 1)
        state["stopped_early"] = bool(cfg.patience) and state["bad_evals"] >= cfg.patience
        save_checkpoint(acc, out, run.model, optimizer, scheduler, state, best=improved)

    bar = tqdm(total=run.total_steps, initial=state["step"], disable=not (acc.is_main_process and cfg.progress),
               unit="step", desc="train", dynamic_ncols=True)  # fmt: skip
    try:
        if state["step"] == 0 and cfg.eval_at_start and not state["evals"]:
            evaluate_and_save(0)
            first = state["evals"][0]
            acc.print(f"untuned: HR@{k} {first[f'HR@{k}']:.4f} NDCG@{k} {first[f'NDCG@{k}']:.4f}")
        module.train()
        while state["step"] < run.total_steps and not state["stopped_early"]:
            t0 = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            loss, tokens = train_step(run, module, optimizer, scheduler, state["step"])
            seconds = time.perf_counter() - t0
            state["step"] += 1
            step = state["step"]
            state["train_seconds"] += seconds
            state["train_tokens"] += tokens
            if acc.is_main_process and (step % cfg.log_every == 0 or step == run.total_steps):
                train_log.write({"step": step, "epoch": run.locate(step - 1)[0], "loss": loss, "lr": lr,
                                 "tokens_per_s": tokens / seconds, "elapsed_s": state["train_seconds"]})  # fmt: skip
            last_eval = {f"ndcg@{k}": f"{state['evals'][-1][f'NDCG@{k}']:.4f}"} if state["evals"] else {}
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / seconds:.0f}", **last_eval)
            if step_callback is not None:
                step_callback(step, loss)
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == run.total_steps:
                evaluate_and_save(step)
                module.train()
            elif cfg.save_every and step % cfg.save_every == 0:
                save_checkpoint(acc, out, run.model, optimizer, scheduler, state, best=False)
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
    pointer = _pointer(out)
    chosen = pointer.get("best") or pointer.get("last")
    if chosen:
        set_peft_model_state_dict(run.model, load_file(out / "checkpoints" / chosen / "adapter_model.safetensors"))
    summary = {
        "output_dir": str(out), "steps": state["step"], "total_steps": run.total_steps,
        "stopped_early": state["stopped_early"], "adapter_from_step": int(chosen.split("-")[1]) if chosen else 0,
        "untuned": next((e for e in state["evals"] if e["step"] == 0), None), "best": state["best"],
        "last_eval": state["evals"][-1] if state["evals"] else None, "examples_per_epoch": len(run.epochs[0][0]),
        "train_seconds": round(state["train_seconds"], 1),
        "train_tokens_per_s": round(state["train_tokens"] / max(state["train_seconds"], 1e-9), 1),
    }  # fmt: skip
    if run.acc.is_main_process:
        run.model.save_pretrained(out)
        run.tokenizer.save_pretrained(out)
        plot_log(out)
        if run.cfg.merge:
            merged = run.model.merge_and_unload()
            merged.save_pretrained(out / "merged")
            run.tokenizer.save_pretrained(out / "merged")
            summary["merged"] = str(out / "merged")
        _atomic_text(out / "train_summary.json", json.dumps(summary, indent=2))
    run.acc.wait_for_everyone()
    return summary


# ---------------------------------------------------------------------------------- loading back
def read_run_config(output_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """(config, resolved extras) of a training run's folder."""
    path = Path(output_dir) / CONFIG_FILE
    if not path.is_file():
        raise TrainError(f"{output_dir}: not an m6gen training output ({CONFIG_FILE} missing)")
    saved = json.loads(path.read_text())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved["config"].items() if k in names}), saved.get("resolved", {})


def load_trained(output_dir: str | Path, dtype: str = "float32", merge: bool = False):
    """(model, tokenizer, config) of a training output, ready for ``constrained_beam_search``.

    Loads the base model named in ``m6gen_config.json`` plus the LoRA adapter (the best one
    when validation ran); ``merge=True`` folds the adapter into the weights (faster decoding).
    The catalog trie is in ``<output_dir>/trie`` (``m6gen.trie.CatalogTrie.load``).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    from m6gen.model import load_model

    cfg, _ = read_run_config(output_dir)
    if not (Path(output_dir) / "adapter_config.json").is_file():
        raise TrainError(f"{output_dir}: no adapter saved yet (the run did not finish; use --resume)")
    tokenizer = AutoTokenizer.from_pretrained(str(output_dir))
    model = PeftModel.from_pretrained(load_model(cfg.model, cfg.gguf_file, dtype=dtype), str(output_dir))
    model.eval()
    return (model.merge_and_unload() if merge else model), tokenizer, cfg


# ---------------------------------------------------------------------------------- CLI
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m6gen train",
        description="LoRA-tune a causal LM to write the next item's title after a behavior prompt.",
        epilog="Options can also come from --config FILE (YAML/JSON, keys as the option names); flags win.",
    )
    add_config_args(parser, TrainConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        summary = train(config_from_args(TrainConfig, args))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue from the last checkpoint with --resume", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch, one summary, not one per process
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
