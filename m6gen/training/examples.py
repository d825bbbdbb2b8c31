"""Training examples: next-item steps from the train split, tokenized like the decoder, packed and
collated (their loss is :mod:`m6gen.training.loss`).

One example is (prompt ids, target ids): the prompt renders a user's train items t_1..t_{i-1}
with the chosen template, the target is t_i's target text + EOS. Prompt and target are tokenized
separately (``m6gen.model.encode_prompts`` / ``encode_targets``) and joined as ids, exactly as
the constrained decoder sees them. Only ``Split.train`` items are read: valid/test items never
enter an example, as prompt or as target.

History packing: where the template is *token-incremental* -- the ids of the prompt for
t_1..t_i equal the ids of the prompt for t_1..t_{i-1} followed by t_i's target ids, as in
``prompts/sequence.jinja`` -- one sequence can carry a block of consecutive next items: the prompt
shows the ``max_history`` items before the block, and the block's targets follow one another,
every one of them in the loss. Each target then sees exactly what an example of its own would
show it (plus the block's earlier items), for a fraction of the tokens: one forward pass teaches
many steps. :func:`is_token_incremental` checks a template on real histories before it is used.

Packing: several examples share one row of at most ``pack_len`` tokens; position ids restart at
0 for each example, which makes Hugging Face models (attention mask left as None) block attention
between examples, and their labels are -100 outside targets, so the loss equals the unpacked one.
:func:`m6gen.training.loss.check_loss_paths` verifies that on the model actually trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from m6gen.prompts import user_vars

IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


class SoftTokens:
    """Collaborative tokens in training prompts: each history item's placeholder, left out with
    probability ``dropout`` (a fresh draw per occurrence, seeded per epoch), so the model learns to
    recommend with and without them. ``embedding``: the model's ``CollaborativeEmbedding``."""

    def __init__(self, embedding, dropout: float = 0.0, seed: int = 0, epoch: int = 0):
        self.embedding, self.dropout = embedding, dropout
        self.rng = np.random.default_rng([seed, epoch, 3])

    def _kept(self) -> bool:
        return not self.dropout or self.rng.random() >= self.dropout

    def __call__(self, index: int) -> str:
        """What ``{{ it.cf }}`` renders for item ``index`` in a prompt."""
        return self.embedding.placeholder(index) if self._kept() else ""

    def state(self, index: int) -> str:
        """What ``{{ it.state }}`` renders after item ``index``: never left out, since the state tokens of a
        row name the items the collaborative model reads."""
        return self.embedding.state_placeholder(index)

    def after_target(self, index: int) -> list[int]:
        """The ids a token-incremental template writes after item ``index``'s target in a packed block
        (hybrid templates write the item token, then the state token)."""
        return (self.embedding.virtual_ids(index) if self._kept() else []) + self.embedding.state_ids(index)


@dataclass(frozen=True)
class Example:
    """Consecutive next-item steps of one user as token ids: one step, or a block (history packing)."""

    user: str
    step: int  # index of the first target in the user's train items (its history is items[:step])
    items: tuple[int, ...]  # catalog indices of the targets, in order
    prompt_ids: list[int]
    target_ids: list[int]  # each target's title ids + EOS, concatenated
    title_starts: tuple[int, ...] = (0,)  # where each target's title begins in target_ids

    @property
    def item(self) -> int:
        """The first (for a one-step example: the only) target."""
        return self.items[0]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


def sample_steps(
    train: dict[str, list[int]],
    *,
    min_history: int = 1,
    per_user: int | None = None,
    sampling: str = "random",
    seed: int = 0,
    epoch: int = 0,
) -> list[tuple[str, int]]:
    """The (user, step) pairs of one epoch: step i predicts ``train[user][i]`` from ``train[user][:i]``.

    Args:
        min_history: the fewest history items an example shows (i >= min_history).
        per_user: at most this many steps per user (None: all of them).
        sampling: "last" (each user's most recent steps, the same every epoch) or "random"
            (a fresh draw each epoch, reproducible from ``seed`` and ``epoch``).
    """
    if min_history < 1:
        raise ValueError(f"min_history must be >= 1, got {min_history}")
    if sampling not in ("last", "random"):
        raise ValueError(f"sampling must be 'last' or 'random', got {sampling!r}")
    rng = np.random.default_rng([seed, epoch])
    out = []
    for user, items in train.items():
        steps = np.arange(min_history, len(items))
        if per_user is not None and len(steps) > per_user:
            steps = steps[-per_user:] if sampling == "last" else np.sort(rng.choice(steps, per_user, replace=False))
        out.extend((user, int(s)) for s in steps)
    return out


def render_prompts(
    template,
    catalog,
    histories: list[list[int]],
    users: list[str],
    profiles: dict[str, dict[str, str]] | None = None,
    tokenizer=None,
    candidates: list | None = None,
    cf=None,
) -> list[str]:
    """Prompt texts for item-index histories (shared by training and validation so both read alike);
    ``candidates``: per history, the item indices a candidate template lists (``m6gen.baselines.retrieval``);
    ``cf``: the :class:`SoftTokens` that say what ``{{ it.cf }}`` and ``{{ it.state }}`` render, None: nothing."""
    cands = candidates if candidates is not None else [() for _ in histories]
    return [
        template.render_prompt(
            [catalog[i] for i in hist],
            user=user_vars(u, profiles),
            tokenizer=tokenizer,
            candidates=[catalog[int(i)] for i in c],
            cf=cf,
            state=cf.state if cf is not None else None,
        )
        for hist, u, c in zip(histories, users, cands)
    ]


def build_examples(
    steps: list[tuple[str, int]],
    train: dict[str, list[int]],
    catalog,
    template,
    tokenizer,
    target_ids: list[list[int]],
    *,
    profiles: dict[str, dict[str, str]] | None = None,
    max_len: int | None = None,
    candidates: list | None = None,
    soft: SoftTokens | None = None,
) -> tuple[list[Example], int]:
    """Tokenized examples for ``steps``; returns (examples, number dropped for exceeding ``max_len``).

    ``target_ids[i]`` are item i's target ids (``encode_targets`` of its rendered target), computed
    once for the catalog and shared with the trie. ``candidates``: per step, the items its prompt lists.
    """
    return build_block_examples(
        [(u, s, s + 1) for u, s in steps],
        train,
        catalog,
        template,
        tokenizer,
        target_ids,
        profiles=profiles,
        max_len=max_len,
        candidates=candidates,
        soft=soft,
    )


def is_token_incremental(
    template,
    tokenizer,
    catalog,
    target_ids: list[list[int]],
    histories: dict[str, list[int]],
    *,
    users: int = 4,
    profiles: dict[str, dict[str, str]] | None = None,
    soft: SoftTokens | None = None,
) -> bool:
    """Whether prompt ids of ``h + [x]`` == prompt ids of ``h`` + ``target_ids[x]`` on real histories
    (+ x's collaborative token with ``soft``, as ``prompts/hybrid.jinja`` writes it after the title).

    Checked for every history length below ``max_history`` (beyond it the window slides and no
    prompt is a prefix of the next) of the first ``users`` users with enough items. Only then does
    a history-packed sequence show each target what its own example would.
    """
    from m6gen.model import encode_prompts

    window = template.max_history or 8

    def after(index: int) -> list[int]:  # every token shown: no dropout
        return soft.embedding.virtual_ids(index) + soft.embedding.state_ids(index) if soft is not None else []

    checked = 0
    for user, items in histories.items():
        n = min(len(items), window)
        if n < 2:
            continue
        prompts = render_prompts(
            template,
            catalog,
            [items[:j] for j in range(1, n + 1)],
            [user] * n,
            profiles=profiles,
            tokenizer=tokenizer,
            cf=soft,
        )
        ids = encode_prompts(tokenizer, prompts)
        if any(ids[j] != ids[j - 1] + target_ids[items[j]] + after(items[j]) for j in range(1, n)):
            return False
        checked += 1
        if checked == users:
            break
    return checked > 0


def sample_blocks(
    train: dict[str, list[int]],
    *,
    block: int,
    min_history: int = 1,
    per_user: int | None = None,
    sampling: str = "random",
    seed: int = 0,
    epoch: int = 0,
) -> list[tuple[str, int, int]]:
    """History packing's (user, start, end) blocks of one epoch: targets ``train[user][start:end]``.

    Every step ``i >= min_history`` of a user lies in exactly one block of at most ``block`` steps.
    With ``sampling="random"`` the first block's length is drawn each epoch (so a step's position
    in its block, and the context it sees, change between epochs) and ``per_user`` blocks are drawn;
    with "last" blocks are aligned to the end of the history and the most recent ones kept.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if min_history < 1:
        raise ValueError(f"min_history must be >= 1, got {min_history}")
    if sampling not in ("last", "random"):
        raise ValueError(f"sampling must be 'last' or 'random', got {sampling!r}")
    rng = np.random.default_rng([seed, epoch, 2])
    out = []
    for user, items in train.items():
        n = len(items)
        if n <= min_history:
            continue
        first = int(rng.integers(1, block + 1)) if sampling == "random" else (n - min_history) % block or block
        cuts = [min_history, *range(min_history + first, n, block), n]
        blocks = [(user, a, b) for a, b in zip(cuts[:-1], cuts[1:])]
        if per_user is not None and len(blocks) > per_user:
            keep = (
                range(len(blocks) - per_user, len(blocks))
                if sampling == "last"
                else np.sort(rng.choice(len(blocks), per_user, replace=False))
            )
            blocks = [blocks[j] for j in keep]
        out.extend(blocks)
    return out


def build_block_examples(
    blocks: list[tuple[str, int, int]],
    train: dict[str, list[int]],
    catalog,
    template,
    tokenizer,
    target_ids: list[list[int]],
    *,
    profiles: dict[str, dict[str, str]] | None = None,
    max_len: int | None = None,
    candidates: list | None = None,
    soft: SoftTokens | None = None,
) -> tuple[list[Example], int]:
    """Examples of blocks ``(user, start, end)``: the prompt of ``train[u][:start]``, then the targets
    ``start..end-1``; returns (examples, number dropped for exceeding ``max_len``).

    With ``soft`` the prompts carry collaborative tokens, and in a block each target but the last
    is followed by its item's token (as the next prompt would write it; never a label).

    A one-step block is an ordinary example, right for any template; longer blocks (history
    packing) need a template :func:`is_token_incremental` accepts.
    """
    if not blocks:
        return [], 0
    prompts = render_prompts(
        template,
        catalog,
        [train[u][:a] for u, a, _ in blocks],
        [u for u, _, _ in blocks],
        profiles,
        tokenizer,
        candidates,
        cf=soft,
    )
    from m6gen.model import encode_prompts

    after = soft.after_target if soft is not None else (lambda i: [])
    examples, dropped = [], 0
    for (u, a, b), p in zip(blocks, encode_prompts(tokenizer, prompts)):
        items = tuple(train[u][a:b])
        per_item = [target_ids[i] + (after(i) if j < len(items) - 1 else []) for j, i in enumerate(items)]
        starts = tuple(int(x) for x in np.cumsum([0] + [len(t) for t in per_item[:-1]]))
        ex = Example(u, a, items, p, [t for ids in per_item for t in ids], starts)
        if max_len is not None and len(ex) > max_len:
            dropped += 1
            continue
        examples.append(ex)
    return examples, dropped


def pack(lengths: list[int], pack_len: int) -> list[list[int]]:
    """Group example indices into rows of at most ``pack_len`` tokens (first-fit decreasing).

    Longer examples get a row of their own. Deterministic: ties keep input order.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(pack_len - n)
    return rows


def plan_batches(
    lengths: list[int], *, pack_len: int, batch_size: int, packed: bool = True, seed: int = 0, epoch: int = 0
) -> list[list[list[int]]]:
    """Micro-batches of one epoch: each a list of rows, each row a list of example indices.

    Rows are packed (or one example each), sorted by length so a batch pads little, cut into
    batches of ``batch_size`` rows, and the batches shuffled with a seed of ``(seed, epoch)``:
    the same inputs give the same order, which is what lets ``--resume`` skip exactly the
    batches already done.
    """
    rows = pack(lengths, pack_len) if packed else [[i] for i in range(len(lengths))]
    row_len = [sum(lengths[i] for i in r) for r in rows]
    rows = [rows[j] for j in sorted(range(len(rows)), key=lambda j: (-row_len[j], j))]
    batches = [rows[k : k + batch_size] for k in range(0, len(rows), batch_size)]
    rng = np.random.default_rng([seed, epoch, 1])
    return [batches[j] for j in rng.permutation(len(batches))]


def rare_target_weights(train: dict[str, list[int]], n_items: int, power: float) -> np.ndarray | None:
    """(n_items,) loss weight of each item as a target: count^-power over the training items, scaled so
    the mean over every training target (each user's items) is 1, so the loss keeps its scale.
    None when ``power`` is 0. Items never trained on get the weight of a count of 1 (never a target)."""
    if not power:
        return None
    counts = np.zeros(n_items, dtype=np.float64)
    for items in train.values():
        np.add.at(counts, np.asarray(items, dtype=np.int64), 1)
    weight = np.maximum(counts, 1.0) ** -power
    return weight / (counts @ weight / counts.sum())


def collate(
    rows: list[list[Example]], pad_id: int, soft_from: int | None = None, target_weight: np.ndarray | None = None
) -> dict[str, Any]:
    """Tensors for one micro-batch of packed rows (right-padded to the longest row).

    Returns ``input_ids``, ``labels`` (target ids where the loss applies, -100 elsewhere; the
    model predicts ``labels[:, j]`` at position ``j - 1``), ``position_ids`` (restarting at 0
    for each example and for the padding), ``readout_at`` ((N, 2) row and column of the position
    just before each target's title, where a prompt for that target would end) with
    ``readout_items`` ((N,) those targets), and ``n_tokens``/``n_targets`` (non-pad and target
    token counts). Ids from ``soft_from`` on (collaborative tokens inside a packed block) are
    inputs only: their label is -100. With ``target_weight`` ((n_items,), see
    :func:`rare_target_weights`) also ``weights`` ((B, L): each label's weight, its title's item's).
    """
    import torch

    width = max(sum(len(ex) for ex in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, L)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)  # (B, L)
    pos = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
    weights = torch.ones((len(rows), width), dtype=torch.float32)  # (B, L)
    n_tokens = 0
    readout_at, readout_items = [], []
    for b, row in enumerate(rows):
        at = 0
        for ex in row:
            seq = ex.prompt_ids + ex.target_ids
            n = len(seq)
            readout_at += [(b, at + len(ex.prompt_ids) + start - 1) for start in ex.title_starts]
            readout_items += ex.items
            ids[b, at : at + n] = torch.tensor(seq)
            target = torch.tensor(ex.target_ids)
            if soft_from is not None:
                target = target.masked_fill(target >= soft_from, IGNORE)
            labels[b, at + len(ex.prompt_ids) : at + n] = target
            if target_weight is not None:
                weights[b, at + len(ex.prompt_ids) : at + n] = title_weights(ex, target_weight)
            pos[b, at : at + n] = torch.arange(n)
            at += n
        pos[b, at:] = torch.arange(width - at)  # padding: a segment of its own, after every real token
        n_tokens += at
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": pos,
        "readout_at": torch.tensor(readout_at, dtype=torch.long).reshape(-1, 2),
        "readout_items": torch.tensor(readout_items, dtype=torch.long),
        "n_tokens": n_tokens,
        "n_targets": int((labels != IGNORE).sum()),
        **({"weights": weights} if target_weight is not None else {}),
    }


def title_weights(ex: Example, target_weight: np.ndarray):
    """(len(ex.target_ids),) each target token's weight: that of the item whose title it belongs to."""
    import torch

    weights = torch.ones(len(ex.target_ids), dtype=torch.float32)  # tokens before the first title: 1
    ends = (*ex.title_starts[1:], len(ex.target_ids))
    for item, start, end in zip(ex.items, ex.title_starts, ends):
        weights[start:end] = float(target_weight[item])
    return weights
