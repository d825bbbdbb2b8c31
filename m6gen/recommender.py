"""The recommender end to end: histories -> prompts -> constrained beams -> reranked top-k.

Glue only: each stage lives in its own module (prompts, model, trie, generate, rerank).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from m6gen.config import PromptArgs
from m6gen.data.catalog import Catalog
from m6gen.decoding.open_ended import OpenOutput
from m6gen.decoding.search import RANKINGS, Hypothesis, constrained_beam_search, rank_hypotheses
from m6gen.ranking.rerank import ItemFeatures, RerankConfig, RerankResult, rerank


@dataclass
class RecommendConfig:
    """How recommendations are generated (the reranker has its own :class:`RerankConfig`).

    ``template``, ``max_history`` and ``n_candidates`` left as None mean: the trained run's own,
    else the package defaults (titles, 20, 20); :func:`resolve_prompt` fills them.
    """

    template: str | None = field(default=None, metadata={"help": "prompt template name in prompts/ (or a .jinja path)"})
    max_history: int | None = field(default=None, metadata={"help": "most recent history items shown in the prompt"})
    beams: int = field(default=20, metadata={"help": "beams = catalog items generated per user before reranking"})
    batch_size: int = field(default=8, metadata={"help": "users decoded together"})
    rank_by: str = field(default="logprob", metadata={"help": f"beam score to rank by: one of {RANKINGS}"})
    exclude_seen: bool = field(default=True, metadata={"help": "never generate items from the user's history"})
    dtype: str = field(default="auto", metadata={"help": "model dtype: auto, float32 or bfloat16"})
    n_candidates: int | None = field(
        default=None, metadata={"help": "items a retriever proposes per user (the prompt lists them, all are ranked)"}
    )

    def __post_init__(self):
        if self.rank_by not in RANKINGS:
            raise ValueError(f"rank_by={self.rank_by!r}: expected one of {RANKINGS}")
        for name in ("max_history", "beams", "batch_size", "n_candidates"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")


class Recommender:
    """A causal LM, its tokenizer, a prompt template and the catalog trie, ready to recommend."""

    def __init__(
        self,
        model,
        tokenizer,
        catalog: Catalog,
        template,
        config: RecommendConfig | None = None,
        trie=None,
        trie_cache: str | Path | None = None,
        features: ItemFeatures | None = None,
        prior=None,
        prior_weight: float = 1.0,
        retriever=None,
        readout=None,
        readout_weight: float = 0.0,
    ):
        """``prior``: optional function from histories to (users, items) log-scores, e.g. ``SASRec.score``,
        searched with weight ``prior_weight`` by :meth:`recommend` (see :meth:`generate`).
        ``readout``: the run's collaborative readout (:mod:`m6gen.hybrid.readout`), searched as an item
        prior with weight ``readout_weight`` (0: kept for ``generate(prior="readout")`` only).
        ``retriever``: e.g. a ``SASRec``; each prompt then lists its top ``config.n_candidates``
        items (a model trained with ``m6gen train --candidates``) and the search ranks those."""
        from m6gen.model import build_catalog_trie

        self.model, self.tokenizer, self.catalog, self.template = model, tokenizer, catalog, template
        config = config or RecommendConfig()
        self.config = replace(
            config,
            template=config.template or template.name,
            max_history=config.max_history or 20,
            n_candidates=config.n_candidates or 20,
        )
        self.template.max_history = self.config.max_history
        self.targets = template.render_targets(catalog)
        self._line_breaks: list[int] | None = None  # where an open-ended title ends (generate_open)
        self.trie = trie if trie is not None else build_catalog_trie(tokenizer, self.targets, cache_dir=trie_cache)
        self.features = features
        self.prior, self.prior_weight = prior, prior_weight
        self.readout, self.readout_weight = readout, readout_weight
        if readout_weight > 0 and readout is None:
            raise ValueError("readout_weight > 0 needs a readout (m6gen fit-readout --model <run>)")
        self.retriever = retriever
        from m6gen.hybrid import find

        self.collaborative = find(model)  # the model's collaborative item tokens ({{ it.cf }}), if any

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None,
        catalog: Catalog,
        config: RecommendConfig | None = None,
        *,
        templates: str | Path | None = None,
        gguf_file: str | None = None,
        device: str = "auto",
        sasrec: str | Path | None = None,
        sasrec_weight: float = 1.0,
        features: ItemFeatures | None = None,
        candidates: str | Path | None = None,
        readout_weight: float = 0.0,
    ) -> Recommender:
        """Load a model and make it a recommender over ``catalog``.

        ``model``: an m6gen training folder (its LoRA adapter merged in for speed; its template and
        history length unless ``config`` is given), a Hugging Face model id or folder, a ``.gguf``
        file, or None for the default SmolLM2-135M-Instruct. ``templates``: an extra folder searched
        before ``prompts/``. ``device``: auto (the GPU or other accelerator torch sees, else the CPU),
        cpu, cuda, cuda:1, mps. ``sasrec``: a saved SASRec folder (``m6gen eval`` writes
        ``<model>/baselines/sasrec``) whose log-probabilities join the search with ``sasrec_weight``.
        ``candidates``: a saved SASRec folder proposing the candidates a candidate-prompt model ranks
        (default: the retriever the run was trained with, ``m6gen train --candidates``).
        ``readout_weight``: weight of the run's collaborative readout (``m6gen fit-readout``) in the search.
        """
        from m6gen.baselines.sasrec import load_sasrec
        from m6gen.model import load_model, load_tokenizer
        from m6gen.prompts import TemplateLibrary
        from m6gen.runs import load_trained, resolve_prompt, run_readout, trained_run_config

        if not isinstance(catalog, Catalog):
            got = type(catalog).__name__
            raise TypeError(f"catalog: expected an m6gen Catalog (load_dataset(...).catalog), got {got}")
        run = trained_run_config(model)
        if run is not None:
            from m6gen.model import ModelError
            from m6gen.runs import read_run_config

            trained_on = read_run_config(model)[1].get("n_items")  # the run's "resolved" facts
            if trained_on is not None and trained_on != len(catalog):  # another data set's catalog
                raise ModelError(
                    f"{model}: trained on a catalog of {trained_on} items ({run.data}), "
                    f"this one has {len(catalog)}: load the run's own data"
                )
        config = config or RecommendConfig()
        prompt = resolve_prompt(
            model,
            PromptArgs(
                templates=templates,
                template=config.template,
                max_history=config.max_history,
                candidates=candidates,
                n_candidates=config.n_candidates,
            ),
        )
        config = replace(
            config, template=prompt.template, max_history=prompt.max_history, n_candidates=prompt.n_candidates
        )
        template = TemplateLibrary(prompt.templates, max_history=config.max_history).load_template(config.template)
        if run is not None:
            lm, tokenizer, _ = load_trained(model, dtype=config.dtype, merge=True, device=device)
        else:
            model = None if model is None else str(model)
            tokenizer = load_tokenizer(model, gguf_file)
            lm = load_model(model, gguf_file, dtype=config.dtype, device=device)
        prior = load_sasrec(sasrec, len(catalog)).score if sasrec is not None else None
        retriever = load_sasrec(prompt.candidates, len(catalog)) if prompt.candidates else None
        readout = run_readout(model if run is not None else None, lm)
        if readout_weight > 0 and readout is None:
            from m6gen.model import ModelError

            named = model if model is not None else "the default model"
            if run is None:
                raise ModelError(
                    f"readout_weight: {named} is not a trained run, so it has no collaborative readout "
                    "(m6gen train --cf-source ..., then m6gen fit-readout --model <run>)"
                )
            raise ModelError(
                f"readout_weight: {named} has no collaborative readout (m6gen fit-readout --model {named})"
            )
        return cls(
            lm,
            tokenizer,
            catalog,
            template,
            config,
            features=features,
            prior=prior,
            prior_weight=sasrec_weight,
            retriever=retriever,
            readout=readout,
            readout_weight=readout_weight,
        )

    def with_template(self, template) -> Recommender:
        """The same recommender (model, prior, retriever, features, settings) with another template."""
        return Recommender(
            self.model,
            self.tokenizer,
            self.catalog,
            template,
            replace(self.config, template=template.name),
            features=self.features,
            prior=self.prior,
            prior_weight=self.prior_weight,
            retriever=self.retriever,
            readout=self.readout,
            readout_weight=self.readout_weight,
        )

    def candidates(self, histories: list[list[int]]) -> list[np.ndarray] | None:
        """The retriever's candidates per history, in catalog order (None without a retriever)."""
        from m6gen.baselines.retrieval import retrieve

        if self.retriever is None:
            return None
        return retrieve(self.retriever, histories, self.config.n_candidates, exclude_seen=self.config.exclude_seen)

    def prompts(
        self,
        histories: list[list[int]],
        profiles: list[dict] | None = None,
        candidates: list[np.ndarray] | None = None,
        template=None,
    ) -> list[str]:
        """Prompt texts; ``candidates`` default to :meth:`candidates`; ``template``: another one than
        the recommender's (e.g. the same one showing more items)."""
        self._check_histories(histories, profiles)
        return self._render_prompts(histories, profiles, candidates, template)

    def _render_prompts(self, histories, profiles=None, candidates=None, template=None) -> list[str]:
        """:meth:`prompts` for histories already checked (:meth:`generate` checks them all once)."""
        profiles = profiles or [{} for _ in histories]
        candidates = candidates if candidates is not None else self.candidates(histories)
        template = template or self.template
        return [
            template.render_prompt(
                [self.catalog[i] for i in hist],
                user=prof,
                tokenizer=self.tokenizer,
                candidates=[self.catalog[int(i)] for i in c],
                cf=self.collaborative.placeholder if self.collaborative is not None else None,
                state=self.collaborative.state_placeholder if self.collaborative is not None else None,
            )
            for hist, prof, c in zip(histories, profiles, candidates or [() for _ in histories])
        ]

    def generate(
        self,
        histories: list[list[int]],
        profiles: list[dict] | None = None,
        allowed: list[np.ndarray] | None = None,
        progress: bool = False,
        prior="own",
        prior_weight: float | None = None,
        desc: str = "generating",
        readout_weight: float | None = None,
        on_states=None,
    ) -> list[list[Hypothesis]]:
        """Up to ``num_beams`` catalog items per history, ranked by ``config.rank_by``: the beams
        :meth:`recommend` reranks.

        ``histories``: catalog indices (``catalog.index_of(item_id)``), oldest first.
        ``prior``: a function from a batch of histories to (users, items) log-scores (e.g.
        ``SASRec.score``), blended into the search with ``prior_weight`` (see
        :func:`m6gen.decoding.search.constrained_beam_search`); the beams then come in the search's
        order, ``rank_by`` score + ``prior_weight`` * log-prior. "own" (default): the recommender's
        own (``from_pretrained(sasrec=..., readout_weight=...)``), None: none.
        ``readout_weight``: the weight of the run's collaborative readout in the search (None: the
        recommender's own with ``prior="own"``, else 0). With a prior too, the search's log-prior is
        ``prior_weight * prior + readout_weight * readout`` at weight 1. With a retriever every one of
        its candidates is scored (the search keeps ``n_candidates`` beams, limited to them).
        ``on_states``: called per batch with the batch's indices into ``histories`` and their prompt
        states, read from the search's own prefill: what :meth:`prompt_states` computes, at no second
        forward. Not with a retriever, whose prompts also list its candidates.
        """
        import torch
        from tqdm.auto import tqdm

        from m6gen.model import encode_prompts

        if isinstance(prior, str):
            if prior != "own":
                raise ValueError(f"prior={prior!r}: expected 'own', None or a function of histories")
            prior, prior_weight = self.prior, self.prior_weight if prior_weight is None else prior_weight
            readout_weight = self.readout_weight if readout_weight is None else readout_weight
        prior_weight = 1.0 if prior_weight is None else prior_weight
        readout_weight = readout_weight or 0.0
        if readout_weight and self.readout is None:
            raise ValueError("readout_weight: this model has no collaborative readout (m6gen fit-readout)")
        self._check_histories(histories, profiles)
        self._check_allowed(allowed, histories)
        if not histories:
            return []
        cfg = self.config
        search_by = "catalog" if cfg.rank_by == "catalog" else "logprob"
        cands = self.candidates(histories)
        if on_states is not None and cands is not None:
            raise ValueError("on_states: a retriever's prompts list its candidates; use prompt_states()")
        if cands is not None:  # only the retriever's items, all of them
            limit = cands if allowed is None else [np.intersect1d(c, g) for c, g in zip(cands, allowed)]
        else:
            limit = allowed
        prompt_ids = encode_prompts(self.tokenizer, self._render_prompts(histories, profiles, cands))
        self._check_context(prompt_ids)
        # Users of similar prompt length decode together: less left padding to prefill (about 10% of
        # the prompt tokens in arrival order). A user's beams do not depend on its batch.
        order = np.argsort([len(p) for p in prompt_ids], kind="stable")
        out: list[list[Hypothesis]] = [[] for _ in histories]
        with tqdm(total=len(histories), desc=desc, unit="user", disable=not progress, leave=False) as bar:
            for s in range(0, len(histories), cfg.batch_size):
                batch = order[s : s + cfg.batch_size]
                hist = [histories[i] for i in batch]
                log_prior, weight = self._search_prior(prior, prior_weight, readout_weight, hist)
                states = [] if on_states is not None else None
                with torch.no_grad():
                    beams = constrained_beam_search(
                        self.model,
                        self.trie,
                        [prompt_ids[i] for i in batch],
                        cfg.n_candidates if cands is not None else cfg.beams,
                        banned=[np.asarray(h, dtype=np.int64) for h in hist] if cfg.exclude_seen else None,
                        allowed=[limit[i] for i in batch] if limit is not None else None,
                        search_by=search_by,
                        pad_token_id=self.tokenizer.pad_token_id,
                        prior=log_prior,
                        prior_weight=weight,
                        states_out=states,
                    )
                if on_states is not None:
                    on_states(batch.tolist(), states[0])
                for i, b in zip(batch, beams):
                    searched = log_prior is not None and cfg.rank_by != "normalized"
                    out[i] = b if searched else rank_hypotheses(b, cfg.rank_by)
                bar.update(len(batch))
        return out

    def readout_log_probs(
        self, histories: list[list[int]], profiles: list[dict] | None = None, progress=None, states=None
    ) -> np.ndarray:
        """(users, items) float64: the run's collaborative readout on each user's prompt, read at the
        state where the search starts: the readout's own ranking of the whole catalog, with no search
        and no title. ``progress``: called with each batch's size; ``states``: those prompt states
        (:meth:`prompt_states`), already computed."""
        if self.readout is None:
            raise ValueError("readout_log_probs: this model has no collaborative readout (m6gen fit-readout)")
        if states is None:
            states = self.prompt_states(histories, profiles, progress)
        return np.asarray(self.readout.log_probs(states), dtype=np.float64)

    def prompt_states(self, histories: list[list[int]], profiles: list[dict] | None = None, progress=None):
        """(users, width) float32: the model's last hidden state at the end of each user's prompt, where
        the search writes the first title token (left-padded batches, as the search prefills)."""
        from m6gen.hybrid.readout import prompt_states
        from m6gen.model import encode_prompts

        self._check_histories(histories, profiles)
        prompt_ids = encode_prompts(self.tokenizer, self._render_prompts(histories, profiles))
        self._check_context(prompt_ids)
        return prompt_states(self.model, prompt_ids, self.tokenizer.pad_token_id, self.config.batch_size, progress)

    def _search_prior(self, prior, prior_weight, readout_weight, histories):
        """(prior or None, its weight in the search) for one batch: a prior function's log-scores,
        the readout (a function of the prompt states, which the search reads from its own prefill),
        or both: ``prior + readout_weight / prior_weight * readout`` at ``prior_weight``, so that the
        search adds ``prior_weight * prior + readout_weight * readout`` (up to a constant per user: the
        search renormalizes) and a beam's ``prior`` times :meth:`search_weight` is what it was searched with."""
        log_prior = prior(histories) if prior is not None else None
        if not readout_weight:
            return log_prior, prior_weight
        if log_prior is None or prior_weight == 0:  # the prior would add nothing
            return self.readout.log_probs, readout_weight
        log_prior, ratio = np.asarray(log_prior, dtype=np.float64), readout_weight / prior_weight
        return lambda states: log_prior + ratio * self.readout.log_probs(states), prior_weight

    def search_weight(self) -> float:
        """The weight :meth:`recommend`'s beams carry their ``prior`` with (0 without a prior of its own)."""
        if self.prior is not None and self.prior_weight > 0:
            return self.prior_weight
        return self.readout_weight

    @property
    def features(self) -> ItemFeatures | None:
        """Item features for the reranker's diversity and novelty; one row per catalog item."""
        return self._features

    @features.setter
    def features(self, features: ItemFeatures | None) -> None:
        if features is not None and len(features.popularity) != len(self.catalog):  # else a late, vague error
            raise ValueError(
                f"features: they cover {len(features.popularity)} items, the catalog has {len(self.catalog)}"
            )
        self._features = features

    def _check_histories(self, histories, profiles=None) -> None:
        """Histories hold catalog indices; a raw data id or an index past the catalog is named, not a deep IndexError
        (and a negative one is not read from the catalog's end). ``profiles``, if given, one per history."""
        n = len(self.catalog)
        if isinstance(histories, (str, bytes)) or not isinstance(histories, (Sequence, np.ndarray)):
            got = f"{histories!r:.60}"
            raise TypeError(f"histories: expected a list of histories (lists of catalog indices), got {got}")
        if isinstance(histories, np.ndarray) and histories.ndim != 1:
            raise TypeError(
                f"histories: a {histories.ndim}-D array; give a list of histories (e.g. list(array) for one per row)"
            )
        for u, hist in enumerate(histories):
            if isinstance(hist, (str, bytes)) or not isinstance(hist, (Sequence, np.ndarray)):
                raise TypeError(
                    f"history {u}: expected a list of catalog indices, got {hist!r:.60}"
                    + ("; for one user pass [history]" if isinstance(hist, (int, np.integer)) else "")
                )
            for i in hist:
                if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
                    raise ValueError(
                        f"history {u}: {i!r} is not a catalog index (0..{n - 1}); histories hold catalog "
                        f"indices, e.g. catalog.index_of(item_id) for an id of the data files"
                    )
        if profiles is not None and len(profiles) != len(histories):
            raise ValueError(f"profiles: {len(profiles)} for {len(histories)} histories; give one per history, or none")
        for u, profile in enumerate(profiles or ()):
            if profile is not None and not isinstance(profile, Mapping):
                raise TypeError(f"profiles[{u}]: expected a dict of profile fields, got {type(profile).__name__}")

    def _check_allowed(self, allowed, histories) -> None:
        """``allowed``: one array of catalog indices per history; an index past the catalog (or negative,
        which numpy would read from the end) is named here, not deep in the trie."""
        if allowed is None:
            return
        if len(allowed) != len(histories):
            raise ValueError(f"allowed: {len(allowed)} for {len(histories)} histories; give one per history, or none")
        n = len(self.catalog)
        for u, items in enumerate(allowed):
            items = np.asarray(items).reshape(-1)
            bad = items if items.dtype.kind not in "iu" else items[(items < 0) | (items >= n)]
            if bad.size:
                raise ValueError(f"allowed {u}: {bad[0].item()!r} is not a catalog index (0..{n - 1})")

    def generate_open(
        self, histories: list[list[int]], profiles: list[dict] | None = None, beams: int | None = None
    ) -> list[list[OpenOutput]]:
        """M6-Rec's open-ended setting: ``beams`` (default: ``config.beams``) unconstrained titles per
        history, best first, each flagged as in the catalog or not
        (:func:`m6gen.decoding.open_ended.open_generate`). A prompt past the model's context is a
        :class:`m6gen.prompts.TemplateError`, as in :meth:`generate`."""
        from m6gen.decoding.open_ended import line_break_tokens, open_generate
        from m6gen.model import encode_prompts

        self._check_histories(histories, profiles)
        if not histories:
            return []
        prompt_ids = encode_prompts(self.tokenizer, self._render_prompts(histories, profiles, None))
        self._check_context(prompt_ids)
        if self._line_breaks is None:  # one pass over the vocabulary, once
            self._line_breaks = line_break_tokens(self.tokenizer)
        return open_generate(
            self.model,
            self.tokenizer,
            prompt_ids,
            self.targets,
            num_beams=beams or self.config.beams,
            max_new_tokens=self.trie.max_depth + 4,
            line_breaks=self._line_breaks,
        )

    def _check_context(self, prompt_ids: list[list[int]]) -> None:
        """A prompt plus the longest title must fit the model's context: past it the output is noise."""
        from m6gen.prompts import TemplateError

        context = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        longest = max(len(p) for p in prompt_ids) + self.trie.max_depth
        if isinstance(context, int) and longest > context:
            raise TemplateError(
                f"template {self.template.path}: a prompt of {longest - self.trie.max_depth} tokens "
                f"plus a title of up to {self.trie.max_depth} exceeds the model's context of "
                f"{context} tokens; show fewer items (--max-history, now {self.config.max_history})"
            )

    def recommend(
        self,
        histories: list[list[int]],
        rerank_config: RerankConfig | None = None,
        profiles: list[dict] | None = None,
        progress: bool = False,
        allowed: list[np.ndarray] | None = None,
    ) -> list[RerankResult]:
        """Final top-k per history: beams reranked for accuracy, diversity and novelty.

        ``rerank_config`` default: k = 10, or ``config.beams`` if fewer; a k past the beams is refused.

        ``allowed``: per history, the only catalog indices it may be recommended (e.g. a shelf of new
        items: :func:`m6gen.data.cold_items`); None: the whole catalog."""
        rcfg = rerank_config or RerankConfig(k=min(RerankConfig().k, self.config.beams))
        if not isinstance(rcfg, RerankConfig):
            raise TypeError(f"rerank_config: expected a RerankConfig, got {type(rcfg).__name__}")
        if rcfg.k > self.config.beams:  # the reranker picks among the beams: more cannot come back
            beams = self.config.beams
            raise ValueError(f"k: {rcfg.k} recommendations need at least as many beams (config.beams={beams})")
        results = []
        # with the recommender's own prior
        generated = self.generate(histories, profiles, allowed=allowed, progress=progress)
        w = self.search_weight()
        for hist, beams in zip(histories, generated):
            ids = np.array([h.item for h in beams], dtype=np.int64)
            # The reranker calibrates with a softmax over log-scores; feed it the ranking score.
            scores = np.array([h.score(self.config.rank_by) + w * h.prior for h in beams], dtype=np.float64)
            result = rerank(ids, scores, seen=set(hist), features=self.features, config=rcfg)
            # Report the language model's own log-probability, not the ranking score it was given.
            lm = {h.item: h.logprob for h in sorted(beams, key=lambda h: h.logprob)}  # best beam per item wins
            results.append(replace(result, items=[replace(r, logprob=lm[r.item_id]) for r in result.items]))
        return results
