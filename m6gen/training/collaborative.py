"""Collaborative item tokens in a training run (``--cf-source``): the source checked against the run's
split and template, then attached to the base model before LoRA (see :mod:`m6gen.hybrid`)."""

from __future__ import annotations

import sys
from pathlib import Path

from m6gen.config import TrainConfig, TrainError


def collaborative_table(cfg: TrainConfig, split, catalog, say=print):
    """With ``--cf-source``: its item table, read and checked before the model loads (a bad file fails
    in seconds, not after the model); a note when some trained items get no token from it. Else None."""
    if not cfg.cf_source:
        return None
    from m6gen.data import item_popularity
    from m6gen.hybrid import load_item_table

    check_cf_split(cfg, split)
    # only items with a training interaction have a trained vector (new items held out have none)
    trained = item_popularity(split, len(catalog)) > 0
    table = load_item_table(cfg.cf_source, len(catalog), trained=trained)
    blank = int((trained & ~table.known).sum())
    if blank:
        say(
            f"note: --cf-source {cfg.cf_source}: {blank} of {int(trained.sum())} items with training interactions "
            "have an all-zero or non-finite row there and get no collaborative token"
        )
    return table


def attach_collaborative(cfg: TrainConfig, base, tokenizer, split, catalog, template, table, say=print):
    """With ``--cf-source`` (``table``: :func:`collaborative_table`'s): the base model's input embedding
    wrapped for collaborative tokens (:mod:`m6gen.hybrid`), after checking that the template places
    them; else None."""
    if table is None:
        return None
    from m6gen.hybrid import attach
    from m6gen.hybrid.placeholders import places_states, places_tokens

    history = [catalog[i] for i in max(split.train.values(), key=len)]
    states = places_states(template, history, tokenizer)
    if not states and not places_tokens(template, history, tokenizer):
        raise TrainError(
            f"--cf-source given, but template {template.path} does not place collaborative tokens: "
            "write {{ it.cf }} (or {{ it.state }}) for history items (as prompts/hybrid.jinja does)"
        )
    if cfg.cf_state_frozen and not states:
        raise TrainError(
            f"--cf-state-frozen: template {template.path} places no user-state tokens ({{{{ it.state }}}})"
        )
    sequence = state_model(cfg, len(catalog), template) if states else None
    embedding = attach(base, table, offset=len(tokenizer), hidden=cfg.cf_hidden, sequence=sequence)
    if cfg.cf_align_steps:
        align(cfg, embedding, tokenizer, template, catalog, split, say)
    if cfg.readout_loss:
        embedding.add_readout()
    return embedding


def state_model(cfg: TrainConfig, n_items: int, template):
    """The SASRec behind ``{{ it.state }}``: the --cf-source itself, which must then be a saved SASRec folder."""
    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.model import ModelError

    folder = Path(cfg.cf_source)
    if not (folder / "sasrec.pt").is_file() or not (folder / "sasrec.json").is_file():
        raise TrainError(
            f"template {template.path} places user-state tokens ({{{{ it.state }}}}), which need a collaborative "
            f"model, but --cf-source {cfg.cf_source} is not a saved SASRec folder (e.g. <out>/sasrec of "
            "`m6gen baselines --out <out>`)"
        )
    try:
        sequence = load_sasrec(folder, n_items)
    except ModelError as err:  # a damaged sasrec.pt, or a SASRec of another catalog
        raise TrainError(f"--cf-source: {err}") from None
    return sequence


def align(cfg: TrainConfig, embedding, tokenizer, template, catalog, split, say=print) -> None:
    """--cf-align-steps: each projector first learns to read as a title (see :mod:`m6gen.hybrid.align`)."""
    from m6gen.hybrid.align import align_projector, align_state_projector, title_embeddings

    targets = title_embeddings(embedding, tokenizer, template.render_targets(catalog))
    losses = align_projector(embedding, targets, cfg.cf_align_steps)
    if losses:  # none when no item has a vector
        before, after = losses
        say(f"projector aligned to the titles in {cfg.cf_align_steps} steps: loss {before:.3f} -> {after:.3f}")
    if embedding.has_states and not cfg.cf_state_frozen:
        losses = align_state_projector(embedding, targets, split.train, cfg.cf_align_steps, seed=cfg.seed)
        if losses:
            before, after = losses
            say(
                f"state projector aligned to the next titles in {cfg.cf_align_steps} steps: "
                f"loss {before:.3f} -> {after:.3f}"
            )


def check_cf_split(cfg: TrainConfig, split) -> None:
    """A SASRec source saved by ``m6gen baselines``/``eval`` records the training interactions it saw
    (``../baselines.json``): under ``--new-items`` it must be these, or the vectors of the other items
    would carry what the held-out interactions taught them."""
    from m6gen.baselines.run import recorded_split, split_fingerprint

    saw = recorded_split(cfg.cf_source)
    if saw is not None and saw != split_fingerprint(split):
        message = f"--cf-source {cfg.cf_source}: that SASRec was trained on other training interactions than this run's"
        if cfg.new_items:
            raise TrainError(
                message + " (new items would leak through it): train it with the same --new-items, "
                f"e.g. m6gen baselines --new-items {cfg.new_items:g} --out DIR, and give DIR/sasrec"
            )
        print(f"note: {message}", file=sys.stderr)
