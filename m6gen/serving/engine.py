"""What the model worker runs: a batch of jobs of one kind in, one result (or error) per job out.

Only the batcher's single worker thread calls :class:`Engine`, so the model, its tokenizer and the
beam cache are never used from two threads. A batch of recommendation jobs is one call of
``Recommender.generate`` (one constrained beam search over every user in it); each job is then
reranked with its own k, diversity and novelty. The beams are cached by what decides them
(history, exclusions, profile, rank_by), so moving a diversity or novelty slider reranks without
running the model again.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from m6gen.serving.errors import ApiError

BEAM_CACHE_SIZE = 1024  # users' beam lists kept for reranking (a few kB each)


@dataclass(frozen=True)
class RecommendJob:
    """One checked recommendation request: catalog indices, never raw ids or titles."""

    history: tuple[int, ...]
    k: int
    diversity: float
    novelty: float
    rank_by: str
    exclude: tuple[int, ...] = ()
    open: bool = False
    profile: tuple[tuple[str, Any], ...] = ()  # the user's profile fields, for templates that show them

    @property
    def key(self) -> Hashable:
        """Jobs with equal keys can share one batch: one search mode, one ranking score."""
        return ("open",) if self.open else ("recommend", self.rank_by)

    @property
    def beams_key(self) -> Hashable:
        return (self.rank_by, self.history, tuple(sorted(self.exclude)), self.profile)


@dataclass(frozen=True)
class ExplainJob:
    history_titles: tuple[str, ...]
    title: str
    key: Hashable = field(default=("explain",), init=False)


class Engine:
    """Runs batches of jobs on one :class:`~m6gen.recommender.Recommender` (its ``features`` rerank).

    Args:
        recommender: model, tokenizer, catalog, template and trie.
        batch_size: users per beam search; the server passes its ``max_batch``, so one batch is one search.
        explain_tokens: most new tokens of an explanation.
    """

    def __init__(self, recommender, batch_size: int, explain_tokens: int = 40, cache_size: int = BEAM_CACHE_SIZE):
        self.rec, self.batch_size, self.explain_tokens = recommender, batch_size, explain_tokens
        self.model_calls = 0  # generate / open generation / explanation calls, for /info and tests
        self._views: dict[str, Any] = {}
        self._beams: OrderedDict[Hashable, list] = OrderedDict()
        self._cache_size = cache_size

    def run_batch(self, key: Hashable, jobs: list) -> list:
        """One result dict or exception per job; raises when the batch as a whole fails (the batcher retries)."""
        from m6gen.prompts import TemplateError

        try:
            if key[0] == "explain":
                return [_guard(self._explain, j) for j in jobs]
            return self._open(jobs) if key[0] == "open" else self._recommend(jobs)
        except TemplateError:  # the one model-side error a request can cause: a prompt past the model's context
            raise ApiError(
                422,
                "history",
                "its prompt is longer than the model's context; send fewer or shorter items "
                "(a user_id sends as many as the server's --max-history shows)",
            ) from None

    # ------------------------------------------------------------------ catalog mode
    def _recommend(self, jobs: list[RecommendJob]) -> list:
        beams = {j.beams_key: self._beams[j.beams_key] for j in jobs if j.beams_key in self._beams}
        todo = list({j.beams_key: j for j in jobs if j.beams_key not in beams}.values())  # each history once
        if todo:
            view = self._view(jobs[0].rank_by)
            generated = view.generate(
                [list(j.history) for j in todo], [dict(j.profile) for j in todo], allowed=self._allowed(todo)
            )
            self.model_calls += 1
            for job, found in zip(todo, generated):
                beams[job.beams_key] = found
                self._remember(job.beams_key, found)
        return [_guard(self._rank, j, beams[j.beams_key]) for j in jobs]

    def _view(self, rank_by: str):
        """The recommender with this ranking score and batch size; shares the model, tokenizer and trie."""
        if rank_by not in self._views:
            view = copy.copy(self.rec)
            view.config = replace(self.rec.config, rank_by=rank_by, batch_size=self.batch_size)
            self._views[rank_by] = view
        return self._views[rank_by]

    def _allowed(self, jobs: list[RecommendJob]) -> list[np.ndarray] | None:
        """Per user, the items the search may produce: all but the excluded ones (None: no job excludes any)."""
        if not any(j.exclude for j in jobs):
            return None
        every = np.arange(len(self.rec.catalog), dtype=np.int64)
        return [np.setdiff1d(every, np.asarray(j.exclude, dtype=np.int64)) for j in jobs]

    def _remember(self, key: Hashable, beams: list) -> None:
        self._beams[key] = beams
        self._beams.move_to_end(key)
        while len(self._beams) > self._cache_size:
            self._beams.popitem(last=False)

    def _rank(self, job: RecommendJob, beams: list) -> dict:
        """The job's top-k from its beams, as ``Recommender.recommend`` reranks them (the tests compare the two)."""
        from m6gen.ranking.rerank import RerankConfig, rerank

        rec = self.rec
        weight = rec.search_weight()
        ids = np.array([h.item for h in beams], dtype=np.int64)
        scores = np.array([h.score(job.rank_by) + weight * h.prior for h in beams], dtype=np.float64)
        config = RerankConfig(k=job.k, diversity=job.diversity, novelty=job.novelty)
        result = rerank(ids, scores, seen=set(job.history) | set(job.exclude), features=rec.features, config=config)
        lm = {h.item: h.logprob for h in sorted(beams, key=lambda h: h.logprob)}  # best beam per item wins
        items = [self._item(r, lm[r.item_id]) for r in result.items]
        return {"items": items, "filled": result.filled}

    def _item(self, r, logprob: float) -> dict:
        item = self.rec.catalog[r.item_id]
        return {
            "rank": r.rank,
            "item_id": item.item_id,
            "title": item.title,
            "in_catalog": True,
            "score": _number(r.score),
            "accuracy": _number(r.accuracy),
            "diversity": _number(r.diversity),
            "novelty": _number(r.novelty),
            "logprob": float(logprob),
        }

    # ------------------------------------------------------------------ open mode and explanations
    def _open(self, jobs: list[RecommendJob]) -> list:
        outputs = self.rec.generate_open([list(j.history) for j in jobs], [dict(j.profile) for j in jobs])
        self.model_calls += 1
        return [_guard(self._open_items, j, outs) for j, outs in zip(jobs, outputs)]

    def _open_items(self, job: RecommendJob, outputs: list) -> dict:
        """Distinct titles, best first; catalog ones the user has seen or excluded are left out."""
        seen, texts, items = set(job.history) | set(job.exclude), set(), []
        for out in outputs:
            text = out.text.strip()
            if not text or text in texts or (out.in_catalog and out.item in seen):
                continue
            texts.add(text)
            item = self.rec.catalog[out.item] if out.in_catalog else None
            items.append(
                {
                    "rank": len(items) + 1,
                    "item_id": item.item_id if item else None,
                    "title": item.title if item else text,
                    "in_catalog": out.in_catalog,
                    "score": None,
                    "accuracy": None,
                    "diversity": None,
                    "novelty": None,
                    "logprob": float(out.logprob),
                }
            )
            if len(items) == job.k:
                break
        return {"items": items, "filled": len(items) >= job.k}

    def _explain(self, job: ExplainJob) -> dict:
        from m6gen.explain import explain

        text = explain(self.rec.model, self.rec.tokenizer, list(job.history_titles), job.title, self.explain_tokens)
        self.model_calls += 1
        return {"title": job.title, "explanation": text}


def _number(x: float) -> float | None:
    """JSON has no NaN: a score that is not defined (novelty without popularity) is null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _guard(func, *args) -> Any:
    """``func(*args)``, or the exception it raised, so that it fails only its own job."""
    try:
        return func(*args)
    except Exception as err:  # noqa: BLE001
        return err
