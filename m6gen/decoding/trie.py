"""The catalog as a token trie: which tokens may follow a prefix, and which item a path spells.

Pure core: token-id sequences in, numpy arrays out; no torch, no tokenizer. The model side
(`m6gen.model.build_catalog_trie`) tokenizes the titles and hands the ids here.

Layout (built fully vectorized, so a 1M-title catalog builds in seconds):
nodes are numbered breadth-first with the root as node 0, so the children of a node are
contiguous node ids ``first_child[n] .. first_child[n] + n_children[n]`` and the edge into
node ``m`` carries token ``node_token[m]``. Every sequence ends with an end marker (EOS), which
makes the set prefix-free: "Alien" is complete only where its end marker follows, so it never
hides "Aliens". Leaves carry their item (``node_item``); every node knows the contiguous range
of sorted sequences below it (``row_lo``/``row_hi``), which lets per-user exclusions be checked
with two binary searches instead of a walk.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import marisa_trie
import numpy as np

from m6gen.files import write_atomic

TRIE_ARRAYS = (
    "first_child",
    "n_children",
    "node_token",
    "node_item",
    "row_lo",
    "row_hi",
    "item_rank",
    "flat",
    "offsets",
)


@dataclass
class CatalogTrie:
    """Token trie over a catalog; see the module docstring for the layout.

    Build it with :meth:`from_sequences`; ``sequence(i)`` gives back item ``i``'s token ids.
    """

    first_child: np.ndarray  # (n_nodes,) int32: node id of the first child
    n_children: np.ndarray  # (n_nodes,) int32
    node_token: np.ndarray  # (n_nodes,) int32: token on the edge into the node (-1 for the root)
    node_item: np.ndarray  # (n_nodes,) int32: item index at a leaf, else -1
    row_lo: np.ndarray  # (n_nodes,) int32: first sorted rank in the subtree
    row_hi: np.ndarray  # (n_nodes,) int32: one past the last sorted rank in the subtree
    item_rank: np.ndarray  # (n_items,) int32: sorted rank of each item
    flat: np.ndarray  # concatenated token ids of all items, in item order
    offsets: np.ndarray  # (n_items + 1,) start of each item's ids in ``flat``

    # ------------------------------------------------------------------ building
    @classmethod
    def from_sequences(cls, sequences: list[list[int]] | tuple[np.ndarray, np.ndarray]) -> CatalogTrie:
        """Build from one token-id sequence per item (item ``i`` is ``sequences[i]``).

        ``sequences`` may also be ``(flat, offsets)`` ragged arrays. Each sequence must be
        non-empty and should end with the end marker; sequences must be distinct.
        """
        if isinstance(sequences, tuple):
            flat, offsets = np.asarray(sequences[0]), np.asarray(sequences[1], dtype=np.int64)
        else:
            lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
            offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            flat = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(offsets[-1]))
        lengths = np.diff(offsets)
        n_items = len(lengths)
        if n_items == 0:
            raise ValueError("cannot build a trie over an empty catalog")
        if lengths.min() <= 0:
            raise ValueError(f"item {int(np.argmin(lengths))} has an empty token sequence")
        if flat.min() < 0:
            raise ValueError("token ids must be non-negative")
        max_len = int(lengths.max())

        # Dense (n_items, max_len) matrix of token + 1, padded with 0 (sorts before every token);
        # uint16 where the vocabulary allows (most do): it is the largest array built here.
        top = int(flat.max()) + 1
        dtype = np.uint16 if top < 2**16 else np.int32 if top < 2**31 else np.int64
        dense = np.zeros((n_items, max_len), dtype=dtype)
        col = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)
        dense[np.repeat(np.arange(n_items), lengths), col] = flat + 1
        del col
        order = np.lexsort(dense.T[::-1])  # lexicographic order of rows
        dense = dense[order]
        sorted_len = lengths[order]

        # lcp[i]: first position where sorted row i differs from row i-1 (0 for the first row).
        lcp = np.zeros(n_items, dtype=np.int64)
        if n_items > 1:
            differs = dense[1:] != dense[:-1]
            has_diff = differs.any(axis=1)
            if not has_diff.all():
                at = int(np.flatnonzero(~has_diff)[0])
                a, b = sorted((int(order[at]), int(order[at + 1])))
                raise ValueError(
                    f"items {a} and {b} (catalog indices) share one token sequence: titles must tokenize uniquely"
                )
            lcp[1:] = differs.argmax(axis=1)
            del differs

        # Row i opens a new node at each depth d with lcp[i] <= d < len_i; number them
        # breadth-first (depth-major, row order within a depth), so siblings are contiguous.
        # Node arrays are int32 (a 1M-title catalog has ~10M nodes; int64 would double the memory).
        # Preallocated (no per-depth lists to concatenate): row i opens len_i - lcp_i nodes.
        n_nodes = 1 + int((sorted_len - lcp).sum())
        node_token, node_item, parent, row_lo = (np.empty(n_nodes, dtype=np.int32) for _ in range(4))
        node_token[0], node_item[0], parent[0], row_lo[0] = -1, -1, -1, 0
        depth_start = [0]
        next_id = 1
        containing = np.zeros(n_items, dtype=np.int64)  # node at depth d-1 holding each row (root)
        rows = np.arange(n_items)
        for d in range(max_len):
            opens = (lcp <= d) & (sorted_len > d)
            new_rows = rows[opens]
            end = next_id + len(new_rows)
            depth_start.append(next_id)
            node_token[next_id:end] = dense[new_rows, d].astype(np.int64) - 1
            parent[next_id:end] = containing[new_rows]
            row_lo[next_id:end] = new_rows
            node_item[next_id:end] = np.where(sorted_len[new_rows] == d + 1, order[new_rows], -1)
            # Forward-fill: each row now belongs to the latest node opened at or before it.
            marks = np.full(n_items, -1, dtype=np.int64)
            marks[new_rows] = np.arange(next_id, end)
            containing = np.maximum.accumulate(marks)
            next_id = end
        depth_start.append(next_id)
        del dense, containing, marks
        assert next_id == n_nodes

        n_children = np.bincount(parent[1:], minlength=n_nodes).astype(np.int32)
        # Children of a parent are contiguous and in node-id order (parents are non-decreasing
        # along node ids), so the first child is where the parent's run starts.
        first_child = np.full(n_nodes, -1, dtype=np.int32)
        run_start = np.r_[1, np.flatnonzero(parent[2:] != parent[1:-1]) + 2]
        first_child[parent[run_start]] = run_start
        del parent

        # row_hi, bottom-up: a leaf covers its own row; an inner node ends where its last child ends.
        row_hi = np.where(node_item >= 0, row_lo + 1, 0).astype(np.int32)
        for d in range(max_len - 1, -1, -1):
            nodes = np.arange(depth_start[d], depth_start[d + 1])  # nodes whose tokens sit at position d-1
            inner = nodes[n_children[nodes] > 0]
            row_hi[inner] = row_hi[first_child[inner] + n_children[inner] - 1]
        row_hi[0] = n_items

        item_rank = np.empty(n_items, dtype=np.int32)
        item_rank[order] = np.arange(n_items)
        return cls(first_child, n_children, node_token, node_item, row_lo, row_hi, item_rank, flat, offsets)

    # ------------------------------------------------------------------ queries
    @property
    def n_items(self) -> int:
        return len(self.item_rank)

    @property
    def n_nodes(self) -> int:
        return len(self.node_token)

    @property
    def max_depth(self) -> int:
        return int(np.diff(self.offsets).max())

    def sequence(self, item: int) -> list[int]:
        """Token ids of ``item`` (end marker included)."""
        return self.flat[self.offsets[item] : self.offsets[item + 1]].tolist()

    def children(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, child node ids) that may follow ``node``."""
        start, count = self.first_child[node], self.n_children[node]
        if count == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        ids = np.arange(start, start + count)
        return self.node_token[ids], ids

    def walk(self, tokens: list[int]) -> int:
        """Node reached by following ``tokens`` from the root, or -1 if they leave the trie."""
        node = 0
        for tok in tokens:
            toks, ids = self.children(node)
            hit = np.flatnonzero(toks == tok)
            if len(hit) == 0:
                return -1
            node = int(ids[hit[0]])
        return node

    def allowed_tokens(self, prefix: list[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (empty when ``prefix`` is complete or invalid)."""
        node = self.walk(prefix)
        return [] if node < 0 else self.children(node)[0].tolist()

    def lookup(self, tokens: list[int]) -> int:
        """Item spelled by a complete sequence, or -1."""
        node = self.walk(tokens)
        return -1 if node < 0 else int(self.node_item[node])

    def expand(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All children of many nodes at once.

        Returns ``(parent_pos, child)``: for each child edge, the position in ``nodes`` of its
        parent and the child's node id, grouped by parent in input order. Vectorized: this is
        the per-step work of the constrained decoder.
        """
        counts = self.n_children[nodes].astype(np.int64)
        total = int(counts.sum())
        parent_pos = np.repeat(np.arange(len(nodes)), counts)
        starts = np.repeat(self.first_child[nodes], counts)
        seg_start = np.repeat(np.cumsum(counts) - counts, counts)
        child = starts + (np.arange(total) - seg_start)
        return parent_pos, child

    def user_item_keys(self, items: list[np.ndarray] | list[list[int]]) -> np.ndarray:
        """Per-user item sets (one per user, in user order) as one sorted key array for
        :meth:`count_in_subtrees`: ``user * n_items + sorted rank`` of each item."""
        n = self.n_items
        parts = [
            np.unique(self.item_rank[np.asarray(its, dtype=np.int64)]).astype(np.int64) + u * n
            for u, its in enumerate(items)
        ]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def count_in_subtrees(self, keys: np.ndarray, users: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """How many of each user's keyed items lie below each node (two binary searches each)."""
        base = users.astype(np.int64) * self.n_items
        return np.searchsorted(keys, base + self.row_hi[nodes]) - np.searchsorted(keys, base + self.row_lo[nodes])

    def subtree_size(self, nodes: np.ndarray) -> np.ndarray:
        return self.row_hi[nodes] - self.row_lo[nodes]

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, meta: dict | None = None) -> None:
        """Write the arrays (``trie.npz``) and ``trie.json`` metadata into ``folder``, atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = io.BytesIO()
        np.savez(arrays, **{name: getattr(self, name) for name in TRIE_ARRAYS})
        write_atomic(folder / "trie.npz", arrays.getvalue())
        info = {"n_items": self.n_items, "n_nodes": self.n_nodes, **(meta or {})}
        write_atomic(folder / "trie.json", json.dumps(info, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> tuple[CatalogTrie, dict]:
        folder = Path(folder)
        with np.load(folder / "trie.npz") as z:
            trie = cls(**{name: z[name] for name in TRIE_ARRAYS})
        meta = json.loads((folder / "trie.json").read_text())
        return trie, meta


class TitleIndex:
    """Display title <-> item index, and case-insensitive prefix search, on marisa-tries."""

    def __init__(self, titles: list[str]):
        self.titles = list(titles)
        self._exact = marisa_trie.RecordTrie("<i", ((t, (i,)) for i, t in enumerate(self.titles)))
        self._lower = marisa_trie.RecordTrie("<i", ((t.casefold(), (i,)) for i, t in enumerate(self.titles)))

    def __len__(self) -> int:
        return len(self.titles)

    def lookup(self, title: str) -> int:
        """Item index of an exact display title, or -1."""
        hit = self._exact.get(title)
        return hit[0][0] if hit else -1

    def prefix(self, text: str, limit: int = 20) -> list[int]:
        """Items whose title starts with ``text`` (case-insensitive), shortest titles first."""
        found = sorted({i for _, (i,) in self._lower.items(text.casefold())}, key=lambda i: (len(self.titles[i]), i))
        return found[:limit]
