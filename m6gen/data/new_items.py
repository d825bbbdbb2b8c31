"""The new-item protocol: hold out the items that appeared last, as a shop holds items nobody has
interacted with yet.

The ``frac`` of interacted items whose *first* interaction (over all users, any split) is latest
count as new; items tied with the last one taken are new too, so no tie is broken by id. Then:

- every interaction with a new item leaves ``split.train``, so nothing that trains sees one: the
  language model's examples, SASRec, Pop, the collaborative item table and the reranker's popularity
  all read ``split.train`` only;
- new items leave every history a model reads at evaluation (``valid_history``, ``test_history``);
- valid and test *targets* stay as they are: a user whose target is a new item is a new-item event,
  reported on its own by ``m6gen eval --new-items``;
- new items stay in the catalog and the trie, so a generated title can name one.
"""

from __future__ import annotations

import math

import numpy as np

from m6gen.data.histories import Split
from m6gen.data.readers import Dataset


def first_seen(dataset: Dataset) -> np.ndarray:
    """(n_items,) float64: each item's earliest interaction time over all users (inf: never interacted)."""
    first = np.full(len(dataset.catalog), np.inf)
    for events in dataset.interactions.values():
        np.minimum.at(first, events.items, events.times)
    return first


def latest_items(dataset: Dataset, frac: float) -> frozenset[int]:
    """The ``frac`` of interacted items first seen latest (ties with the cutoff included)."""
    if not 0 < frac < 1:
        raise ValueError(f"new-item fraction must be in (0, 1), got {frac}")
    first = first_seen(dataset)
    seen = np.flatnonzero(np.isfinite(first))
    n_new = math.ceil(frac * len(seen))
    if n_new == 0:
        return frozenset()
    cutoff = np.sort(first[seen])[-n_new]
    return frozenset(int(i) for i in seen[first[seen] >= cutoff])


def hold_out(split: Split, new: frozenset[int]) -> Split:
    """``split`` with every interaction with a ``new`` item removed from training and histories."""
    train = {u: [i for i in items if i not in new] for u, items in split.train.items()}
    return Split(train, dict(split.valid), dict(split.test), frozenset(new))


def new_item_split(dataset: Dataset, split: Split, frac: float) -> Split:
    """The new-item protocol's split of ``dataset`` (``frac`` 0: ``split`` unchanged)."""
    return hold_out(split, latest_items(dataset, frac)) if frac else split


def new_item_users(split: Split, target: str = "test") -> list[str]:
    """Users whose ``target`` ("test" or "valid") item is a new item."""
    targets = split.test if target == "test" else split.valid
    return [u for u in split.users if targets[u] in split.new_items]
