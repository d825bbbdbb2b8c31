"""Baselines and retrievers: Pop and SASRec (full cross-entropy), evaluated on the same split as m6gen."""
