"""The searches ``m6gen eval`` compares: the plain beam search, and one search per ``--decode-blend``
weight with the ``--decode-prior`` inside it. Each is cached per split as a JSONL file named by what
made its beams (:mod:`m6gen.commands.beam_cache`), so a killed or repeated eval decodes nothing twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m6gen.commands.beam_cache import cache_fingerprint, generate_cached, prior_fingerprint, prompt_states_cached

PLAIN = ""  # the plain search's key among the decodings


@dataclass(frozen=True)
class Search:
    """One decoding: the item prior inside the search, and the weights it is searched with."""

    row: str  # the table row its beams make ("m6gen + SASRec in decoding (w 3)"); PLAIN for the plain search
    file_tag: str  # names its cache file apart from the other searches'
    prior: object = None  # a function of histories -> (users, items) log-scores, or None
    weight: float = 1.0  # the prior's weight (the search's log-prior is weight * prior)
    readout_weight: float = 0.0  # the run's readout's weight in the same search


@dataclass
class Decodings:
    """Every search of one eval, with what names their caches; :meth:`decode` runs them on a split.

    ``cold``: the only items any beam may name (``--cold-only``), or None for the whole catalog.
    """

    rec: object  # the Recommender
    out: Path
    procs: object  # commands.common.Processes: under torchrun each process decodes a share of the users
    profiles: dict | None
    progress: bool
    dtype: str  # what --dtype auto became: beams of another dtype are other beams
    fingerprint: str  # the plain beams' (plan_searches): names the prompt states' cache; the config records it
    searches: list[Search]  # the plain search first, unless --plain-beams false (plan_searches)
    cold: np.ndarray | None = None
    states: dict[str, np.ndarray] = field(default_factory=dict)  # per split, once decoded: the prompt states

    @property
    def searched_rows(self) -> dict[str, float]:
        """The rows whose beams were searched with a prior, and the prior's weight."""
        return {s.row: s.weight for s in self.searches if s.row != PLAIN}

    def decode(self, name: str, users: list[str], histories: list[list[int]]) -> dict[str, list[np.ndarray]]:
        """Beams per user of each search on split ``name`` (row -> per user an (n, 5) array of [item,
        logprob, normalized, catalog, prior]), generated once and shared among processes."""
        decoded = {}
        states = self.out / f"states_{self._tag(name)}-{self.fingerprint}.jsonl"
        # each search appends the prompt states it reads at its prefill, for users not there yet; not with
        # a retriever, whose prompts also list its candidates (the states pass reads them without)
        from_search = states if self.rec.readout is not None and self.rec.retriever is None else None
        for search in self.searches:
            cached = generate_cached(
                self.rec,
                users,
                histories,
                self.out / f"beams_{self._tag(name)}-{search.file_tag}.jsonl",
                self.progress,
                self.profiles,
                prior=search.prior,
                prior_weight=search.weight,
                procs=self.procs,
                allowed=self.cold,
                readout_weight=search.readout_weight,
                states_path=from_search,
            )
            # Older caches hold 4 columns (no prior); a user with no beam gives an empty (0, 5) array.
            decoded[search.row] = [
                np.array([b[:4] + [b[4] if len(b) > 4 else 0.0] for b in cached[u]], dtype=np.float64).reshape(-1, 5)
                for u in users
            ]
        if self.rec.readout is not None:  # the readout-alone row's; computed for users the searches left
            args = (self.rec, users, histories, states, self.progress, self.profiles, self.procs)
            self.states[name] = prompt_states_cached(*args)
        return decoded

    def _tag(self, name: str) -> str:
        config = self.rec.config
        tag = f"{name}-{config.template}-h{config.max_history}-b{config.beams}-{self.dtype}"
        if self.rec.retriever is not None:
            tag += f"-c{config.n_candidates}"
        return tag + ("-cold" if self.cold is not None else "")


def plan_searches(args, rec, out: Path, prior, retriever, data_folder) -> tuple[str, list[Search]]:
    """(the plain beams' fingerprint, the searches): the plain one (unless ``--plain-beams false``), and
    one per ``--decode-blend`` weight searched with ``prior`` (a function of histories, or None for the
    run's readout alone).
    Each cache is named by a fingerprint of the model, template, retriever and data options, and a
    searched one also of its prior."""
    data_options = f"{args.format}|{args.title_field}|{args.dedupe}|{args.min_history}|{args.unknown_items}"
    if args.new_items:  # other histories: other beams
        data_options += f"|new{args.new_items:g}"
    fingerprint = cache_fingerprint(args.model, rec.template.path, retriever, data_folder, extra=data_options)
    searches = [Search(PLAIN, fingerprint)] if args.plain_beams else []
    weights = [float(w) for w in args.decode_blend.split(",") if w.strip()]
    if weights:
        with_prior = f"{fingerprint}.{_prior_fingerprint(args, out)}"  # the prior's beams also depend on the prior
        with_readout = args.decode_prior.endswith("Readout")  # the run's own readout joins the search
        searches += [
            Search(
                f"m6gen + {args.decode_prior} in decoding (w {w:g})",
                f"{with_prior}-{args.decode_prior.lower()}{w:g}",
                prior=prior,
                weight=w,
                readout_weight=w if with_readout else 0.0,
            )
            for w in weights
        ]
    return fingerprint, searches


def sasrec_folder(args, out: Path) -> Path:
    """Where this eval's SASRec is saved: ``--sasrec-from``, or the one it trains in ``out/baselines``."""
    return Path(args.sasrec_from) if args.sasrec_from else out / "baselines" / "sasrec"


def _prior_fingerprint(args, out: Path) -> str:
    sasrec = sasrec_folder(args, out)
    if args.decode_prior.endswith("Readout"):
        from m6gen.hybrid.placeholders import READOUT_FILE, READOUT_INFO

        folder = sasrec if args.decode_prior.startswith("SASRec") else None
        # a fitted readout's files; one trained with LoRA is in the adapter, which the fingerprint covers
        readout_files = [Path(args.model, READOUT_FILE), Path(args.model, READOUT_INFO)]
        return prior_fingerprint(sasrec_folder=folder, files=readout_files)
    if args.decode_prior == "SASRec":
        return prior_fingerprint(sasrec_folder=sasrec)
    from m6gen.baselines import content as content_code

    return prior_fingerprint(code=content_code)
