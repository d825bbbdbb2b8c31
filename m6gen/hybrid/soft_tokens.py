"""Soft item tokens: placeholders in the prompt text become virtual ids that the wrapped input
embedding turns into projected collaborative vectors.

Virtual id of catalog item ``i`` = ``offset + i`` with ``offset = len(tokenizer)``, so no real
token id is ever mistaken for one. The projector is a small MLP (``cf_projector``) that peft
trains and saves with the LoRA adapter (``modules_to_save``); the frozen item table is saved
beside it in the run folder (``collaborative.safetensors`` and ``collaborative.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from m6gen.hybrid.item_table import CollaborativeError, ItemTable, fingerprint
from m6gen.hybrid.placeholders import INFO_FILE, PLACEHOLDER, TABLE_FILE

PROJECTOR = "cf_projector"  # the module name peft's modules_to_save matches


class CollaborativeEmbedding(nn.Module):
    """The model's input embedding, with virtual ids ``>= offset`` read through the projector.

    ``text`` is the original embedding (its weight stays the tied output layer's weight); ids
    below ``offset`` are looked up there unchanged, so a prompt without placeholders embeds
    exactly as before.
    """

    def __init__(self, text: nn.Embedding, table: ItemTable, offset: int, hidden: int = 256):
        super().__init__()
        self.text, self.offset, self.table, self.hidden = text, offset, table, hidden
        self.register_buffer("cf_vectors", torch.from_numpy(table.vectors.copy()), persistent=False)
        width = text.weight.shape[1]
        self.cf_projector = nn.Sequential(
            nn.LayerNorm(table.dim), nn.Linear(table.dim, hidden), nn.GELU(), nn.Linear(hidden, width)
        ).to(dtype=text.weight.dtype, device=text.weight.device)
        self._match_token_scale()

    @property
    def weight(self) -> torch.Tensor:  # transformers reads (and ties) the input embedding's weight
        return self.text.weight

    @torch.no_grad()
    def _match_token_scale(self) -> None:
        """Start the projected vectors at the size of token embeddings, so the first steps see no outlier."""
        known = torch.from_numpy(np.flatnonzero(self.table.known))
        if not len(known):
            return
        out = self.cf_projector(self.cf_vectors[known].to(self.text.weight.dtype))
        scale = self.text.weight.float().norm(dim=-1).mean() / out.float().norm(dim=-1).mean().clamp(min=1e-6)
        self.cf_projector[-1].weight.mul_(scale.to(self.text.weight.dtype))
        self.cf_projector[-1].bias.mul_(scale.to(self.text.weight.dtype))

    def placeholder(self, index: int) -> str:
        """What ``{{ it.cf }}`` renders for catalog item ``index``: its placeholder, or "" without a vector."""
        return PLACEHOLDER.format(index) if self.table.known[index] else ""

    def virtual_ids(self, index: int) -> list[int]:
        """The ids a placeholder of item ``index`` encodes to ([] when it renders nothing)."""
        return [self.offset + index] if self.table.known[index] else []

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        soft = input_ids >= self.offset
        out = self.text(input_ids.masked_fill(soft, 0))
        if not bool(soft.any()):
            return out
        rows = self.cf_vectors[input_ids[soft] - self.offset]  # (n_soft, d)
        projected = self.cf_projector(rows.to(out.dtype)).to(out.dtype)  # (n_soft, width)
        return out.masked_scatter(soft.unsqueeze(-1), projected)  # row-major, as input_ids[soft]

    def info(self) -> dict:
        return {
            "source": self.table.source,
            "fingerprint": self.table.fingerprint,
            "n_items": len(self.table),
            "dim": self.table.dim,
            "hidden": self.hidden,
            "offset": self.offset,
            "known_items": int(self.table.known.sum()),
        }

    def save(self, folder: str | Path) -> None:
        """The item table and its provenance (the projector's weights go with the adapter)."""
        from safetensors.numpy import save_file

        from m6gen.files import write_atomic

        folder = Path(folder)
        save_file({"vectors": self.table.vectors, "known": self.table.known.astype(np.uint8)}, str(folder / TABLE_FILE))
        write_atomic(folder / INFO_FILE, json.dumps(self.info(), indent=2))


def find(model) -> CollaborativeEmbedding | None:
    """The model's collaborative embedding, or None for a plain model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embedding = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    return embedding if isinstance(embedding, CollaborativeEmbedding) else None


def attach(model, table: ItemTable, offset: int, hidden: int = 256) -> CollaborativeEmbedding:
    """Wrap ``model``'s input embedding (before LoRA is added) so that virtual ids read ``table``."""
    text = model.get_input_embeddings()
    if isinstance(text, CollaborativeEmbedding):
        raise CollaborativeError("this model already has collaborative tokens")
    wrapper = CollaborativeEmbedding(text, table, offset, hidden)
    model.set_input_embeddings(wrapper)
    return wrapper


def attach_saved(model, folder: str | Path, tokenizer) -> CollaborativeEmbedding | None:
    """Re-attach a run folder's collaborative embedding (None when the run has none); the projector's
    weights are then loaded by peft with the adapter."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        return None
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    if not (folder / TABLE_FILE).is_file():
        raise CollaborativeError(f"{folder}: {INFO_FILE} without its item table {TABLE_FILE}")
    saved = load_file(str(folder / TABLE_FILE))
    vectors, known = saved["vectors"], saved["known"].astype(bool)
    if fingerprint(vectors) != info["fingerprint"]:
        raise CollaborativeError(f"{folder / TABLE_FILE}: does not match the fingerprint in {INFO_FILE}")
    if len(tokenizer) != info["offset"]:
        raise CollaborativeError(
            f"{folder}: trained with a tokenizer of {info['offset']} tokens, this one has {len(tokenizer)}"
        )
    table = ItemTable(vectors, known, info["source"], info["fingerprint"])
    return attach(model, table, info["offset"], info["hidden"])
