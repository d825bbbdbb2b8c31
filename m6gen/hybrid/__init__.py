"""Hybrid item tokens: a collaborative vector per item, shown to the language model as one soft token.

A template writes ``{{ it.cf }}`` where an item's collaborative token goes; it renders a placeholder
(``<|cf:INDEX|>``, :mod:`~m6gen.hybrid.placeholders`) that the encoder turns into a *virtual token
id* past the tokenizer's vocabulary. The model's input embedding is wrapped
(:class:`~m6gen.hybrid.soft_tokens.CollaborativeEmbedding`) so that those ids read a trained
projector's image of the item's frozen collaborative embedding (:mod:`~m6gen.hybrid.item_table`),
after LLaRA (Liao et al., SIGIR 2024) and CoLLM. Everything after the embedding (KV caches, the
shared-prompt decoder, packing, the trie) sees ordinary token ids.
"""

_EXPORTS = {
    "PLACEHOLDER": "m6gen.hybrid.placeholders",
    "encode_with_soft_tokens": "m6gen.hybrid.placeholders",
    "CollaborativeError": "m6gen.hybrid.item_table",
    "ItemTable": "m6gen.hybrid.item_table",
    "load_item_table": "m6gen.hybrid.item_table",
    "CollaborativeEmbedding": "m6gen.hybrid.soft_tokens",
    "attach": "m6gen.hybrid.soft_tokens",
    "find": "m6gen.hybrid.soft_tokens",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # torch loads only with the modules that need it
    if name not in _EXPORTS:
        raise AttributeError(f"module 'm6gen.hybrid' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
