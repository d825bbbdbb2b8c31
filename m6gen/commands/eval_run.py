"""One ``m6gen eval``: what it compares, built once by :func:`prepare` (the data, the recommender and
its searches, the peers trained or loaded in the same run), and each split scored by
:meth:`Evaluation.evaluate` into one :class:`SplitScores`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m6gen.baselines.run import METHODS
from m6gen.commands.common import UsageError
from m6gen.commands.eval_decodings import PLAIN, Decodings, plan_searches, sasrec_folder
from m6gen.commands.eval_report import report, report_by_popularity
from m6gen.commands.eval_rows import PRIOR_ROW, READOUT_ROW, SCORE_COLUMNS, m6gen_rankings, searched_rankings
from m6gen.config import ConfigError, SASRecArgs

# trained and tabled by m6gen.baselines.run; the content peers need no training
TRAINED_PEERS = METHODS
DEFAULT_BLEND = "0.5,1,2"


def parse_weights(text: str) -> list[tuple[float, float]]:
    """Reranker settings 'diversity,novelty;...' as (diversity, novelty) pairs."""
    settings = []
    for part in filter(None, (s.strip() for s in text.split(";"))):
        try:
            div, nov = (float(x) for x in part.split(","))
        except ValueError:
            raise ConfigError(f"weights: expected 'diversity,novelty' pairs separated by ';', got {part!r}") from None
        settings.append((div, nov))
    return settings


@dataclass
class SplitScores:
    """One split's rows: each row's metrics, and per user its NDCG@10 (for the paired comparison with
    SASRec) and HR@10 (for the new-item table)."""

    rows: dict[str, dict[str, float]]
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    hits: dict[str, np.ndarray] = field(default_factory=dict)

    def add_as(self, label: str, row: str) -> None:
        """Row ``row`` again, under ``label`` (the row chosen on validation)."""
        self.rows[label], self.per_user[label], self.hits[label] = self.rows[row], self.per_user[row], self.hits[row]


@dataclass
class Evaluation:
    """What one ``m6gen eval`` compares, built once for its splits: the data, the recommender and its
    searches, and the peers in the same run."""

    args: object
    ds: object
    split: object
    rec: object  # the Recommender
    out: Path
    procs: object  # commands.common.Processes
    decodings: Decodings
    peers: list[str]  # the --baselines that are ranked
    sasrec: object | None  # the SASRec of the table, also the collaborative signal of the blend rows
    ease: object | None  # the EASE of the table (with EASE in --baselines)
    base: dict  # run_baselines' tables per split (the trained peers' rows over the first N users)
    content: object  # eval_new_items.ContentPeers
    cold: np.ndarray | None  # --cold-only: the only items ranked
    retriever: str | None  # the candidate retriever of the prompts (--candidates, or the run's own)
    ks: tuple[int, ...] = (5, 10, 20)

    @property
    def trained_peers(self) -> list[str]:
        return [m for m in self.peers if m in TRAINED_PEERS]

    def users(self, name: str) -> list[str]:
        return eval_users(self.args, self.split, name)

    def histories_and_targets(self, name: str, users: list[str]) -> tuple[list[list[int]], np.ndarray]:
        split = self.split
        if name == "test":
            return [split.test_history(u) for u in users], np.array([split.test[u] for u in users])
        return [split.valid_history(u) for u in users], np.array([split.valid[u] for u in users])

    def targets(self, name: str) -> np.ndarray:
        """(users,) each evaluated user's target item on split ``name``."""
        targets = self.split.test if name == "test" else self.split.valid
        return np.array([targets[u] for u in self.users(name)], dtype=np.int64)

    def new_targets(self, name: str) -> np.ndarray:
        """(users,) bool: whose target on split ``name`` is a new item (--new-items)."""
        return np.array([t in self.split.new_items for t in self.targets(name).tolist()], dtype=bool)

    def decode(self, name: str) -> dict[str, list[np.ndarray]]:
        """Every search's beams on split ``name`` (this process's share under torchrun)."""
        users = self.users(name)
        return self.decodings.decode(name, users, self.histories_and_targets(name, users)[0])

    def evaluate(self, name: str) -> SplitScores:
        """Every row on split ``name``: the peers, m6gen's rows from its beams, and the readout alone."""
        from m6gen.commands.common import item_features
        from m6gen.data import user_frequency
        from m6gen.ranking.metrics import evaluate_rankings, per_user_scores

        args, split, n_items = self.args, self.split, len(self.ds.catalog)
        users = self.users(name)
        histories, targets = self.histories_and_targets(name, users)
        decoded = self.decodings.decode(name, users, histories)
        seen = [set(h) for h in histories]
        # what the peers may not rank: the history, and with --cold-only every item with a training interaction
        warm = set(range(n_items)).difference(self.cold.tolist()) if self.cold is not None else set()
        exclude = seen if self.cold is None else [s | warm for s in seen]
        # run_baselines' rows ranked the whole catalog for the first N users: kept only when that is what is asked
        kept = {} if args.new_item_users or self.cold is not None else dict(self.base.get(name, {}))
        scores = SplitScores(kept)
        features, user_freq = item_features(self.ds, split), user_frequency(split, n_items)

        def score(row: str, lists, table: bool = True) -> None:
            if table:
                scores.rows[row] = evaluate_rankings(
                    lists,
                    targets,
                    ks=self.ks,
                    features=features,
                    user_freq=user_freq,
                    n_users=len(split.train),
                    n_items=n_items,
                    seen=seen,
                )
            per_user = per_user_scores(lists, targets, 10)
            scores.per_user[row], scores.hits[row] = per_user["NDCG"], per_user["HR"]

        k = max(self.ks)
        for peer, lists in self.peer_rankings(histories, exclude, k).items():
            score(peer, lists, table=peer not in scores.rows)  # tabled here unless run_baselines did, on these users
        ranked = {}
        if PLAIN in decoded:  # not decoded with --plain-beams false
            ranked = m6gen_rankings(
                decoded.pop(PLAIN),
                histories,
                seen,
                sasrec=self.sasrec,
                blend=self.blend,
                weights=parse_weights(args.weights),
                features=features,
                score_col=self.score_col,
                k=k,
            )
        searched = self.decodings.searched_rows
        for row, beams in decoded.items():  # searched with a prior: ranked by score + w * prior, as searched
            ranked.update(searched_rankings(row, beams, searched[row], self.score_col))
        for row, lists in ranked.items():
            score(row, lists)
        if self.rec.readout is not None:
            for row, lists in self.readout_rankings(name, histories, exclude, k).items():
                score(row, lists)
        return scores

    def peer_rankings(self, histories, exclude, k: int) -> dict[str, list[np.ndarray]]:
        """The peers' top ``k`` per user (the same lists run_baselines scored, kept per user)."""
        lists = {}
        if self.sasrec is not None:
            lists["SASRec"] = self.sasrec.recommend(histories, k, exclude=exclude)
        if "Pop" in self.trained_peers:
            from m6gen.baselines.run import pop_rank
            from m6gen.data import item_popularity

            lists["Pop"] = pop_rank(item_popularity(self.split, len(self.ds.catalog)), exclude, k)
        if self.ease is not None:
            lists["EASE"] = self.ease.recommend(histories, k, exclude=exclude)
        return {**lists, **self.content.rankings(histories, exclude, k)}

    def readout_rankings(self, name: str, histories, exclude, k: int) -> dict[str, list[np.ndarray]]:
        """The run's readout ranking the whole catalog from each user's prompt state on split ``name``
        (read once with the beams, and cached as they are; no search), and where the searches add
        SASRec to it, the two together: each search's prior without its titles."""
        import torch

        from m6gen.baselines.content import rank

        log_probs = self.rec.readout_log_probs(histories, states=self.decodings.states[name])
        rows = {READOUT_ROW: rank(log_probs, exclude, k)}
        if self.args.decode_prior == "SASRec+Readout" and self.decodings.searched_rows:  # prepare: SASRec is there
            sasrec = torch.log_softmax(torch.from_numpy(self.sasrec.score(histories)).double(), dim=-1).numpy()
            rows[PRIOR_ROW] = rank(log_probs + sasrec, exclude, k)  # each at the search's weight: equal
        return rows

    @property
    def blend(self) -> list[float]:
        return [float(w) for w in self.args.blend.split(",") if w.strip()] if self.sasrec is not None else []

    @property
    def score_col(self) -> int:
        return {name: col for col, name in SCORE_COLUMNS}[self.rec.config.rank_by]

    def label(self, name: str) -> str:
        """Table and file names: "test", or "test_cold" for the cold-only tables (they replace no usual one)."""
        return name + ("_cold" if self.cold is not None else "")

    def report(self, name: str, scores: SplitScores) -> None:
        from m6gen.commands.eval_new_items import report_new_items

        n_items = len(self.ds.catalog)
        ranked_what = (
            f"cold items only ({len(self.cold)})" if self.cold is not None else f"whole catalog ({n_items} items)"
        )
        report(self.out, self.label(name), len(self.users(name)), ranked_what, scores.rows, scores.per_user)
        if self.cold is None:  # a shelf of cold items has no popular targets to set apart
            from m6gen.data import item_popularity
            from m6gen.ranking.metrics import popularity_groups

            groups = popularity_groups(item_popularity(self.split, n_items)[self.targets(name)])
            report_by_popularity(self.out, self.label(name), groups, scores.per_user, scores.hits)
        if self.split.new_items:
            report_new_items(self.out, self.label(name), self.new_targets(name), scores.per_user, scores.hits)


def eval_users(args, split, name: str) -> list[str]:
    """The users evaluated on split ``name``: with --new-item-users those whose ``name`` target is new,
    so --choose-on-valid chooses on new-item events of the validation split."""
    from m6gen.data import new_item_users

    chosen = new_item_users(split, name) if args.new_item_users else split.users
    chosen = chosen[: args.max_users] if args.max_users else chosen
    if not chosen:
        raise UsageError(f"no user's {name} target is a new item: nothing to evaluate with --new-item-users")
    return chosen


def prepare(args) -> Evaluation:
    """Load the data and the recommender, train or load the peers and plan the searches; a bad option
    fails before anything is decoded."""
    from m6gen.commands.common import Processes, load_data, load_recommender, required_cold_items
    from m6gen.commands.eval_new_items import ContentPeers
    from m6gen.data import default_data_dir
    from m6gen.prompts import user_vars
    from m6gen.runs import trained_run_config

    parse_weights(args.weights)
    procs = Processes()  # under torchrun, each process decodes a share of the users; the main one scores
    if args.choose_on_valid and args.split != "test":
        raise UsageError(
            "--choose-on-valid chooses on the validation split for the test split: use it with --split test "
            "(or --choose-on-valid false)"
        )
    ds, split = load_data(args)
    if args.new_item_users and not split.new_items:
        raise UsageError("--new-item-users needs the new-item protocol: give --new-items FRAC (e.g. 0.1)")
    first = eval_users(args, split, args.split)[0]
    out = Path(
        args.out
        or (args.model if args.model and Path(args.model, "m6gen_config.json").is_file() else "runs/eval-default")
    )
    cold = required_cold_items(split, len(ds.catalog)) if args.cold_only else None  # --cold-only: the only items
    peers = [m.strip() for m in args.baselines.split(",") if m.strip()]
    searched = any(w.strip() for w in args.decode_blend.split(","))
    if searched and args.decode_prior.startswith("SASRec") and "SASRec" not in peers:  # before anything is written
        raise UsageError("--decode-blend with the SASRec prior needs the SASRec baseline (keep SASRec in --baselines)")
    if args.sasrec_from and "SASRec" not in peers:  # it would be silently unused
        raise UsageError(f"--sasrec-from {args.sasrec_from}: keep SASRec in --baselines to use it")
    # first: a wrong template, device or model fails before SASRec trains, and before the folder is made
    rec = load_recommender(args, ds.catalog, (split.test_history(first), user_vars(first, ds.profiles)))
    if searched and args.decode_prior.endswith("Readout") and rec.readout is None:
        raise UsageError(
            f"--decode-prior {args.decode_prior}: {args.model or 'the default model (no --model run folder)'} "
            "has no readout "
            "(m6gen fit-readout --model <run>, or train with --readout-loss)"
        )
    out.mkdir(parents=True, exist_ok=True)
    short = [k for k in Evaluation.ks if k > args.beams]
    if short and procs.is_main:  # the tables still say @20: their m6gen rows count fewer items
        print(
            f"note: --beams {args.beams}: m6gen's lists hold {args.beams} items, so its rows' metrics at "
            f"{', '.join(map(str, short))} count those {args.beams} (a target past them is a miss)",
            file=sys.stderr,
        )
    if args.cold_only and "Pop" in peers:
        # no cold item has a count, so Pop's order would be the catalog's (ties go to the lower index):
        # in MovieLens an artifact of how ids were given, not a method
        print("note: --cold-only leaves Pop out: cold items have no interactions to count", file=sys.stderr)
        peers.remove("Pop")
    trained = [m for m in peers if m in TRAINED_PEERS]
    sasrec, base = None, {}
    if trained:
        if procs.is_main:
            base, sasrec = trained_peers(args, out, ds, split, trained)
        procs.wait_for_everyone()  # the other processes read the SASRec the main one saved
        if sasrec is None and "SASRec" in trained:
            from m6gen.baselines.sasrec import SASRec

            sasrec = SASRec.load(sasrec_folder(args, out))
    ease = None
    if "EASE" in trained:
        from m6gen.baselines.ease import load_ease

        ease = load_ease(out / "baselines" / "ease", len(ds.catalog))  # fitted and saved by the main process
    if args.blend != DEFAULT_BLEND and args.blend.strip() and sasrec is None:
        print("note: --blend needs the SASRec baseline (keep SASRec in --baselines); no blend rows", file=sys.stderr)
    content = ContentPeers(ds, rec, [m for m in peers if m not in TRAINED_PEERS])
    prior = None  # the prior function inside the search of the --decode-blend rows (besides a readout)
    if searched and args.decode_prior != "Readout":
        prior = sasrec.score if args.decode_prior.startswith("SASRec") else content.prior(args.decode_prior)
    run_config = trained_run_config(args.model)
    retriever = args.candidates or (run_config.candidates if run_config is not None else None)  # the run's own
    data_folder = args.data or default_data_dir(must_exist=False)
    fingerprint, searches = plan_searches(args, rec, out, prior, retriever, data_folder)
    dtype = str(next(rec.model.parameters()).dtype).removeprefix("torch.")  # what --dtype auto became
    return Evaluation(
        args=args,
        ds=ds,
        split=split,
        rec=rec,
        out=out,
        procs=procs,
        decodings=Decodings(rec, out, procs, ds.profiles, args.progress, dtype, fingerprint, searches, cold),
        peers=peers,
        sasrec=sasrec,
        ease=ease,
        base=base,
        content=content,
        cold=cold,
        retriever=retriever,
    )


def trained_peers(args, out: Path, ds, split, methods: list[str]):
    """(tables of Pop and SASRec per split, the SASRec): ``out/baselines``' SASRec when it was trained
    on these training interactions with these settings, else one trained now and saved there."""
    from m6gen.baselines.run import run_baselines, split_fingerprint
    from m6gen.baselines.sasrec import SASRec
    from m6gen.runs import read_json

    cfg = args.groups[SASRecArgs].to_config()
    saved = out / "baselines" / "sasrec"
    sasrec = None
    if "SASRec" in methods and args.sasrec_from:
        sasrec = given_sasrec(args.sasrec_from, split, len(ds.catalog))
        print(f"SASRec: {args.sasrec_from} (--sasrec-from; trained on these interactions)")
    elif "SASRec" in methods and (saved / "sasrec.json").is_file() and saved_config(saved) == cfg:
        info = out / "baselines" / "baselines.json"
        recorded = read_json(info) if info.is_file() else {}
        same = (
            recorded.get("train_split") == split_fingerprint(split)
            if "train_split" in recorded
            else recorded.get("dataset_path") == (str(args.data) if args.data else None)
        )  # an older record
        if same:
            sasrec = SASRec.load(saved)  # trained by an earlier eval in this folder on these train items
            print(f"SASRec: {saved} (trained on these interactions with these settings; reused)")
        else:
            print(f"note: {saved} was trained on other data; training SASRec again", file=sys.stderr)
    if "SASRec" in methods and sasrec is None:
        print(f"SASRec: training it on these interactions, then saving it in {saved} (minutes on a CPU)")
    base = run_baselines(
        args.data,
        config=cfg,
        methods=methods,
        max_users=args.max_users,
        model=sasrec,
        out_dir=out / "baselines",
        progress=args.progress,
        loaded=(ds, split),
    )
    if "SASRec" in methods and sasrec is None:
        sasrec = SASRec.load(saved)  # the one run_baselines just trained and saved
    return base, sasrec


def write_settings(ev: Evaluation, chosen: str | None, chosen_valid: float | None, tied: list[str] = ()) -> None:
    """``eval_<split>_config.json``: the options as given, and what they became (dtype auto, a run's own
    template and retriever); with --choose-on-valid the chosen row, and the rows tied with it."""
    args, rec = ev.args, ev.rec
    settings = {
        **{k: v for k, v in vars(args).items() if k != "groups"},
        "resolved": {
            "dtype": ev.decodings.dtype,
            "template": rec.config.template,
            "template_path": str(rec.template.path),
            "max_history": rec.config.max_history,
            "retriever": ev.retriever,
            "n_users": len(ev.users(args.split)),
            "beam_cache_fingerprint": ev.decodings.fingerprint,
            "cold_items": len(ev.cold) if ev.cold is not None else None,
        },
    }
    if chosen is not None:
        (ev.out / f"eval_{ev.label('valid')}_config.json").write_text(
            json.dumps({**settings, "split": "valid"}, indent=2, default=str)
        )
        settings["chosen_on_valid"] = {"row": chosen, "valid_NDCG@10": chosen_valid, "tied_with": list(tied)}
    (ev.out / f"eval_{ev.label(args.split)}_config.json").write_text(json.dumps(settings, indent=2, default=str))


def given_sasrec(folder: str, split, n_items: int):
    """The ``--sasrec-from`` SASRec; a one-line error unless ``m6gen baselines`` recorded that it was
    trained on ``split``'s training interactions (one trained on others may have seen test items)."""
    from m6gen.baselines.sasrec import load_sasrec
    from m6gen.commands.common import check_same_interactions
    from m6gen.model import ModelError

    try:
        sasrec = load_sasrec(folder, n_items)
    except ModelError as err:
        raise UsageError(f"--sasrec-from: {err}") from None
    check_same_interactions(folder, split, f"--sasrec-from {folder}", required=True)
    return sasrec


def saved_config(folder: Path):
    """The SASRecConfig a saved SASRec was trained with (None when unreadable)."""
    from m6gen.baselines.config import SASRecConfig

    try:
        return SASRecConfig(**json.loads((folder / "sasrec.json").read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
