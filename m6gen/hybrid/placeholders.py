"""Collaborative-token placeholders in prompt text, and their encoding as virtual token ids (no torch)."""

from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDER = "<|cf:{}|>"  # what {{ it.cf }} renders for catalog item {} (readable in `m6gen prompts`)
STATE_PLACEHOLDER = "<|state:{}|>"  # what {{ it.state }} renders after catalog item {}
_PLACEHOLDER = re.compile(r"<\|(cf|state):(\d+)\|>")
# A state token's virtual id is offset + STATE_SHIFT + item: apart from the item tokens' offset + item
# for any catalog below 16.7 million items, and known without the catalog's size.
STATE_SHIFT = 1 << 24
TABLE_FILE, INFO_FILE = "collaborative.safetensors", "collaborative.json"  # in a run folder
SEQUENCE_FOLDER = "collaborative_sequence"  # in a run folder: the frozen SASRec behind {{ it.state }}
READOUT_FILE, READOUT_INFO = "readout.safetensors", "readout.json"  # in a run folder: m6gen.hybrid.readout


def has_placeholders(text: str) -> bool:
    return _PLACEHOLDER.search(text) is not None


def places_tokens(template, history, tokenizer=None) -> bool:
    """Whether ``template`` writes a collaborative token (``{{ it.cf }}``) for the items of ``history``."""
    return has_placeholders(template.render_prompt(history, tokenizer=tokenizer, cf=PLACEHOLDER.format))


def places_states(template, history, tokenizer=None) -> bool:
    """Whether ``template`` writes a user-state token (``{{ it.state }}``) for the items of ``history``."""
    return has_placeholders(template.render_prompt(history, tokenizer=tokenizer, state=STATE_PLACEHOLDER.format))


def saved_placeholders(folder: str | Path | None, state: bool = False):
    """What ``{{ it.cf }}`` (``state``: ``{{ it.state }}``) renders for a run folder's model (index ->
    placeholder or ""), read without loading the model; None when ``folder`` is not a run with such tokens."""
    from safetensors.numpy import load_file

    if folder is None or not (Path(folder) / TABLE_FILE).is_file():
        return None
    if state and not (Path(folder) / SEQUENCE_FOLDER).is_dir():
        return None
    known = load_file(str(Path(folder) / TABLE_FILE))["known"].astype(bool)
    form = STATE_PLACEHOLDER if state else PLACEHOLDER
    return lambda index: form.format(index) if known[index] else ""


def encode_with_soft_tokens(tokenizer, prompts: list[str], encode_text) -> list[list[int]]:
    """Token ids of prompts holding placeholders: text pieces tokenized as usual (the first one by
    ``encode_text``, which adds the BOS), each item placeholder as its virtual id ``len(tokenizer) + i``,
    each state placeholder as ``len(tokenizer) + STATE_SHIFT + i``."""
    offset = len(tokenizer)
    out = []
    for prompt in prompts:
        parts = _PLACEHOLDER.split(prompt)  # text, kind, index, text, kind, index, ..., text
        texts, kinds, indices = parts[0::3], parts[1::3], parts[2::3]
        ids = encode_text(tokenizer, [texts[0]])[0]
        rest = tokenizer(texts[1:], add_special_tokens=False)["input_ids"] if indices else []
        for kind, index, piece in zip(kinds, indices, rest):
            ids = ids + [offset + (STATE_SHIFT if kind == "state" else 0) + int(index)] + piece
        out.append(ids)
    return out
