"""The options of a training run: LoRA and training groups, and ``TrainConfig``, all of a run's
groups in one flat object (``cfg.lr``, ``cfg.template``), written resolved to ``m6gen_config.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from m6gen.config.groups import (
    ConfigError,
    DataArgs,
    ModelArgs,
    PromptArgs,
    RuntimeArgs,
    at_least,
    one_of,
    option,
)


class TrainError(ConfigError):
    """A training option or output folder is unusable; the message says which and what to do."""


@dataclass
class LoraArgs:
    """The LoRA adapter."""

    _argument_group_name = "lora"

    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = option(0.05, "dropout on LoRA inputs")
    target_modules: list[str] | None = option(None, "module names to adapt, or all-linear (default: per architecture)")
    init_adapter: str | None = option(
        None,
        "start the LoRA weights from this adapter (a run folder or a peft adapter folder; same rank and target "
        "modules) with a fresh optimizer and schedule, e.g. to train a finished run further",
    )

    def __post_init__(self):
        at_least(self, 1, "lora_r", "lora_alpha")
        if not 0 <= self.lora_dropout < 1:
            raise TrainError(f"lora_dropout: expected a number in [0, 1), got {self.lora_dropout}")
        if self.target_modules is not None:  # "q_proj,v_proj" means the same as "q_proj v_proj"
            self.target_modules = [p for v in self.target_modules for p in str(v).split(",") if p]


@dataclass
class HybridArgs:
    """Collaborative item tokens: ``{{ it.cf }}`` in a template (e.g. ``hybrid``) shows each history
    item's collaborative vector as one soft token (see ``m6gen.hybrid``)."""

    _argument_group_name = "hybrid"

    cf_source: str | None = option(
        None,
        "items x d collaborative embeddings for {{ it.cf }}: a saved SASRec folder (`m6gen baselines --out X` "
        "writes X/sasrec) or a .npy/.safetensors file, rows in catalog order (none: titles only; tune-prompts: "
        "with --train-steps)",
    )
    cf_hidden: int = option(256, "hidden width of the MLP projecting a collaborative vector to a token embedding")
    cf_dropout: float = option(
        0.2,
        "chance that a history item's collaborative token is left out of a training prompt, so that the model "
        "also works for items without one (new items)",
    )

    cf_align_steps: int = option(
        0,
        "before LoRA, full-batch steps that teach the projector alone to map each item's vector to its title's "
        "mean token embedding (LLaRA-style alignment, no LM forward: seconds for item tokens, a few minutes on a "
        "2-core CPU with the state projector; 0: none)",
    )
    cf_lr_scale: float = option(
        1.0,
        "the projectors' (and a --readout-loss readout's) learning rate as a multiple of --lr (they start from "
        "scratch, while LoRA adapts a trained model)",
    )

    cf_state_frozen: bool = option(
        False,
        "keep the user-state projector ({{ it.state }}) where it starts, at random and scaled to token embeddings: "
        "not aligned, not trained, so the state token keeps all of SASRec's state (aligned and trained, it loses "
        "some: docs/results.md); the item projector still learns",
    )

    readout_loss: float = option(
        0.0,
        "train a collaborative readout with LoRA (E4SRec-style: the state before each next item's title scored "
        "against every item's vector): the weight of its cross-entropy per next item, added to the title tokens' "
        "summed loss. It learns at the projectors' rate and is saved with the adapter; --decode-prior Readout "
        "searches with it (0: none; needs --cf-source)",
    )

    def __post_init__(self):
        at_least(self, 1, "cf_hidden")
        at_least(self, 0, "readout_loss")
        if self.readout_loss and not self.cf_source:
            raise TrainError("readout_loss: the readout scores items by their collaborative vectors: give --cf-source")
        at_least(self, 0, "cf_align_steps")
        if self.cf_state_frozen and not self.cf_source:
            raise TrainError("cf_state_frozen: user-state tokens read a SASRec: give --cf-source")
        if not self.cf_lr_scale > 0:
            raise TrainError(f"cf_lr_scale: expected a number > 0, got {self.cf_lr_scale}")
        if not 0 <= self.cf_dropout < 1:
            raise TrainError(f"cf_dropout: expected a number in [0, 1), got {self.cf_dropout}")


@dataclass
class TrainArgs:
    """Examples, optimization, validation and the output folder."""

    _argument_group_name = "training"

    # examples
    min_prompt_items: int = option(1, "fewest history items a training example shows")
    examples_per_user: int | None = option(
        2, "examples per user per epoch: next-item steps, or blocks with history packing (none: all)"
    )
    step_sampling: Literal["random", "last"] = option(
        "random", "which steps: random (fresh each epoch) or the last ones"
    )
    rare_target_power: float = option(
        0.0,
        "weigh each target title's loss by (its item's training count)^-POWER, scaled to a mean of 1 over the "
        "training targets, so rare items are taught more (0: every target alike; 1: inverse popularity)",
    )
    max_seq_len: int = option(1024, "longest example in tokens (longer ones are dropped, counted in the log)")
    # optimization
    epochs: int = option(1, "passes over the sampled examples")
    max_steps: int | None = option(40, "stop after this many optimizer steps (none: epochs decide)")
    train_batch_size: int = option(2, "packed rows per micro-batch")
    pack_len: int = option(512, "tokens per packed row")
    packing: bool = option(True, "pack several examples per row (position ids restart per example)")
    history_packing: Literal["auto", "on", "off"] = option(
        "auto",
        "teach a block of consecutive next items per sequence: auto (when the template is token-incremental, "
        "e.g. sequence), on (required) or off",
    )
    history_block: int = option(20, "next items per history-packed sequence (after the max_history items before them)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-3, "peak learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of steps with linear warm-up")
    lr_scheduler: str = option("cosine", "transformers scheduler: cosine, linear, constant_with_warmup, ...")
    max_grad_norm: float = option(1.0, "gradient clipping (0: none)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = option(
        "auto", "auto (bf16 where the CPU/GPU computes it natively), no, bf16 or fp16 (autocast)"
    )
    seed: int = option(0, "seed of LoRA init, dropout, step sampling and batch order")
    # validation and checkpoints
    eval_every: int = option(0, "validate every N steps (0: only at the end)")
    eval_users: int = option(100, "validation users (a fixed random subset)")
    eval_beams: int = option(10, "beams of the validation search (top-k = min(10, beams))")
    eval_batch_size: int = option(16, "users per validation beam-search batch")
    eval_at_start: bool = option(True, "validate the untuned model first (the baseline to beat)")
    patience: int = option(3, "stop after this many validations without improvement (0: never)")
    save_every: int | None = option(None, "checkpoint every N steps (none: at each validation)")
    final_adapter: Literal["best", "last"] = option(
        "last",
        "adapter the output folder holds: last, or best (highest validation NDCG among the checkpoints; on "
        "--eval-users 100 a noisy choice, which kept the untuned adapter of short runs)",
    )
    # output
    output_dir: str = option("runs/lora", "output folder")
    resume: bool = option(False, "continue the run in --output-dir from its last complete checkpoint")
    overwrite: bool = option(False, "delete a previous m6gen run in --output-dir first")
    merge: bool = option(False, "also save the adapter merged into the base weights (merged/)")
    log_every: int = option(1, "write a train_log.csv row every N steps")

    def __post_init__(self):
        at_least(
            self,
            1,
            "min_prompt_items",
            "max_seq_len",
            "epochs",
            "train_batch_size",
            "pack_len",
            "grad_accum",
            "history_block",
            "eval_users",
            "eval_beams",
            "eval_batch_size",
            "log_every",
        )
        at_least(self, 1, "examples_per_user", "max_steps", "save_every", optional=True)
        at_least(self, 0, "eval_every", "patience", "weight_decay", "max_grad_norm", "rare_target_power")
        if not self.lr > 0:
            raise TrainError(f"lr: expected a number > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainError(f"warmup_ratio: expected a number in [0, 1), got {self.warmup_ratio}")
        one_of(self, "mixed_precision", ("auto", "no", "bf16", "fp16"))
        one_of(self, "history_packing", ("auto", "on", "off"))
        one_of(self, "final_adapter", ("best", "last"))
        one_of(self, "step_sampling", ("random", "last"))


TRAIN_GROUPS = (DataArgs, PromptArgs, ModelArgs, HybridArgs, LoraArgs, TrainArgs, RuntimeArgs)


@dataclass
class TrainConfig(RuntimeArgs, TrainArgs, LoraArgs, HybridArgs, ModelArgs, PromptArgs, DataArgs):
    """Everything a training run depends on, flat; written resolved to ``m6gen_config.json``."""

    def __post_init__(self):
        try:
            for group in TRAIN_GROUPS:
                group.__post_init__(self)
        except TrainError:
            raise
        except ConfigError as err:
            raise TrainError(str(err)) from None
        # what "the trained run's, else ..." means when there is no trained run yet
        self.template = self.template or "titles"
        self.max_history = self.max_history or 20
        self.n_candidates = self.n_candidates or 20
        self.model = self.model or "default"
        self.new_items = self.new_items or 0.0  # a run records its fraction: 0 is the standard split

    @classmethod
    def from_groups(cls, *groups) -> TrainConfig:
        from dataclasses import asdict

        values = {}
        for g in groups:
            values.update(asdict(g))
        return cls(**values)
