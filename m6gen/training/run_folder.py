"""A training run's config and output folder: options checked, folder reuse, checkpoints, logs, loading back."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from m6gen.config import TrainConfig, TrainError
from m6gen.files import write_atomic
from m6gen.runs import CONFIG_FILE, SAVED_TEMPLATES, read_json, read_run_config

# Options that may change between a run and its --resume: they do not change the weights.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")  # what peft's save_pretrained writes
SHARDED_WEIGHTS = "trainable_state.pt"  # FSDP checkpoints: the gathered LoRA weights under the wrapped module's names
OPERATIONAL = {
    "resume",
    "overwrite",
    "merge",
    "final_adapter",
    "log_every",
    "eval_batch_size",
    "output_dir",
    "progress",
    "threads",
}


def save_template(template, folder: Path) -> None:
    """Copy the template a run trains with into the run, so that editing, moving or deleting the
    original later changes nothing the run reads (its ``_*.jinja`` partials come along)."""
    folder.mkdir(exist_ok=True)
    partials = sorted(template.path.parent.glob("_*.jinja"))
    for src, name in [(template.path, f"{template.name}.jinja"), *((p, p.name) for p in partials)]:
        write_atomic(folder / name, src.read_text(encoding="utf-8"))


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
    templates = absolute(cfg.templates) if cfg.templates else None
    init_adapter = absolute(cfg.init_adapter) if cfg.init_adapter else None
    candidates = absolute(cfg.candidates) if cfg.candidates else None
    cf_source = absolute(cfg.cf_source) if cfg.cf_source else None
    if cf_source and not Path(cf_source).exists():
        raise TrainError(f"--cf-source {cfg.cf_source}: no such file or folder")
    if candidates and not (Path(candidates) / "sasrec.json").is_file():
        raise TrainError(
            f"--candidates {cfg.candidates}: no saved SASRec there (sasrec.json missing; "
            "m6gen eval --baselines SASRec saves one in <model>/baselines/sasrec)"
        )
    if init_adapter and not (Path(init_adapter) / "adapter_config.json").is_file():
        raise TrainError(
            f"--init-adapter {cfg.init_adapter}: no adapter_config.json there (not a finished run "
            "or peft adapter folder)"
        )
    return dataclasses.replace(
        cfg,
        data=data,
        model=model,
        template=template,
        templates=templates,
        init_adapter=init_adapter,
        candidates=candidates,
        cf_source=cf_source,
    )


def check_output_dir(cfg: TrainConfig) -> str:
    """What to do with ``--output-dir``: "new", "resume" or "overwrite"; TrainError when it holds something else."""
    out = Path(cfg.output_dir)
    if (out / CONFIG_FILE).is_file():
        old, _ = read_run_config(out)
        diffs = [
            f"{f.name}: {getattr(old, f.name)!r} there, {getattr(cfg, f.name)!r} here"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in OPERATIONAL
            and getattr(old, f.name) != getattr(cfg, f.name)
            and not (f.name == "target_modules" and cfg.target_modules is None)
        ]
        if cfg.overwrite:
            return "overwrite"
        if diffs:  # every difference: a resume needs all of them given again
            raise TrainError(
                f"{out}: holds a different run ({'; '.join(diffs)}); choose another --output-dir or pass --overwrite"
            )
        if cfg.resume:
            return "resume"
        raise TrainError(f"{out}: holds this run already; pass --resume to continue it or --overwrite to start over")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainError(f"{out}: exists and is not an m6gen training output; choose another --output-dir")
    if cfg.resume:  # a mistyped folder must not start a long run over from step 0
        raise TrainError(f"{out}: no run to resume there; check --output-dir, or leave out --resume to start one")
    # checked now, not after minutes of loading: the folder must be creatable
    parent = next((p for p in [out, *out.absolute().parents] if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TrainError(f"{out}: cannot create the output folder ({parent} is not a writable folder)")
    return "new"


def checkpoint_pointer(out: Path) -> dict[str, str | None]:
    """``checkpoints/latest.json`` of a run folder: the "last" and "best" checkpoint names ({} before the first)."""
    path = out / "checkpoints" / "latest.json"
    return read_json(path) if path.is_file() else {}


def gather_trainable(sharded, optimizer=None) -> tuple[dict, dict]:
    """(trainable weights, optimizer state) of an FSDP-wrapped module, whole, on the main process.

    Every process must call it (the shards are gathered); only the LoRA weights are gathered, not
    the frozen base model. Keys are the wrapped module's parameter names.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(sharded, options=options)
    return weights, (get_optimizer_state_dict(sharded, optimizer, options=options) if optimizer is not None else {})


def save_checkpoint(acc, out: Path, peft_model, optimizer, scheduler, state: dict, best: bool, sharded=None) -> None:
    """Write a complete checkpoint, then make it current by renaming it and replacing ``latest.json``.

    A kill at any moment leaves ``latest.json`` naming complete folders only; folders it no
    longer names (older steps, a half-written ``.tmp-*``) are deleted afterwards. ``sharded``:
    the FSDP-wrapped loss module, whose weights and optimizer state are gathered first.
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
    if sharded is not None:
        weights, optimizer_state = gather_trainable(sharded, optimizer)
    if acc.is_main_process:
        if sharded is None:
            peft_model.save_pretrained(tmp)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        else:  # the loss module holds the peft model as ``.model``: its names less that prefix are peft's
            peft_model.save_pretrained(tmp, state_dict={k.removeprefix("model."): v for k, v in weights.items()})
            torch.save(weights, tmp / SHARDED_WEIGHTS)
            torch.save(optimizer_state, tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(ck / name, ignore_errors=True)  # unreferenced leftover of a killed save
        os.replace(tmp, ck / name)
        old = checkpoint_pointer(out)
        write_atomic(ck / "latest.json", json.dumps({"last": name, "best": name if best else old.get("best")}))
        keep = set(checkpoint_pointer(out).values())
        for d in ck.iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
    acc.wait_for_everyone()


def load_checkpoint(acc, folder: Path, peft_model, optimizer, scheduler, sharded=None) -> dict:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint folder; returns the trainer state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if sharded is None:
        if (folder / SHARDED_WEIGHTS).is_file():
            raise TrainError(f"{folder}: written by an FSDP run; resume it the way it was launched")
        set_peft_model_state_dict(peft_model, load_file(folder / "adapter_model.safetensors"))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    else:  # every process reads the whole state and keeps its shards
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        if not (folder / SHARDED_WEIGHTS).is_file():
            raise TrainError(f"{folder}: written by a run without FSDP; resume it the way it was launched")
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(sharded, torch.load(folder / SHARDED_WEIGHTS, weights_only=True), options=options)
        set_optimizer_state_dict(
            sharded, optimizer, torch.load(folder / "optimizer.pt", weights_only=True), options=options
        )
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng_file = folder / f"rng-{acc.process_index}.pt"
    rng = torch.load(rng_file if rng_file.is_file() else folder / "rng-0.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return read_json(folder / "trainer_state.json")


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
        write_atomic(path, text.getvalue())
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


# ---------------------------------------------------------------------------------- loading back
def load_init_adapter(peft_model, folder: str, cfg: TrainConfig) -> None:
    """Copy the LoRA weights saved in ``folder`` into ``peft_model``; TrainError when their shapes differ."""
    from peft import load_peft_weights, set_peft_model_state_dict

    saved = read_json(Path(folder) / "adapter_config.json")
    ours = sorted(cfg.target_modules)
    theirs = saved.get("target_modules")
    theirs = sorted(theirs) if isinstance(theirs, list) else [theirs]
    if saved.get("r") != cfg.lora_r or theirs != ours or saved.get("lora_alpha", cfg.lora_alpha) != cfg.lora_alpha:
        # another alpha would rescale the loaded update (scale = alpha / r)
        raise TrainError(
            f"--init-adapter {folder}: its LoRA has r={saved.get('r')}, alpha={saved.get('lora_alpha')} "
            f"on {', '.join(map(str, theirs))}; this run has r={cfg.lora_r}, alpha={cfg.lora_alpha} on "
            f"{', '.join(ours)}"
        )
    result = set_peft_model_state_dict(peft_model, load_peft_weights(folder, device="cpu"))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if any("cf_readout" in k for k in result.unexpected_keys):  # a fresh readout is fine the other way round
        raise TrainError(
            f"--init-adapter {folder}: its adapter holds a collaborative readout trained with --readout-loss; "
            "give --readout-loss here too, or start from a run without it"
        )
    if missing or result.unexpected_keys:
        raise TrainError(
            f"--init-adapter {folder}: its weights do not fit this model ({(missing or result.unexpected_keys)[0]} ...)"
        )


def write_run_folder(cfg: TrainConfig, out: Path, template, tokenizer, target_texts, collaborative, resolved) -> None:
    """What a run folder holds before the first step: the config (with what it ``resolved`` to), the
    template, the collaborative item table and the catalog trie."""
    from m6gen import __version__
    from m6gen.model import build_catalog_trie, resolve_model, tokenizer_fingerprint

    out.mkdir(parents=True, exist_ok=True)
    name, gguf = resolve_model(cfg.model, cfg.gguf_file)
    resolved = {
        "model_path": name,
        "gguf_file": gguf,
        "template_path": str(template.path),
        **resolved,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "m6gen_version": __version__,
    }
    write_atomic(out / CONFIG_FILE, json.dumps({"config": dataclasses.asdict(cfg), "resolved": resolved}, indent=2))
    save_template(template, out / SAVED_TEMPLATES)
    if collaborative is not None:
        collaborative.save(out)
    build_catalog_trie(tokenizer, target_texts, cache_dir=out / "trie")
