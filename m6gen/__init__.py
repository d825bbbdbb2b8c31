"""m6gen: generative recommendation by trie-constrained generation of item titles."""

__version__ = "0.2.0"
