"""An alignment stage before LoRA (``m6gen train --cf-align-steps N``), after LLaRA's curriculum: the
projector alone learns to map each item's collaborative vector to the mean input embedding of its
title's tokens, so a token starts out reading as "this title" rather than as noise. With user-state
tokens, their projector learns likewise to map the state after a training prefix to the next item's
title: the state token starts out reading as "what comes next".

Cheap: no language-model forward, only the projector on the items that have a vector (full batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def title_embeddings(embedding, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """(n, width) float32: the mean input embedding of each text's tokens."""
    weight = embedding.text.weight.detach().float()
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
        rows.append(weight[torch.tensor(ids)].mean(0))
    return torch.stack(rows)


def align_projector(embedding, targets: torch.Tensor, steps: int, lr: float = 1e-3) -> list[float]:
    """Train ``embedding.cf_projector`` for ``steps`` full-batch Adam steps so that the items with a
    vector project onto ``targets`` (rows in catalog order): the mean squared error, scaled by the
    targets' mean squared norm. Returns the loss before and after."""
    known = torch.from_numpy(np.flatnonzero(embedding.table.known))
    if not len(known) or steps <= 0:
        return []
    return fit_projector(embedding.cf_projector, embedding.cf_vectors[known], targets[known], steps, lr)


def align_state_projector(
    embedding, targets: torch.Tensor, train: dict, steps: int, lr: float = 1e-3, max_pairs: int = 20_000, seed: int = 0
) -> list[float]:
    """Train ``embedding.cf_state_projector`` so that the state after a training prefix projects onto
    the next item's ``targets`` row, on at most ``max_pairs`` (prefix, next item) pairs of the training
    sequences drawn with ``seed`` (items without a vector are left out, as in prompts). Returns the
    loss before and after."""
    known = embedding.table.known
    rows = [np.array([i for i in items if known[i]], dtype=np.int64) for items in train.values()]
    rows = [row for row in rows if len(row) >= 2]
    if not rows or steps <= 0:
        return []
    states = embedding.sequence_states([row[:-1] for row in rows])  # after each prefix, row-major
    nexts = torch.from_numpy(np.concatenate([row[1:] for row in rows]))
    picked = torch.from_numpy(np.random.default_rng([seed, 5]).permutation(len(nexts))[:max_pairs])
    return fit_projector(embedding.cf_state_projector, states[picked], targets[nexts[picked]], steps, lr)


def fit_projector(projector, inputs: torch.Tensor, goal: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Full-batch Adam on the scaled mean squared error between ``projector(inputs)`` and ``goal``."""
    dtype = next(projector.parameters()).dtype
    vectors, goal = inputs.to(dtype), goal.to(dtype)
    scale = goal.float().pow(2).sum(-1).mean().clamp(min=1e-12)

    def loss() -> torch.Tensor:
        return (projector(vectors).float() - goal.float()).pow(2).sum(-1).mean() / scale

    optimizer = torch.optim.Adam(projector.parameters(), lr=lr)
    with torch.no_grad():
        losses = [float(loss())]
    for _ in range(steps):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        losses.append(float(loss()))
    return losses
