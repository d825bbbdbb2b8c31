"""A KV cache whose prompt part is stored once per user and read by all of that user's beams.

The plain way to decode beams keeps one KV row per beam: the prompt's keys and values (a few hundred
tokens) are copied into every beam, re-gathered whenever beams are reordered and re-concatenated at
every step. On a CPU that copying costs more than the model's matmuls (a profile of the default
model: ``index_select`` + ``cat`` 55% of decode time, ``mm`` 31%).

Here the prompt's keys/values stay as prefilled, (users, kv_heads, prompt, head_dim), and only the
generated suffix (a title's few tokens) lives per beam. Attention runs in two parts joined by one
softmax: each user's beams as one batch against that user's prompt (no copy), and each beam against
its own suffix. It plugs into transformers through its attention interface (registered under
:data:`ATTENTION`), so the model's own layers, RoPE and LoRA run unchanged.

Used for the architectures in :data:`ARCHITECTURES` (plain causal self-attention over the whole
context, which the two-part softmax reproduces exactly); other models take the copying path.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache

import numpy as np
import torch

ATTENTION = "m6gen_shared_prompt"
# Full causal attention in every layer through the attention interface (no sliding window, no
# attention sinks or soft-capping): what ``attend`` computes. Each is tested against the copying path.
ARCHITECTURES = frozenset({"llama", "qwen2", "qwen3", "mistral"})


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, shared_prompt=None, **kwargs):
    if shared_prompt is None:
        raise RuntimeError(f"the {ATTENTION} attention runs only inside m6gen's beam search")
    return shared_prompt.attend(module.layer_idx, query, key, value, scaling), None


@cache  # once per process: the names are global to transformers
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, _attention)
    # Every step passes a ready 4D mask, which transformers hands through untouched; a mask function
    # is still looked up by name, so give the name sdpa's.
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def supports(model) -> bool:
    """Whether ``model`` is a transformers model this cache reproduces exactly."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in ARCHITECTURES or not hasattr(model, "set_attn_implementation"):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or not getattr(config, "use_sliding_window", True)


@contextmanager
def shared_prompt_attention(model):
    """The model's attention layers read a :class:`SharedPromptCache` while inside (restored after)."""
    _register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


class SharedPromptCache:
    """Per layer: the prompt's keys/values once per user, and each beam's generated keys/values.

    ``row_user[r]`` is the user of beam row ``r``; ``cell[r]`` = user * slots + its place among that
    user's rows, so a user's queries form one row of a padded (users, slots) grid for the prompt part.
    """

    def __init__(self, prefilled, prompt_mask: torch.Tensor):
        layers = prefilled.layers
        self.prompt_keys = [layer.keys for layer in layers]  # each (users, kv_heads, prompt, head_dim)
        self.prompt_values = [layer.values for layer in layers]
        users, kv_heads, _, head_dim = self.prompt_keys[0].shape
        empty = self.prompt_keys[0].new_zeros((users, kv_heads, 0, head_dim))
        self.suffix_keys = [empty] * len(layers)
        self.suffix_values = [empty] * len(layers)
        # Additive mask of the left padding, (users, 1, 1, prompt); also the 4D mask each step passes.
        self.prompt_bias = torch.zeros(prompt_mask.shape, dtype=torch.float32, device=prompt_mask.device)
        self.prompt_bias.masked_fill_(prompt_mask == 0, torch.finfo(torch.float32).min)
        self.prompt_bias = self.prompt_bias[:, None, None, :]
        self.prompt_length = prompt_mask.sum(-1)  # (users,)
        self.row_user = torch.arange(users, device=prompt_mask.device)
        self.cell = torch.arange(users, device=prompt_mask.device)  # row r's cell in the (users, slots) grid
        self.slots = 1

    @property
    def generated(self) -> int:
        """Tokens generated so far (the same for every live beam: beams advance in lockstep)."""
        return self.suffix_keys[0].shape[2]

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the given beam rows (a row may repeat: a beam with several children)."""
        rows_t = torch.from_numpy(rows).to(self.row_user.device)
        self.suffix_keys = [k[rows_t] for k in self.suffix_keys]
        self.suffix_values = [v[rows_t] for v in self.suffix_values]
        users = self.row_user.cpu().numpy()[rows]
        order = np.argsort(users, kind="stable")
        starts = np.r_[0, np.flatnonzero(np.diff(users[order])) + 1]
        rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
        slot = np.empty(len(users), dtype=np.int64)
        slot[order] = rank
        self.slots = int(slot.max()) + 1 if len(slot) else 1
        self.row_user = torch.from_numpy(users).to(self.row_user.device)
        self.cell = torch.from_numpy(users * self.slots + slot).to(self.row_user.device)

    def positions(self) -> torch.Tensor:
        """(rows, 1) position of the token each row feeds next."""
        return (self.prompt_length[self.row_user] + self.generated)[:, None]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append this step's (rows, kv_heads, 1, head_dim) keys/values; return the suffix so far."""
        self.suffix_keys[layer_idx] = torch.cat([self.suffix_keys[layer_idx], key], dim=2)
        self.suffix_values[layer_idx] = torch.cat([self.suffix_values[layer_idx], value], dim=2)
        return self.suffix_keys[layer_idx], self.suffix_values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.prompt_keys[layer_idx].shape[2] + self.generated

    def _to_grid(self, per_row: torch.Tensor) -> torch.Tensor:
        """(rows, kv_heads, group, n) -> (users, kv_heads, slots * group, n), zeros where a user has fewer rows."""
        rows, kv_heads, group, n = per_row.shape
        users = len(self.prompt_length)
        grid = per_row.new_zeros((users * self.slots, kv_heads, group, n)).index_copy_(0, self.cell, per_row)
        return grid.view(users, self.slots, kv_heads, group, n).transpose(1, 2).reshape(users, kv_heads, -1, n)

    def _from_grid(self, grid: torch.Tensor, group: int) -> torch.Tensor:
        users, kv_heads, _, n = grid.shape
        cells = grid.view(users, kv_heads, self.slots, group, n).transpose(1, 2).reshape(-1, kv_heads, group, n)
        return cells.index_select(0, self.cell)

    def attend(
        self, layer_idx: int, query: torch.Tensor, suffix_keys: torch.Tensor, suffix_values: torch.Tensor, scaling
    ) -> torch.Tensor:
        """Attention of one new token per row over its user's prompt and its own suffix.

        ``query`` (rows, heads, 1, head_dim); returns (rows, 1, heads, head_dim) as transformers'
        attention functions do. Query head h reads key/value head h // group (grouped-query attention).
        The two parts are softmaxed apart and merged by their maxima and sums (as flash attention
        merges blocks), so only per-row outputs, not per-key weights, move between the layouts.
        """
        rows, heads, _, head_dim = query.shape
        prompt_keys, prompt_values = self.prompt_keys[layer_idx], self.prompt_values[layer_idx]
        kv_heads = prompt_keys.shape[1]
        group = heads // kv_heads
        q = query.reshape(rows, kv_heads, group, head_dim)
        # Prompt part, per user: (users, kv_heads, slots * group, prompt).
        # The scores are a fresh tensor: scaled, masked and exponentiated in place (each pass over
        # the (users, kv_heads, slots * group, prompt) grid costs as much as the matmul).
        weights = torch.matmul(self._to_grid(q), prompt_keys.transpose(-1, -2)).float()
        weights.mul_(scaling).add_(self.prompt_bias)
        peak = weights.amax(-1, keepdim=True)
        weights.sub_(peak).exp_()
        total = weights.sum(-1, keepdim=True)
        out = torch.matmul(weights.to(prompt_values.dtype), prompt_values).float()
        per_row = self._from_grid(torch.cat([out, peak, total], -1), group)  # (rows, kv_heads, group, head_dim + 2)
        out, peak, total = per_row[..., :head_dim], per_row[..., head_dim:-1], per_row[..., -1:]
        # Suffix part, per row (at least this step's own token).
        scores = torch.matmul(q, suffix_keys.transpose(-1, -2)).float() * scaling  # (rows, kv_heads, group, t)
        new_peak = torch.maximum(peak, scores.amax(-1, keepdim=True))
        weights = torch.exp(scores - new_peak)
        rescale = torch.exp(peak - new_peak)
        out = out * rescale + torch.matmul(weights, suffix_values.float())
        out = out / (total * rescale + weights.sum(-1, keepdim=True))
        return out.to(query.dtype).reshape(rows, 1, heads, head_dim)
