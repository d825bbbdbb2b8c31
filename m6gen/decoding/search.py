"""Trie-constrained beam search over a causal LM: every finished beam is a catalog item (the model
side, prefill and steps, is in :mod:`m6gen.decoding.decoder`).

Why a custom loop rather than ``generate`` with ``prefix_allowed_tokens_fn``:
- the prompt is prefilled once per user and its KV cache shared by that user's beams
  (``generate`` expands the input first and prefills every beam's copy);
- beams live as flat numpy arrays (``_Beams``: user, trie node, scores); one step expands every
  beam's trie children with vectorized ops (``CatalogTrie.expand``), no per-beam Python;
- finished and dead beams leave the batch, so late steps run on fewer rows;
- seen-item exclusion and candidate subsets are part of the constraint (a subtree whose items
  are all excluded is never entered), so no beam is spent on an item that will be thrown away.

Three scores per item: ``logprob`` (sum of token log-probabilities), ``normalized`` (divided by
the number of tokens) and ``catalog`` (each step's probability renormalized over the tokens the
trie allows, i.e. the item's probability under the model restricted to the catalog).

An optional item prior (e.g. SASRec's log-probabilities, a text-free collaborative signal as in
"Decoding Matters") joins the search itself: a beam at trie node n carries log P_prior(subtree of n),
which telescopes along a title into log P_prior(item), so the search ranks by
``score + prior_weight * prior`` at every step and explores the items the prior favours even where
the model's first tokens would have pruned them. Reported as ``prior`` (renormalized over the
items the user may get).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from m6gen.decoding.decoder import Decoder
from m6gen.decoding.trie import CatalogTrie

RANKINGS = ("logprob", "normalized", "catalog")


@dataclass(frozen=True)
class Hypothesis:
    """One generated catalog item with its scores."""

    item: int
    logprob: float
    normalized: float
    catalog: float
    n_tokens: int
    prior: float = 0.0  # log P_prior(item), renormalized over the user's allowed items (0 without a prior)

    def score(self, rank_by: str) -> float:
        return getattr(self, rank_by)


def _top_per_user(users: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores of each user (stable: earlier wins ties)."""
    if len(users) == 0:
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((-scores, users))
    su = users[order]
    seg_start = np.r_[0, np.flatnonzero(su[1:] != su[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(seg_start, np.diff(np.r_[seg_start, len(order)]))
    return order[rank < k]


def _segment_logsumexp(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """logsumexp of ``values`` within runs of equal ``segments`` (runs are contiguous), per element."""
    if len(values) == 0:  # reduceat needs at least one element
        return values
    starts = np.r_[0, np.flatnonzero(segments[1:] != segments[:-1]) + 1]
    peak = np.maximum.reduceat(values, starts)
    lengths = np.diff(np.r_[starts, len(values)])
    peak_each = np.repeat(peak, lengths)
    lse = peak + np.log(np.add.reduceat(np.exp(values - peak_each), starts))
    return np.repeat(lse, lengths)


class _PriorMass:
    """Per-user prior probability mass of every trie subtree: cumulative sums in the trie's sorted order."""

    def __init__(
        self,
        trie: CatalogTrie,
        log_prior: np.ndarray,
        banned: list[np.ndarray] | None,
        allowed: list[np.ndarray] | None,
    ):
        log_prior = np.asarray(log_prior, dtype=np.float64)
        if log_prior.ndim != 2 or log_prior.shape[1] != trie.n_items:
            raise ValueError(f"prior must be (users, {trie.n_items} items) log-scores, got shape {log_prior.shape}")
        p = np.exp(log_prior - log_prior.max(axis=1, keepdims=True))  # (U, I)
        for u in range(len(p)):
            if banned is not None:
                p[u, np.asarray(banned[u], dtype=np.int64)] = 0.0
            if allowed is not None:
                keep = np.zeros(trie.n_items, dtype=bool)
                keep[np.asarray(allowed[u], dtype=np.int64)] = True
                p[u, ~keep] = 0.0
        ordered = np.zeros_like(p)
        ordered[:, trie.item_rank] = p  # column r = the item with sorted rank r
        self.cum = np.zeros((len(p), trie.n_items + 1))
        np.cumsum(ordered, axis=1, out=self.cum[:, 1:])
        self.trie = trie
        self.root = self.log_mass(np.arange(len(p)), np.zeros(len(p), dtype=np.int64))

    def log_mass(self, users: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        mass = self.cum[users, self.trie.row_hi[nodes]] - self.cum[users, self.trie.row_lo[nodes]]
        return np.log(np.maximum(mass, 1e-300))


class _ItemSets:
    """Per-user item sets as sorted keys for subtree counting (see ``CatalogTrie.count_in_subtrees``)."""

    def __init__(self, trie: CatalogTrie, sets: list[np.ndarray]):
        self.trie = trie
        self.keys = trie.user_item_keys(sets)

    def count(self, users: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        return self.trie.count_in_subtrees(self.keys, users, nodes)


@dataclass
class _Constraint:
    """Which trie subtrees each user may enter, and the item prior they carry."""

    trie: CatalogTrie
    banned: _ItemSets | None
    allowed: _ItemSets | None
    prior: _PriorMass | None
    prior_weight: float

    @classmethod
    def build(
        cls,
        trie: CatalogTrie,
        banned: list[np.ndarray] | None,
        allowed: list[np.ndarray] | None,
        prior: np.ndarray | None,
        prior_weight: float,
    ) -> _Constraint:
        if allowed is not None and banned is not None:  # the prior is renormalized over what is left
            allowed = [
                np.setdiff1d(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
                for a, b in zip(allowed, banned)
            ]
        return cls(
            trie,
            _ItemSets(trie, banned) if banned is not None else None,
            _ItemSets(trie, allowed) if allowed is not None else None,
            _PriorMass(trie, prior, banned, allowed) if prior is not None else None,
            prior_weight,
        )

    def children(self, beams: _Beams) -> tuple[np.ndarray, np.ndarray]:
        """(parent beam index, child node) of every child that still holds an item its user may get."""
        parent, child = self.trie.expand(beams.node)
        users = beams.user[parent]
        keep = np.ones(len(child), dtype=bool)
        if self.banned is not None:  # a subtree whose items are all banned is never entered
            keep &= self.banned.count(users, child) < self.trie.subtree_size(child)
        if self.allowed is not None:
            keep &= self.allowed.count(users, child) > 0
        return parent[keep], child[keep]


@dataclass
class _Beams:
    """Beams (live ones, candidates or finished ones) as parallel numpy arrays, one entry per beam.

    The score fields are named as in :class:`Hypothesis`; ``score`` is what the search ranks by.
    """

    user: np.ndarray  # int64
    node: np.ndarray  # int64: trie node reached (a leaf once the beam is finished)
    logprob: np.ndarray  # float64
    catalog: np.ndarray  # float64
    prior: np.ndarray  # float64: log P_prior(subtree of node), 0 without a prior
    n_tokens: np.ndarray  # int64
    score: np.ndarray  # float64: logprob or catalog, + prior_weight * prior

    @classmethod
    def at_root(cls, n_users: int) -> _Beams:
        zeros = np.zeros(n_users)  # shared: no step writes into a beam array in place
        return cls(
            np.arange(n_users),
            np.zeros(n_users, dtype=np.int64),
            zeros,
            zeros,
            zeros,
            np.zeros(n_users, dtype=np.int64),
            zeros,
        )

    def take(self, index: np.ndarray) -> _Beams:
        return _Beams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def concat(self, other: _Beams) -> _Beams:
        return _Beams(**{f.name: np.r_[getattr(self, f.name), getattr(other, f.name)] for f in fields(self)})


@dataclass
class _Finished:
    """The pool of finished items: each user's best ``size`` by score, in (user, best first) order."""

    n_users: int
    size: int
    beams: _Beams

    def add(self, leaves: _Beams) -> None:
        pool = self.beams.concat(leaves)
        self.beams = pool.take(_top_per_user(pool.user, pool.score, self.size))

    def beats(self, users: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Whether each user's pool is full and its worst item scores at least ``scores``."""
        full = np.bincount(self.beams.user, minlength=self.n_users) >= self.size
        worst = np.full(self.n_users, np.inf)
        np.minimum.at(worst, self.beams.user, self.beams.score)
        return full[users] & (scores <= worst[users])

    def hypotheses(self, trie: CatalogTrie) -> list[list[Hypothesis]]:
        b = self.beams
        results: list[list[Hypothesis]] = [[] for _ in range(self.n_users)]
        for j in np.lexsort((-b.score, b.user)):
            results[int(b.user[j])].append(
                Hypothesis(
                    item=int(trie.node_item[b.node[j]]),
                    logprob=float(b.logprob[j]),
                    normalized=float(b.logprob[j] / b.n_tokens[j]),
                    catalog=float(b.catalog[j]),
                    n_tokens=int(b.n_tokens[j]),
                    prior=float(b.prior[j]),
                )
            )
        return results


@dataclass
class _Timing:
    """What ``stats`` reports."""

    model_s: float = 0.0  # prefill and steps
    prefill_s: float = 0.0
    constraint_s: float = 0.0
    steps: int = 0
    rows: int = 0  # beam rows fed to the model after the prefill
    prompt_tokens: int = 0  # prefilled tokens, padding excluded
    attended: int = 0  # keys the step rows attended to (their prompt plus their title so far)


def _expand(beams: _Beams, decoder: Decoder, constraint: _Constraint, search_by: str) -> tuple[np.ndarray, _Beams]:
    """Every beam extended by each child its user may enter: (parent beam index, candidates)."""
    parent, child = constraint.children(beams)
    users = beams.user[parent]
    step_lp = decoder.token_logprobs(parent, constraint.trie.node_token[child].astype(np.int64))
    step_cat = step_lp - _segment_logsumexp(step_lp, parent)  # renormalized over the allowed children
    logprob = beams.logprob[parent] + step_lp
    catalog = beams.catalog[parent] + step_cat
    score = logprob if search_by == "logprob" else catalog
    if constraint.prior is not None:  # log P_prior(subtree of child): the sum of the steps' prior terms
        prior = constraint.prior.log_mass(users, child) - constraint.prior.root[users]
        score = score + constraint.prior_weight * prior
    else:
        prior = np.zeros(len(child))
    return parent, _Beams(users, child, logprob, catalog, prior, beams.n_tokens[parent] + 1, score)


def _prune(cands: _Beams, unfinished: np.ndarray, finished: _Finished) -> np.ndarray:
    """Indices of the candidates that go on: each user's best ``finished.size`` unfinished ones, unless
    the user's pool is full and already beats them (scores only fall as a beam grows, so that is final)."""
    live = unfinished[_top_per_user(cands.user[unfinished], cands.score[unfinished], finished.size)]
    return live[~finished.beats(cands.user[live], cands.score[live])]


def _check_inputs(
    prompt_ids: list[list[int]], banned: list[np.ndarray] | None, allowed: list[np.ndarray] | None, prior_weight: float
) -> None:
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    if banned is not None and len(banned) != len(prompt_ids) or allowed is not None and len(allowed) != len(prompt_ids):
        raise ValueError("banned/allowed need one entry per prompt")
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be >= 0 (scores must only fall as a beam grows), got {prior_weight}")


def constrained_beam_search(
    model,
    trie: CatalogTrie,
    prompt_ids: list[list[int]],
    num_beams: int = 20,
    *,
    banned: list[np.ndarray] | None = None,
    allowed: list[np.ndarray] | None = None,
    search_by: str = "logprob",
    pad_token_id: int = 0,
    max_new_tokens: int | None = None,
    prior: np.ndarray | Callable | None = None,
    prior_weight: float = 1.0,
    share_prompt: bool | None = None,
    stats: dict | None = None,
    states_out: list | None = None,
) -> list[list[Hypothesis]]:
    """Up to ``num_beams`` distinct catalog items per prompt, best first by ``search_by``.

    Args:
        model: a Hugging Face causal LM (any dtype); run under ``torch.no_grad``.
        trie: the catalog trie built from the same tokenizer.
        prompt_ids: one token-id list per user; lengths may differ (left-padded here).
        banned: per user, item indices that must not be generated (e.g. the history).
        allowed: per user, the only item indices that may be generated (a candidate subset).
        search_by: "logprob" or "catalog": the beam objective, also the returned order.
            (Rank by "normalized" afterwards with :func:`rank_hypotheses`.)
        max_new_tokens: cap on generated tokens (default: the trie's depth, so every title can end).
        prior: (users, items) log-scores of an item prior (e.g. SASRec log-probabilities); the
            search ranks by ``search_by`` score + ``prior_weight`` * log P_prior(item), applied
            token by token through the trie (see the module docstring). Results are in that order.
            Or a function from the prompts' last hidden states ((users, width) tensor, read from
            the search's own prefill) to those log-scores: a readout of the model itself
            (:mod:`m6gen.hybrid.readout`) at no second forward.
        share_prompt: keep each prompt's KV cache once per user, read by all its beams, instead of a
            copy per beam (see :mod:`m6gen.decoding.shared_cache`); same results, much less copying.
            None (default): wherever the model's architecture supports it.
        stats: if given, filled with seconds spent in the model (``model_s``) and in the
            constraint bookkeeping (``constraint_s``), the number of ``steps`` and ``rows`` run.
        states_out: if given, the prompts' last hidden states ((users, width) float32 array, from the
            prefill: what a readout reads) are appended to it, so no second forward computes them.
    """
    import time
    from contextlib import nullcontext

    from m6gen.decoding import shared_cache

    if search_by not in ("logprob", "catalog"):
        raise ValueError(f"search_by={search_by!r}: beams are searched by 'logprob' or 'catalog'")
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    if len(prompt_ids) == 0:
        return []
    _check_inputs(prompt_ids, banned, allowed, prior_weight)
    from_states = callable(prior)  # a prior read from the prompts: known after the prefill
    constraint = None if from_states else _Constraint.build(trie, banned, allowed, prior, prior_weight)
    max_steps = trie.max_depth if max_new_tokens is None else min(max_new_tokens, trie.max_depth)
    if share_prompt is None:
        share_prompt = shared_cache.supports(model)
    elif share_prompt and not shared_cache.supports(model):
        raise ValueError(f"share_prompt: not supported for {type(model).__name__} (see m6gen.decoding.shared_cache)")
    prompt_length = np.array([len(p) for p in prompt_ids])
    timing = _Timing(prompt_tokens=int(prompt_length.sum()))
    clock = time.perf_counter()
    keep_states = from_states or states_out is not None
    decoder = Decoder.prefill(model, prompt_ids, pad_token_id, share_prompt, keep_states=keep_states)
    timing.model_s += time.perf_counter() - clock
    if states_out is not None:
        states_out.append(decoder.prompt_states.cpu().numpy())
    if from_states:
        constraint = _Constraint.build(trie, banned, allowed, prior(decoder.prompt_states), prior_weight)
    timing.prefill_s = timing.model_s
    beams = _Beams.at_root(len(prompt_ids))  # beam r is row r of the decoder
    finished = _Finished(len(prompt_ids), num_beams, _Beams.at_root(0))
    with shared_cache.shared_prompt_attention(model) if share_prompt else nullcontext():
        _search(beams, finished, decoder, constraint, search_by, max_steps, timing, prompt_length)
    if stats is not None:
        stats.update(asdict(timing))
    return finished.hypotheses(trie)


def _search(
    beams: _Beams,
    finished: _Finished,
    decoder: Decoder,
    constraint: _Constraint,
    search_by: str,
    max_steps: int,
    timing: _Timing,
    prompt_length: np.ndarray,
) -> None:
    """The steps after the prefill: expand, collect finished items, prune, feed the survivors."""
    import time

    trie = constraint.trie
    for step in range(max_steps):
        clock = time.perf_counter()
        parent, cands = _expand(beams, decoder, constraint, search_by)
        leaf = trie.node_item[cands.node] >= 0  # the end marker was reached
        finished.add(cands.take(leaf))
        live = _prune(cands, np.flatnonzero(~leaf), finished)
        timing.constraint_s += time.perf_counter() - clock
        if len(live) == 0 or step == max_steps - 1:
            break
        beams = cands.take(live)
        clock = time.perf_counter()
        decoder.advance(parent[live], trie.node_token[beams.node].astype(np.int64))
        timing.model_s += time.perf_counter() - clock
        timing.steps += 1
        timing.rows += len(live)
        timing.attended += int(prompt_length[beams.user].sum()) + len(live) * (step + 1)


def rank_hypotheses(hyps: list[Hypothesis], rank_by: str) -> list[Hypothesis]:
    """Hypotheses sorted best first by one of :data:`RANKINGS` (stable)."""
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by={rank_by!r}: expected one of {RANKINGS}")
    return sorted(hyps, key=lambda h: -h.score(rank_by))


def score_items(model, trie: CatalogTrie, prompt_ids: list[int], items: list[int]) -> list[Hypothesis]:
    """Exact scores of given items for one prompt by teacher forcing (the reference the beam
    search is tested against, and a way to score a short candidate list)."""
    import torch

    device = next(model.parameters()).device
    seqs = [trie.sequence(i) for i in items]
    full = [prompt_ids + s for s in seqs]
    width = max(len(f) for f in full)
    ids = torch.zeros((len(full), width), dtype=torch.long)
    mask = torch.zeros((len(full), width), dtype=torch.long)
    for r, f in enumerate(full):
        ids[r, : len(f)] = torch.tensor(f)
        mask[r, : len(f)] = 1
    logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
    out = []
    p = len(prompt_ids)
    for r, (item, seq) in enumerate(zip(items, seqs)):
        lp = cat = 0.0
        node = 0
        for t, tok in enumerate(seq):
            row = logp[r, p + t - 1].double()
            allowed, children = trie.children(node)
            lp_tok = float(row[tok])
            cat += lp_tok - float(torch.logsumexp(row[torch.from_numpy(allowed)], 0))
            lp += lp_tok
            node = int(children[np.flatnonzero(allowed == tok)[0]])
        out.append(Hypothesis(item=item, logprob=lp, normalized=lp / len(seq), catalog=cat, n_tokens=len(seq)))
    return out
