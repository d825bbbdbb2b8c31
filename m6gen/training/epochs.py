"""A run's examples and batches for every epoch, decided before the first step, so ``--resume`` finds
the same order (``prepare_run`` in :mod:`m6gen.training.prepare` calls :func:`plan_epochs`).

Three ways to turn the train split into examples: history packing (one sequence teaches
``--history-block`` next items, when the template is token-incremental), one next item per
example, or one per example with a retriever's candidates in the prompt (``--candidates``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from m6gen.config import TrainConfig, TrainError
from m6gen.training import examples as td
from m6gen.training.loss import check_loss_paths


@dataclass
class ExampleSources:
    """What a run's examples are built from."""

    template: Any
    tokenizer: Any
    dataset: Any  # its catalog and user profiles
    split: Any  # its train lists only
    target_ids: list[list[int]]  # each catalog item's target tokens (the trie's sequences)
    collaborative: Any = None  # the CollaborativeEmbedding (--cf-source)
    retriever: Any = None  # the SASRec listing candidates (--candidates)


@dataclass
class EpochPlan:
    """What :func:`plan_epochs` decided."""

    epochs: list[tuple[list, list]]  # per epoch: (examples, micro-batches of rows of example indices)
    n_steps: int  # optimizer steps over all epochs
    history_packing: bool  # one sequence teaches several next items
    packing: bool  # several examples per row (off when the model's loss differs with it)
    fast_head: bool  # the LM head runs on target positions only
    dropped_too_long: int  # first epoch: examples longer than --max-seq-len, dropped
    missed: int | None  # first epoch: steps dropped because the retriever missed their target (--candidates)

    @property
    def first(self) -> list:
        return self.epochs[0][0]

    def record(self) -> dict[str, Any]:
        """What the run folder's config records of the plan."""
        return {
            "packing": self.packing,
            "history_packing": self.history_packing,
            "fast_head": self.fast_head,
            "examples_per_epoch": len(self.first),
            "steps_per_epoch": sum(len(x.items) for x in self.first),
            "dropped_too_long": self.dropped_too_long,
            "target_not_in_candidates": self.missed,
        }

    def describe(self) -> str:
        missed = f", {self.missed} whose target the retriever missed dropped" if self.missed is not None else ""
        packed = " (history packing)" if self.history_packing else ""
        return (
            f"{len(self.first)} examples/epoch teaching {sum(len(x.items) for x in self.first)} next items{packed} "
            f"({self.dropped_too_long} too long dropped{missed})"
        )


def uses_history_packing(cfg: TrainConfig, src: ExampleSources) -> bool:
    """Whether the run packs whole histories (``--history-packing auto|on``), refused when it cannot."""
    if cfg.history_packing == "on" and cfg.candidates:
        raise TrainError("history packing cannot be used with --candidates (each step lists its own candidates)")
    full_tokens = td.SoftTokens(src.collaborative) if src.collaborative is not None else None  # no dropout
    # a prompt listing candidates is not a prefix of the next step's prompt
    history = (
        not cfg.candidates
        and cfg.history_packing != "off"
        and td.is_token_incremental(
            src.template,
            src.tokenizer,
            src.dataset.catalog,
            src.target_ids,
            src.split.train,
            profiles=src.dataset.profiles,
            soft=full_tokens,
        )
    )
    if cfg.history_packing == "on" and not history:
        raise TrainError(
            f"history packing needs a token-incremental template (a prompt followed by the next target "
            f"is the next prompt, as in prompts/sequence.jinja); {src.template.path} is not"
        )
    return history


def epoch_examples(cfg: TrainConfig, src: ExampleSources, epoch: int, history: bool) -> tuple[list, int, int | None]:
    """One epoch's examples, how many were dropped as too long, and how many steps' targets the
    retriever missed (None without one)."""
    from m6gen.baselines.retrieval import training_candidates

    train, catalog = src.split.train, src.dataset.catalog
    sample = dict(
        min_history=cfg.min_prompt_items,
        per_user=cfg.examples_per_user,
        sampling=cfg.step_sampling,
        seed=cfg.seed,
        epoch=epoch,
    )
    build: dict[str, Any] = dict(profiles=src.dataset.profiles, max_len=cfg.max_seq_len)
    if src.collaborative is not None:
        build["soft"] = td.SoftTokens(src.collaborative, cfg.cf_dropout, cfg.seed, epoch)
    if history:
        blocks = td.sample_blocks(train, block=cfg.history_block, **sample)
        built = td.build_block_examples(blocks, train, catalog, src.template, src.tokenizer, src.target_ids, **build)
        return *built, None
    steps = td.sample_steps(train, **sample)
    cands, missed = None, None
    if src.retriever is not None:
        steps, cands, missed = training_candidates(src.retriever, train, steps, cfg.n_candidates)
    built = td.build_examples(
        steps, train, catalog, src.template, src.tokenizer, src.target_ids, candidates=cands, **build
    )
    return *built, missed


def plan_epochs(cfg: TrainConfig, src: ExampleSources, module, world: int) -> EpochPlan:
    """Every epoch's examples and batches for ``world`` processes; the loss shortcuts of ``module``
    are checked on real examples first."""
    history = uses_history_packing(cfg, src)
    built = [epoch_examples(cfg, src, e, history) for e in range(cfg.epochs)]
    examples = [(b[0], b[1]) for b in built]
    if not examples[0][0]:
        raise TrainError(
            f"{cfg.data}: no training examples (users need more than "
            f"min_prompt_items={cfg.min_prompt_items} train items)"
        )
    # Check the two shortcuts on real examples before trusting them.
    soft_from = src.collaborative.offset if src.collaborative is not None else None
    fast_ok, packed_ok = check_loss_paths(
        module, sorted(examples[0][0], key=len)[:4], src.tokenizer.pad_token_id, soft_from=soft_from
    )
    packing = cfg.packing and packed_ok
    epochs, n_steps = [], 0
    for epoch, (exs, _) in enumerate(examples):
        batches = td.plan_batches(
            [len(x) for x in exs],
            pack_len=cfg.pack_len,
            batch_size=cfg.train_batch_size,
            packed=packing,
            seed=cfg.seed,
            epoch=epoch,
        )
        batches = batches[: len(batches) - len(batches) % world]  # every process gets a batch in every step
        epochs.append((exs, batches))
        n_steps += -(-len(batches) // (cfg.grad_accum * world))
    return EpochPlan(epochs, n_steps, history, packing, fast_ok, built[0][1], built[0][2])
