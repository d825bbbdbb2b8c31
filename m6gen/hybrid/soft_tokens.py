"""Soft item tokens: placeholders in the prompt text become virtual ids that the wrapped input
embedding turns into projected collaborative vectors.

Virtual id of catalog item ``i`` = ``offset + i`` with ``offset = len(tokenizer)``, so no real
token id is ever mistaken for one. The projector is a small MLP (``cf_projector``) that peft
trains and saves with the LoRA adapter (``modules_to_save``); the frozen item table is saved
beside it in the run folder (``collaborative.safetensors`` and ``collaborative.json``).

User-state tokens (``{{ it.state }}``, virtual id ``offset + STATE_SHIFT + i``) need the
collaborative model itself, a frozen SASRec: the state token after item ``i`` reads the SASRec's
hidden state after the items of the state tokens up to and including this one in the same row, so it
depends on earlier items only and one packed training row teaches every next item with the state a
prompt ending there would show. A second projector (``cf_state_projector``) maps it; the SASRec is
saved in the run folder (``collaborative_sequence/``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from m6gen.hybrid.item_table import CollaborativeError, ItemTable, fingerprint
from m6gen.hybrid.placeholders import (
    INFO_FILE,
    PLACEHOLDER,
    SEQUENCE_FOLDER,
    STATE_PLACEHOLDER,
    STATE_SHIFT,
    TABLE_FILE,
)

PROJECTOR = "cf_projector"  # the module name peft's modules_to_save matches
STATE_PROJECTOR = "cf_state_projector"  # the user-state tokens' projector, when the run has them
READOUT = "cf_readout"  # a collaborative readout trained with LoRA (--readout-loss), when the run has one


def _projector(dim: int, hidden: int, width: int, like: torch.Tensor) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, width)).to(
        dtype=like.dtype, device=like.device
    )


class CollaborativeEmbedding(nn.Module):
    """The model's input embedding, with virtual ids ``>= offset`` read through the projector.

    ``text`` is the original embedding (its weight stays the tied output layer's weight); ids
    below ``offset`` are looked up there unchanged, so a prompt without placeholders embeds
    exactly as before.
    """

    def __init__(self, text: nn.Embedding, table: ItemTable, offset: int, hidden: int = 256, sequence=None):
        super().__init__()
        self.text, self.offset, self.table, self.hidden = text, offset, table, hidden
        self.register_buffer("cf_vectors", torch.from_numpy(table.vectors.copy()), persistent=False)
        width = text.weight.shape[1]
        self.cf_projector = _projector(table.dim, hidden, width, text.weight)
        self._match_token_scale(self.cf_projector, self.cf_vectors[torch.from_numpy(np.flatnonzero(table.known))])
        # The frozen SASRec (m6gen.baselines.sasrec.SASRec) behind state tokens, or None. Kept out of
        # the module tree: LoRA's all-linear must not adapt it, and a cast of the LM must not touch it.
        self.__dict__["sequence"] = sequence
        self.__dict__["segment_starts"] = None  # (B, L) bool while a packed batch runs, see segments()
        if sequence is not None:
            sequence.model.eval().requires_grad_(False)
            self.cf_state_projector = _projector(sequence.config.hidden, hidden, width, text.weight)
            self._match_token_scale(self.cf_state_projector, self.sequence_states([np.flatnonzero(table.known)[:64]]))

    @property
    def weight(self) -> torch.Tensor:  # transformers reads (and ties) the input embedding's weight
        return self.text.weight

    @property
    def has_states(self) -> bool:
        return self.sequence is not None

    def add_readout(self) -> None:
        """Give the model an item readout trained with LoRA (``--readout-loss``), over this table; peft
        trains and saves it with the adapter, as the projectors."""
        from m6gen.hybrid.readout import ItemReadout

        self.cf_readout = ItemReadout(self.table.vectors, self.text.weight.shape[1]).to(self.text.weight.device)

    @property
    def readout(self):
        """The readout trained with LoRA (:class:`~m6gen.hybrid.readout.ItemReadout`; peft's trained copy
        once the adapter is on), or None."""
        module = getattr(self, READOUT, None)
        if module is not None and hasattr(module, "modules_to_save"):  # peft's ModulesToSaveWrapper
            module = module.modules_to_save[module.active_adapters[0]]
        return module

    @torch.no_grad()
    def _match_token_scale(self, projector: nn.Sequential, inputs: torch.Tensor) -> None:
        """Start the projected vectors at the size of token embeddings, so the first steps see no outlier."""
        if not len(inputs):
            return
        out = projector(inputs.to(self.text.weight.dtype))
        scale = self.text.weight.float().norm(dim=-1).mean() / out.float().norm(dim=-1).mean().clamp(min=1e-6)
        projector[-1].weight.mul_(scale.to(self.text.weight.dtype))
        projector[-1].bias.mul_(scale.to(self.text.weight.dtype))

    def placeholder(self, index: int) -> str:
        """What ``{{ it.cf }}`` renders for catalog item ``index``: its placeholder, or "" without a vector."""
        return PLACEHOLDER.format(index) if self.table.known[index] else ""

    def state_placeholder(self, index: int) -> str:
        """What ``{{ it.state }}`` renders after catalog item ``index`` ("" without a state model or a vector)."""
        return STATE_PLACEHOLDER.format(index) if self.has_states and self.table.known[index] else ""

    def virtual_ids(self, index: int) -> list[int]:
        """The ids a placeholder of item ``index`` encodes to ([] when it renders nothing)."""
        return [self.offset + index] if self.table.known[index] else []

    def state_ids(self, index: int) -> list[int]:
        """The ids a state placeholder after item ``index`` encodes to ([] when it renders nothing)."""
        return [self.offset + STATE_SHIFT + index] if self.has_states and self.table.known[index] else []

    @torch.no_grad()
    def sequence_states(self, rows: list[np.ndarray]) -> torch.Tensor:
        """(sum of lengths, d) float32: the SASRec state after each prefix of each row's items, row-major."""
        from m6gen.baselines.sasrec import _pad_left

        width = self.sequence.config.max_len
        prefixes = [row[: j + 1] for row in rows for j in range(len(row))]
        if not prefixes:
            return torch.zeros(0, self.sequence.config.hidden)
        model = self.sequence.model.to(self.text.weight.device)
        with torch.autocast(self.text.weight.device.type, enabled=False):
            out = []
            for s in range(0, len(prefixes), 512):  # the same batches whatever the row count: same numbers
                batch = prefixes[s : s + 512]
                seq = _pad_left(batch, min(width, max(len(p) for p in batch))).to(self.text.weight.device)
                out.append(model(seq)[:, -1].float())
        return torch.cat(out)

    @contextmanager
    def segments(self, position_ids: torch.Tensor | None):
        """While a batch of packed rows runs: each example (its positions restart at 0) is its own
        history, so a state token never reads an item of the example packed before it."""
        self.__dict__["segment_starts"] = None if position_ids is None else position_ids == 0
        try:
            yield
        finally:
            self.__dict__["segment_starts"] = None

    def _state_rows(self, input_ids: torch.Tensor, state: torch.Tensor) -> list[np.ndarray]:
        """The items each history's state tokens name, in order: one history per row, or per packed example."""
        items = (input_ids - self.offset - STATE_SHIFT).cpu().numpy()
        flags = state.cpu().numpy()
        starts = self.segment_starts
        example = np.zeros(flags.shape, dtype=np.int64) if starts is None else starts.long().cumsum(1).cpu().numpy()
        rows = []
        for r in range(len(items)):
            cols = np.flatnonzero(flags[r])
            for e in np.unique(example[r][cols]):  # ascending: row-major order, as the tokens
                rows.append(items[r][cols[example[r][cols] == e]])
        return rows

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        soft = input_ids >= self.offset
        out = self.text(input_ids.masked_fill(soft, 0))
        if not bool(soft.any()):
            return out
        state = input_ids >= self.offset + STATE_SHIFT
        item = soft & ~state
        if bool(item.any()):
            rows = self.cf_vectors[input_ids[item] - self.offset]  # (n_item, d)
            projected = self.cf_projector(rows.to(out.dtype)).to(out.dtype)  # (n_item, width)
            out = out.masked_scatter(item.unsqueeze(-1), projected)  # row-major, as input_ids[item]
        if bool(state.any()):
            if not self.has_states:
                raise CollaborativeError("a prompt holds user-state tokens but this model has no state model")
            states = self.sequence_states(self._state_rows(input_ids, state))
            projected = self.cf_state_projector(states.to(out.device, out.dtype)).to(out.dtype)
            out = out.masked_scatter(state.unsqueeze(-1), projected)
        return out

    def info(self) -> dict:
        return {
            "source": self.table.source,
            "fingerprint": self.table.fingerprint,
            "n_items": len(self.table),
            "dim": self.table.dim,
            "hidden": self.hidden,
            "offset": self.offset,
            "known_items": int(self.table.known.sum()),
            "states": self.has_states,
            "readout": hasattr(self, READOUT),
        }

    def save(self, folder: str | Path) -> None:
        """The item table and its provenance (the projector's weights go with the adapter)."""
        from safetensors.numpy import save_file

        from m6gen.files import write_atomic

        folder = Path(folder)
        save_file({"vectors": self.table.vectors, "known": self.table.known.astype(np.uint8)}, str(folder / TABLE_FILE))
        if self.has_states:
            self.sequence.save(folder / SEQUENCE_FOLDER)
        write_atomic(folder / INFO_FILE, json.dumps(self.info(), indent=2))


def find(model) -> CollaborativeEmbedding | None:
    """The model's collaborative embedding, or None for a plain model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embedding = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    return embedding if isinstance(embedding, CollaborativeEmbedding) else None


def attach(model, table: ItemTable, offset: int, hidden: int = 256, sequence=None) -> CollaborativeEmbedding:
    """Wrap ``model``'s input embedding (before LoRA is added) so that virtual ids read ``table``
    (and, with ``sequence``, a frozen SASRec, user-state tokens read its states)."""
    text = model.get_input_embeddings()
    if isinstance(text, CollaborativeEmbedding):
        raise CollaborativeError("this model already has collaborative tokens")
    wrapper = CollaborativeEmbedding(text, table, offset, hidden, sequence)
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
    sequence = None
    if info.get("states"):
        from m6gen.baselines.sasrec import SASRec

        if not (folder / SEQUENCE_FOLDER / "sasrec.pt").is_file():
            raise CollaborativeError(f"{folder}: {INFO_FILE} names user-state tokens but {SEQUENCE_FOLDER}/ is missing")
        sequence = SASRec.load(folder / SEQUENCE_FOLDER)
    embedding = attach(model, table, info["offset"], info["hidden"], sequence)
    if info.get("readout"):
        embedding.add_readout()  # its weights come with the adapter
    return embedding
