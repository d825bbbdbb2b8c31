"""A collaborative readout: the language model's state at the end of a prompt, scored against every
catalog item's collaborative vector, after E4SRec's item head (Li et al., 2023).

The model reads collaborative tokens in (``{{ it.cf }}``, ``{{ it.state }}``), but writes titles out:
what it learned of the collaborative signal must then pass through the title tokens' LoRA-tuned
logits. The readout is a second way out::

    score(item | prompt) = (W · normalize(h_prompt)) · e_item + b_item

``e_item``: the run's frozen item table (zero for an item without a vector), ``W`` and ``b``: trained by
full-softmax cross-entropy on the next item of training prefixes, in one of two ways:

- after training, on the frozen model's prompt states (``m6gen fit-readout``), saved in the run folder
  (``readout.safetensors``, ``readout.json``);
- with LoRA (``m6gen train --readout-loss``), so that every packed next item teaches it and the states
  are shaped for it (E4SRec's setup), saved with the adapter as ``cf_readout``.

A run with both uses the fitted file. Its log-probabilities join the beam search as an item prior
(:func:`m6gen.decoding.search.constrained_beam_search`), so outputs are still titles under the trie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from m6gen.hybrid.item_table import CollaborativeError
from m6gen.hybrid.placeholders import READOUT_FILE, READOUT_INFO


class ItemReadout(nn.Module):
    """Item logits from prompt states: ``(W · (h - mean) / std) · e_item + b_item``, where ``W`` is one
    linear map, or with ``hidden`` > 0 a two-layer MLP (linear, GELU, linear)."""

    def __init__(self, table: np.ndarray, width: int, hidden: int = 0):
        super().__init__()
        # (I, d) frozen; the run's own table, so not in the readout's saved state
        self.register_buffer("items", torch.from_numpy(np.asarray(table, dtype=np.float32)), persistent=False)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        dim = self.items.shape[1]
        self.hidden = hidden
        if hidden:
            self.project = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))
        else:
            self.project = nn.Linear(width, dim)
        self.bias = nn.Parameter(torch.zeros(len(self.items)))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(B, width) prompt states -> (B, items) logits."""
        x = ((states.float() - self.mean.float()) / self.std.float()).to(self.bias.dtype)
        return self.project(x).float() @ self.items.float().T + self.bias.float()

    @torch.no_grad()
    def log_probs(self, states: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, items) float64 log-probabilities over the catalog."""
        states = torch.as_tensor(states).to(self.mean.device)
        return torch.log_softmax(self(states), dim=-1).double().cpu().numpy()


class ReadoutEnsemble(nn.Module):
    """Readouts fitted apart, each with its own seed and held-out users (bagging). One fit's ranking
    moves with its seed (validation NDCG@10 0.92 to 0.98 x SASRec's for five seeds, docs/results.md); the
    normalized mean of several members' log-probabilities is steadier, and every user's pairs train
    most of them."""

    def __init__(self, members: list[ItemReadout]):
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def mean(self) -> torch.Tensor:  # where the readouts live, as an ItemReadout's
        return self.members[0].mean

    @torch.no_grad()
    def log_probs(self, states: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, items) float64: the members' mean log-probability, normalized over the catalog."""
        mean = np.mean([member.log_probs(states) for member in self.members], axis=0)
        return mean - np.logaddexp.reduce(mean, axis=1, keepdims=True)


@dataclass(frozen=True)
class ReadoutFit:
    """How a readout was fitted, and how it did: saved beside it."""

    examples: int  # training (prefix, next item) pairs
    held_out: int  # of them, held out to choose the epoch
    epochs: int  # the chosen epoch (1-based)
    held_out_loss: float  # cross-entropy on the held-out pairs at that epoch
    first_loss: float  # the same before training: the gain is what the readout learned
    distill: float = 0.0  # the share of the loss matched to a teacher's distributions
    hidden: int = 0  # the readout's MLP width (0: one linear map)
    teacher_temperature: float = 1.0  # the teacher's distribution was softmax(logits / this)


def prompt_states(
    model, prompt_ids: list[list[int]], pad_token_id: int, batch_size: int = 16, progress=None
) -> np.ndarray:
    """(prompts, width) float32: the model's last hidden state at each prompt's last token, where it
    writes the first title token. Left-padded batches of similar length, as the search prefills."""
    return states_at(model, prompt_ids, [[len(p) - 1] for p in prompt_ids], pad_token_id, batch_size, progress)


def states_at(
    model,
    prompt_ids: list[list[int]],
    positions: list[list[int]],
    pad_token_id: int,
    batch_size: int = 16,
    progress=None,
) -> np.ndarray:
    """(positions in all, width) float32: the last hidden state at the given positions of each
    prompt, prompt by prompt: one forward reads every prefix of a prompt whose text it extends."""
    return layer_states_at(model, prompt_ids, positions, pad_token_id, batch_size, progress)[-1]


def layer_states_at(
    model,
    prompt_ids: list[list[int]],
    positions: list[list[int]],
    pad_token_id: int,
    batch_size: int = 16,
    progress=None,
    layers: tuple[int, ...] = (-1,),
) -> dict[int, np.ndarray]:
    """:func:`states_at` for several ``layers`` of one forward (0: the input embeddings, -1: the last
    layer's output), each (positions in all, width) float32."""
    from m6gen.decoding.decoder import left_padded

    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    starts = np.concatenate([[0], np.cumsum([len(q) for q in positions])])
    device = next(model.parameters()).device
    out: dict[int, np.ndarray] = {}
    for s in range(0, len(order), batch_size):
        batch = order[s : s + batch_size]
        ids, mask, position_ids = left_padded([prompt_ids[i] for i in batch], pad_token_id, device)
        width = ids.shape[1]
        with torch.no_grad():
            hidden = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids,
                output_hidden_states=True,
                logits_to_keep=1,
            ).hidden_states
        for layer in layers:
            out.setdefault(layer, np.zeros((int(starts[-1]), hidden[layer].shape[-1]), dtype=np.float32))
        for r, i in enumerate(batch):  # a prompt's position p sits at column p + its left padding
            cols = (torch.tensor(positions[i], dtype=torch.long) + width - len(prompt_ids[i])).to(device)
            for layer in layers:
                out[layer][starts[i] : starts[i + 1]] = hidden[layer][r, cols].float().cpu().numpy()
        if progress is not None:
            progress(len(batch))
    return out if out else {layer: np.zeros((0, 0), dtype=np.float32) for layer in layers}


@dataclass(frozen=True)
class Window:
    """One user's training pairs, read in one forward: the items shown (a history window), and after
    how many of them each next item came."""

    user: str
    shown: list[int]  # catalog indices, oldest first
    cuts: list[int]  # per pair: the number of shown items before its next item (ascending)
    targets: list[int]  # per pair: the next item
    earlier: list[int] = field(default_factory=list)  # the user's training items before ``shown``

    def history(self, cut: int) -> list[int]:
        """The user's whole training history before the pair with ``cut`` shown items."""
        return self.earlier + self.shown[:cut]


def training_windows(train: dict[str, list[int]], per_user: int, known: np.ndarray, max_history: int) -> list[Window]:
    """Each user's last ``per_user`` training positions whose next item has a collaborative vector
    (the readout cannot name the others). The first pair shows ``max_history`` items as a prompt would,
    later ones up to ``per_user - 1`` more, as a packed training block does. Training items only: a
    user's validation and test items are never shown or a target."""
    windows = []
    for user, items in train.items():
        ts = [t for t in range(max(1, len(items) - per_user), len(items)) if known[items[t]]]
        if not ts:
            continue
        start = max(0, ts[0] - max_history)
        windows.append(
            Window(
                user, list(items[start : ts[-1]]), [t - start for t in ts], [items[t] for t in ts], list(items[:start])
            )
        )
    return windows


@dataclass(frozen=True)
class Pairs:
    """Training pairs ready to read: prompts, the positions to read in each, and per position (in
    that order) the next item and whose it is."""

    prompt_ids: list[list[int]]
    positions: list[list[int]]
    targets: np.ndarray  # (pairs,) int64
    users: list[str]
    histories: list[list[int]]  # per pair: the user's whole training history before its next item


def window_pairs(windows: list[Window], encode) -> Pairs:
    """Prompts for ``windows``: ``encode(histories, user)`` gives the prompt token ids of each of a
    user's histories. A pair whose prompt is a token prefix of its window's whole prompt is read there
    (one forward for the window); any other (a template that writes something after the history) gets
    its own prompt."""
    prompt_ids, positions, targets, users, histories = [], [], [], [], []
    for window in windows:
        whole, *cut = encode([window.shown] + [window.shown[:c] for c in window.cuts], window.user)
        inside, alone = [], []
        for ids, target, c in zip(cut, window.targets, window.cuts):
            (inside if whole[: len(ids)] == ids else alone).append((ids, target, window.history(c)))
        if inside:
            prompt_ids.append(whole)
            positions.append([len(ids) - 1 for ids, _, _ in inside])
        for ids, _, _ in alone:
            prompt_ids.append(ids)
            positions.append([len(ids) - 1])
        targets += [t for _, t, _ in inside + alone]
        histories += [h for _, _, h in inside + alone]
        users += [window.user] * len(window.targets)
    return Pairs(prompt_ids, positions, np.asarray(targets, dtype=np.int64), users, histories)


def fit_readout(
    states: np.ndarray,
    targets: np.ndarray,
    groups,
    table: np.ndarray,
    epochs: int = 30,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    held_out: float = 0.1,
    seed: int = 0,
    teacher: np.ndarray | None = None,
    distill: float = 0.0,
    hidden: int = 0,
    teacher_temperature: float = 1.0,
) -> tuple[ItemReadout, ReadoutFit]:
    """Fit an :class:`ItemReadout` by full-softmax cross-entropy, minibatches of 256, AdamW.

    ``groups``: each pair's user (ids of any kind); a ``held_out`` fraction of users (never split
    across the two) is kept aside, and the readout of the epoch with their lowest loss on the true
    next items is kept.

    ``teacher``: (pairs, items) logits of a collaborative model on each pair's history, e.g. the
    run's SASRec. ``distill`` of the loss is then the cross-entropy to its softmax (knowledge
    distillation: a whole distribution per pair, where the true next item gives one index; the
    readout's fit is what limits it, see docs/results.md), the rest the true next item's.
    ``teacher_temperature``: see :func:`teacher_targets`.
    """
    if len(targets) == 0:
        raise CollaborativeError("no training prefix whose next item has a collaborative vector: nothing to fit")
    if distill and (teacher is None or len(teacher) != len(targets)):
        raise ValueError("distill > 0 needs teacher logits, one row per pair")
    aside = torch.from_numpy(_held_out_pairs(np.asarray(groups), held_out, seed))
    torch.manual_seed(seed)
    readout = ItemReadout(table, states.shape[1], hidden)
    x, y = torch.from_numpy(np.asarray(states, dtype=np.float32)), torch.from_numpy(targets)
    soft = teacher_targets(teacher, teacher_temperature) if distill else None
    fit_rows = torch.nonzero(~aside).flatten()
    check_rows = torch.nonzero(aside).flatten() if aside.any() else fit_rows
    fit_x = x[fit_rows]
    readout.mean.copy_(fit_x.mean(0))
    readout.std.copy_(fit_x.std(0).clamp(min=1e-6) if len(fit_x) > 1 else torch.ones(x.shape[1]))

    def loss_on(rows: torch.Tensor) -> torch.Tensor:
        logits = readout(x[rows])
        loss = nn.functional.cross_entropy(logits, y[rows])
        if soft is None:
            return loss
        return (1 - distill) * loss + distill * nn.functional.cross_entropy(logits, soft[rows])

    def check_loss() -> float:  # the true next items' loss, whatever is fitted: what the search needs
        with torch.no_grad():
            return float(nn.functional.cross_entropy(readout(x[check_rows]), y[check_rows]))

    optimizer = torch.optim.AdamW(readout.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    first = best = check_loss()
    best_epoch, best_state = 0, {k: v.clone() for k, v in readout.state_dict().items()}
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(len(fit_rows), generator=generator).split(256):
            optimizer.zero_grad()
            loss_on(fit_rows[batch]).backward()
            optimizer.step()
        loss = check_loss()
        if loss < best:
            best, best_epoch, best_state = loss, epoch, {k: v.clone() for k, v in readout.state_dict().items()}
    readout.load_state_dict(best_state)
    held_out_count = int(aside.sum())
    return readout, ReadoutFit(
        len(targets), held_out_count, best_epoch, best, first, float(distill), hidden, teacher_temperature
    )


def teacher_targets(teacher: np.ndarray, temperature: float = 1.0) -> torch.Tensor:
    """(pairs, items) float32: the distributions a readout is distilled to, softmax(logits / ``temperature``),
    that is the teacher's probabilities raised to 1 / ``temperature`` and normalized. Below 1 they are
    sharper: the top of a teacher's ranking weighs more than its long tail, which a flat teacher (a mean
    with EASE) spreads thin."""
    if temperature <= 0:
        raise ValueError(f"teacher temperature must be above 0, got {temperature}")
    return torch.softmax(torch.as_tensor(teacher, dtype=torch.float32) / temperature, -1)


def fit_readouts(
    states: np.ndarray,
    targets: np.ndarray,
    groups,
    table: np.ndarray,
    members: int = 1,
    seed: int = 0,
    progress=None,
    **fit,
):
    """:func:`fit_readout` ``members`` times, with seeds ``seed``, ``seed + 1``, ...: one readout, or a
    :class:`ReadoutEnsemble` of them; and each one's :class:`ReadoutFit`. ``progress(1)`` after each."""
    fitted = []
    for member in range(members):
        fitted.append(fit_readout(states, targets, groups, table, seed=seed + member, **fit))
        if progress is not None:
            progress(1)
    readouts, fits = zip(*fitted)
    return (readouts[0] if members == 1 else ReadoutEnsemble(list(readouts))), list(fits)


def _held_out_pairs(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(pairs,) bool: the pairs of a ``fraction`` of the users (at least one; none if that is all of them)."""
    names = np.unique(groups)
    if fraction <= 0 or len(names) < 2:
        return np.zeros(len(groups), dtype=bool)
    count = max(1, int(round(fraction * len(names))))
    aside = np.random.default_rng([seed, 7]).permutation(names)[:count]
    return np.isin(groups, aside)


def save_readout(
    readout: ItemReadout | ReadoutEnsemble,
    folder: str | Path,
    fits: list[ReadoutFit],
    table_fingerprint: str,
    teachers: list[str] | None = None,
) -> None:
    """Write the readout's weights and how it was fitted (one :class:`ReadoutFit` per member; the first
    one's fields also at the top; ``teachers``: the SASRec folders distilled from besides the run's own)
    into a run folder, each file atomically."""
    from safetensors.torch import save_file

    from m6gen.files import write_atomic

    folder = Path(folder)
    tmp = folder / (READOUT_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in readout.state_dict().items()}, str(tmp))
    tmp.replace(folder / READOUT_FILE)
    info = {
        "table_fingerprint": table_fingerprint,
        "adapter_fingerprint": adapter_fingerprint(folder),  # the states it read come from this adapter
        "width": int(readout.mean.shape[0]),
        **vars(fits[0]),
        "members": len(fits),
        "fits": [vars(fit) for fit in fits],
        "more_teachers": list(teachers or []),
    }
    write_atomic(folder / READOUT_INFO, json.dumps(info, indent=2))


def adapter_fingerprint(folder: Path) -> str | None:
    """sha1 of a run folder's adapter weights (12 hex digits; None without them): a retrained or
    resumed run has other prompt states, and its readout must be fitted again."""
    import hashlib

    path = Path(folder) / "adapter_model.safetensors"
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12] if path.is_file() else None


def load_readout(folder: str | Path, table) -> ItemReadout | ReadoutEnsemble | None:
    """A run folder's readout over ``table`` (an :class:`~m6gen.hybrid.item_table.ItemTable`), or None."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / READOUT_FILE).is_file():
        return None
    if not (folder / READOUT_INFO).is_file():
        raise CollaborativeError(f"{folder}: {READOUT_FILE} without {READOUT_INFO}")
    info = json.loads((folder / READOUT_INFO).read_text(encoding="utf-8"))
    if info.get("table_fingerprint") != table.fingerprint:
        raise CollaborativeError(
            f"{folder / READOUT_FILE}: fitted over item table {info.get('table_fingerprint')}, "
            f"the run's is {table.fingerprint}: fit it again (m6gen fit-readout --model {folder})"
        )
    fitted_on = info.get("adapter_fingerprint", "unrecorded")  # readouts of the first version did not record it
    if fitted_on != "unrecorded" and fitted_on != adapter_fingerprint(folder):
        raise CollaborativeError(
            f"{folder / READOUT_FILE}: fitted on another adapter than the run's (retrained or resumed since): "
            f"fit it again (m6gen fit-readout --model {folder})"
        )
    count = int(info.get("members", 1))
    members = [ItemReadout(table.vectors, int(info["width"]), int(info.get("hidden", 0))) for _ in range(count)]
    readout = members[0] if count == 1 else ReadoutEnsemble(members)
    readout.load_state_dict(load_file(str(folder / READOUT_FILE)))
    return readout.eval()
