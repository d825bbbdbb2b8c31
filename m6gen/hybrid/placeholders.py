"""Collaborative-token placeholders in prompt text, and their encoding as virtual token ids (no torch)."""

from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDER = "<|cf:{}|>"  # what {{ it.cf }} renders for catalog item {} (readable in `m6gen prompts`)
_PLACEHOLDER = re.compile(r"<\|cf:(\d+)\|>")
TABLE_FILE, INFO_FILE = "collaborative.safetensors", "collaborative.json"  # in a run folder


def has_placeholders(text: str) -> bool:
    return _PLACEHOLDER.search(text) is not None


def places_tokens(template, history, tokenizer=None) -> bool:
    """Whether ``template`` writes a collaborative token (``{{ it.cf }}``) for the items of ``history``."""
    return has_placeholders(template.render_prompt(history, tokenizer=tokenizer, cf=PLACEHOLDER.format))


def saved_placeholders(folder: str | Path | None):
    """What ``{{ it.cf }}`` renders for a run folder's model (index -> placeholder or ""), read
    without loading the model; None when ``folder`` is not a run with collaborative tokens."""
    from safetensors.numpy import load_file

    if folder is None or not (Path(folder) / TABLE_FILE).is_file():
        return None
    known = load_file(str(Path(folder) / TABLE_FILE))["known"].astype(bool)
    return lambda index: PLACEHOLDER.format(index) if known[index] else ""


def encode_with_soft_tokens(tokenizer, prompts: list[str], encode_text) -> list[list[int]]:
    """Token ids of prompts holding placeholders: text pieces tokenized as usual (the first one by
    ``encode_text``, which adds the BOS), each placeholder as its virtual id ``len(tokenizer) + i``."""
    offset = len(tokenizer)
    out = []
    for prompt in prompts:
        parts = _PLACEHOLDER.split(prompt)  # text, index, text, index, ..., text
        texts, indices = parts[0::2], parts[1::2]
        ids = encode_text(tokenizer, [texts[0]])[0]
        rest = tokenizer(texts[1:], add_special_tokens=False)["input_ids"] if indices else []
        for index, piece in zip(indices, rest):
            ids = ids + [offset + int(index)] + piece
        out.append(ids)
    return out
