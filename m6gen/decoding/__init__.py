"""Decoding: the catalog as a token trie, and beam search constrained by it.

The third stage of the flow (data -> prompt -> constrained beams -> reranked list): every output is
a real catalog item. The trie is numpy only; the search drives any Hugging Face causal LM.
"""
