"""Ranking: rerank beams for accuracy, diversity and novelty, and score ranked lists (HR, NDCG, ...).

The last stage of the flow (data -> prompt -> constrained beams -> reranked list). numpy only: it
takes item ids and score arrays, never a model.
"""
