"""``m6gen eval``: full-ranking, leave-one-out evaluation of m6gen against Pop and SASRec.

    m6gen eval --model runs/m6gen --split test                  # all users
    m6gen eval --model runs/m6gen --split valid --max-users 200 # quick, for tuning
    m6gen eval --model runs/m6gen --choose-on-valid             # + the row picked on validation

Every method ranks the whole catalog minus the user's history, for the same users, in one run.
m6gen's list is its beams (so HR@K for K > --beams counts what the beams did not reach as misses).
Generated beams are cached as JSONL in the output folder (appended per batch, resumed after a
kill), so re-running with other reranker weights costs no generation. Writes ``eval_<split>``
.md/.csv/.json tables and ``tradeoff_<split>.png`` next to the model (or in ``--out``); with SASRec in
the run, also ``eval_<split>_vs_sasrec``: each m6gen row's NDCG@10 as a ratio to SASRec's with a
paired-bootstrap 95% interval, since a ratio measured on a few hundred users is noisy.
``--choose-on-valid`` evaluates the validation split first and adds to the test table the m6gen row
that scored best there: choosing a weight by its test score would peek at the test items.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from m6gen.commands.beam_cache import cache_fingerprint, generate_cached, prior_fingerprint
from m6gen.commands.common import UsageError
from m6gen.commands.eval_report import report
from m6gen.config import (
    ConfigError,
    DataArgs,
    DecodeArgs,
    DeviceArgs,
    ModelArgs,
    PromptArgs,
    RuntimeArgs,
    SASRecArgs,
    at_least,
    option,
)

PEERS = ("Pop", "SASRec", "Content", "Newest", "TitleNN")
TRAINED_PEERS = ("Pop", "SASRec")  # trained and tabled by m6gen.baselines.run; the content peers need no training
DEFAULT_WEIGHTS = "0.3,0;0,0.3;0.3,0.3"
DEFAULT_BLEND = "0.5,1,2"
SCORE_COLUMNS = ((1, "logprob"), (2, "normalized"), (3, "catalog"))  # a beam's scores, by column of its array
PRIOR_COLUMN = 4  # the prior the beam was searched with (0 for the plain beams)
# The readout's own whole-catalog ranking (no search, no title): shown beside the search, never chosen
# by --choose-on-valid, since m6gen's list is what its search generates.
READOUT_ROW = "m6gen readout alone (whole catalog, no titles)"


@dataclass
class EvalArgs:
    """What is evaluated, on which split, and where the tables go."""

    _argument_group_name = "evaluation"

    split: Literal["test", "valid"] = option("test", "evaluate on the test or the validation item")
    max_users: int | None = option(None, "only the first N users (default: all)")
    new_item_users: bool = option(
        False,
        "with --new-items: evaluate only the users whose --split target is a new item (the new-item table "
        "for a fraction of the decoding; the all-users table then covers those users only); with "
        "--choose-on-valid, the choice is made on the users whose validation target is new",
    )
    cold_only: bool = option(
        False,
        "rank only the cold items, those with no interaction in training (under --new-items: the new items), in "
        "every row, peers included: how well each method fills a shelf of new items next to the usual list "
        "(meaningful for users whose target is cold: use with --new-item-users)",
    )
    baselines: str = option(
        "Pop,SASRec",
        "peers in the same run (comma list of Pop, SASRec, Content (genres and year), Newest (latest "
        "release year first, then genres), TitleNN (nearest neighbours by the model's title embeddings); '' for none)",
    )
    weights: str = option(DEFAULT_WEIGHTS, "reranker settings 'diversity,novelty;...' evaluated as extra rows")
    blend: str = option(
        DEFAULT_BLEND, "weights w of extra rows ranking the beams by logprob + w * SASRec log-prob ('' for none)"
    )
    decode_blend: str = option(
        "",
        "weights w of extra rows whose beams are searched with w * the --decode-prior inside the search, ranked by "
        "the --rank-by score + w * prior (and rows ranked by the other two scores and by the prior alone; '' for none)",
    )
    decode_prior: Literal["SASRec", "Newest", "Content", "Readout", "SASRec+Readout"] = option(
        "SASRec",
        "the item prior of the --decode-blend rows: SASRec's log-probabilities, a content peer's scores as "
        "logits (Newest: release year + genre match, for new items, which SASRec cannot rank), Readout: "
        "the run's own collaborative readout on the same prompts (m6gen fit-readout; no SASRec needed), or "
        "SASRec+Readout: both, each at the row's weight",
    )
    choose_on_valid: bool = option(
        False,
        "with --split test: evaluate every row on the validation split first and add a test row for the m6gen row "
        "with the best validation NDCG@10 (the honest figure: chosen without seeing test items)",
    )
    out: str | None = option(None, "output folder (default: the model folder, or runs/eval-default)")

    def __post_init__(self):
        at_least(self, 1, "max_users", optional=True)
        unknown = [m for m in self.baselines.split(",") if m.strip() and m.strip() not in PEERS]
        if unknown:
            raise ConfigError(f"baselines: unknown {unknown[0].strip()!r}; choose from {', '.join(PEERS)}")
        for name in ("blend", "decode_blend"):
            for part in filter(None, (x.strip() for x in getattr(self, name).split(","))):
                try:
                    ok = float(part) >= 0
                except ValueError:
                    ok = False
                if not ok:
                    raise ConfigError(f"{name}: expected a comma list of numbers >= 0, got {part!r}")
        parse_weights(self.weights)


GROUPS = [DataArgs, PromptArgs, ModelArgs, DeviceArgs, DecodeArgs, EvalArgs, SASRecArgs, RuntimeArgs]
HELP = "full-ranking evaluation against Pop and SASRec"


def parse_weights(text: str) -> list[tuple[float, float]]:
    settings = []
    for part in filter(None, (s.strip() for s in text.split(";"))):
        try:
            div, nov = (float(x) for x in part.split(","))
        except ValueError:
            raise ConfigError(f"weights: expected 'diversity,novelty' pairs separated by ';', got {part!r}") from None
        settings.append((div, nov))
    return settings


def m6gen_rankings(
    beams, histories, seen, *, sasrec, blend, weights, features, score_col, k: int = 20
) -> dict[str, list[np.ndarray]]:
    """m6gen's rows for one split from its beams (no generation): row name -> one ranked item array per user.

    ``beams``: per user a (n, 5) array [item, logprob, normalized, catalog, prior].
    """
    from m6gen.ranking.rerank import RerankConfig, rerank

    rows: dict[str, list[np.ndarray]] = {}
    for col, name in SCORE_COLUMNS:
        rows[f"m6gen beams (rank by {name})"] = [
            b[np.argsort(-b[:, col], kind="stable"), 0].astype(np.int64) for b in beams
        ]
    if blend and sasrec is not None:
        # A text-free collaborative signal on m6gen's candidates ("Decoding Matters"-style): the
        # SASRec of the table scores each beam item; the beams are re-ranked by the sum.
        collab = sasrec.score_items(histories, [b[:, 0].astype(np.int64) for b in beams])
        for w in blend:
            rows[f"m6gen beams + SASRec blend (w {w:g})"] = [
                b[np.argsort(-(b[:, 1] + w * c), kind="stable"), 0].astype(np.int64) for b, c in zip(beams, collab)
            ]
    for div, nov in weights:
        rcfg = RerankConfig(k=k, diversity=div, novelty=nov)
        rows[f"m6gen reranked (div {div:g}, nov {nov:g})"] = [
            np.asarray(
                rerank(b[:, 0].astype(np.int64), b[:, score_col], seen=s, features=features, config=rcfg).item_ids,
                dtype=np.int64,
            )
            for b, s in zip(beams, seen)
        ]
    return rows


def trained_peers(args, out: Path, ds, split, methods: list[str]):
    """(tables of Pop and SASRec per split, the SASRec): ``out/baselines``' SASRec when it was trained
    on these training interactions with these settings, else one trained now and saved there."""
    from m6gen.baselines.run import run_baselines, split_fingerprint
    from m6gen.baselines.sasrec import SASRec
    from m6gen.runs import read_json

    cfg = args.groups[SASRecArgs].to_config()
    saved = out / "baselines" / "sasrec"
    sasrec = None
    if "SASRec" in methods and (saved / "sasrec.json").is_file() and saved_config(saved) == cfg:
        info = out / "baselines" / "baselines.json"
        recorded = read_json(info) if info.is_file() else {}
        same = (
            recorded.get("train_split") == split_fingerprint(split)
            if "train_split" in recorded
            else recorded.get("dataset_path") == (str(args.data) if args.data else None)
        )  # an older record
        if same:
            sasrec = SASRec.load(saved)  # trained by an earlier eval in this folder on these train items
        else:
            print(f"note: {saved} was trained on other data; training SASRec again", file=sys.stderr)
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


def run(args) -> int:
    from m6gen.commands.common import Processes, item_features, load_data, load_recommender, required_cold_items
    from m6gen.commands.eval_new_items import ContentPeers, report_new_items
    from m6gen.data import default_data_dir, user_frequency
    from m6gen.prompts import user_vars
    from m6gen.ranking.metrics import evaluate_rankings, per_user_scores
    from m6gen.runs import trained_run_config

    weights = parse_weights(args.weights)
    procs = Processes()  # under torchrun, each process decodes a share of the users; the main one scores
    if args.choose_on_valid and args.split != "test":
        raise UsageError(
            "--choose-on-valid chooses on the validation split for the test split: use it with --split test"
        )
    ds, split = load_data(args)
    n_items = len(ds.catalog)
    if args.new_item_users and not split.new_items:
        raise UsageError("--new-item-users needs the new-item protocol: give --new-items FRAC (e.g. 0.1)")

    def eval_users(name: str) -> list[str]:
        """The users evaluated on split ``name``: with --new-item-users those whose ``name`` target is new,
        so --choose-on-valid chooses on new-item events of the validation split."""
        from m6gen.data import new_item_users

        chosen = new_item_users(split, name) if args.new_item_users else split.users
        chosen = chosen[: args.max_users] if args.max_users else chosen
        if not chosen:
            raise UsageError(f"no user's {name} target is a new item: nothing to evaluate with --new-item-users")
        return chosen

    users = eval_users(args.split)
    out = Path(
        args.out
        or (args.model if args.model and Path(args.model, "m6gen_config.json").is_file() else "runs/eval-default")
    )
    out.mkdir(parents=True, exist_ok=True)
    features = item_features(ds, split)
    user_freq = user_frequency(split, n_items)
    cold = required_cold_items(split, n_items) if args.cold_only else None  # --cold-only: the only items ranked
    warm = set(range(n_items)).difference(cold.tolist()) if cold is not None else set()
    # table and file names: "test", or "test_cold" for the cold-only tables, which do not replace the usual ones
    label = {name: name + ("_cold" if args.cold_only else "") for name in ("valid", "test")}
    ranked_what = f"cold items only ({len(cold)})" if cold is not None else f"whole catalog ({n_items} items)"

    preview = (split.test_history(users[0]), user_vars(users[0], ds.profiles))
    rec = load_recommender(
        args, ds.catalog, preview
    )  # first: a wrong template, device or model fails before SASRec trains
    peers = [m.strip() for m in args.baselines.split(",") if m.strip()]
    if args.cold_only and "Pop" in peers:
        # no cold item has a count, so Pop's order would be the catalog's (ties go to the lower index):
        # in MovieLens an artifact of how ids were given, not a method
        print("note: --cold-only leaves Pop out: cold items have no interactions to count", file=sys.stderr)
        peers.remove("Pop")
    methods = [m for m in peers if m in TRAINED_PEERS]
    sasrec, base = None, {}  # the SASRec of the table, also the collaborative signal of the blend rows
    if methods:
        if procs.is_main:
            base, sasrec = trained_peers(args, out, ds, split, methods)
        procs.wait_for_everyone()  # the other processes read the SASRec the main one saved
        if sasrec is None and "SASRec" in methods:
            from m6gen.baselines.sasrec import SASRec

            sasrec = SASRec.load(out / "baselines" / "sasrec")
    blend = [float(w) for w in args.blend.split(",") if w.strip()] if sasrec is not None else []
    if args.blend != DEFAULT_BLEND and args.blend.strip() and sasrec is None:
        print("note: --blend needs the SASRec baseline (keep SASRec in --baselines); no blend rows", file=sys.stderr)
    decode_blend = [float(w) for w in args.decode_blend.split(",") if w.strip()]
    if decode_blend and args.decode_prior.startswith("SASRec") and sasrec is None:
        raise UsageError("--decode-blend with the SASRec prior needs the SASRec baseline (keep SASRec in --baselines)")
    with_readout = args.decode_prior.endswith("Readout")  # the run's own readout joins the --decode-blend rows
    if decode_blend and with_readout and rec.readout is None:
        raise UsageError(
            f"--decode-prior {args.decode_prior}: {args.model} has no readout "
            "(m6gen fit-readout --model <run>, or train with --readout-loss)"
        )
    score_col = {name: col for col, name in SCORE_COLUMNS}[rec.config.rank_by]
    ks = (5, 10, 20)
    dtype = str(next(rec.model.parameters()).dtype).removeprefix("torch.")  # what --dtype auto became
    data_options = f"{args.format}|{args.title_field}|{args.dedupe}|{args.min_history}|{args.unknown_items}"
    if args.new_items:  # other histories: other beams
        data_options += f"|new{args.new_items:g}"
    content = ContentPeers(ds, rec, [m for m in peers if m not in TRAINED_PEERS])
    decode_prior = None  # the prior function inside the search of the --decode-blend rows (besides a readout)
    if decode_blend and args.decode_prior != "Readout":
        decode_prior = sasrec.score if args.decode_prior.startswith("SASRec") else content.prior(args.decode_prior)
    trained = trained_run_config(args.model)
    retriever = args.candidates or (trained.candidates if trained is not None else None)  # the run's own, if not given
    fingerprint = cache_fingerprint(
        args.model, rec.template.path, retriever, args.data or default_data_dir(must_exist=False), extra=data_options
    )
    if decode_blend:  # the prior's beams also depend on the prior itself
        if args.decode_prior.endswith("Readout"):
            from m6gen.hybrid.placeholders import READOUT_FILE, READOUT_INFO

            folder = out / "baselines" / "sasrec" if args.decode_prior.startswith("SASRec") else None
            # a fitted readout's files; one trained with LoRA is in the adapter, which the fingerprint covers
            readout_files = [Path(args.model, READOUT_FILE), Path(args.model, READOUT_INFO)]
            fingerprint_with_prior = f"{fingerprint}.{prior_fingerprint(sasrec_folder=folder, files=readout_files)}"
        elif args.decode_prior == "SASRec":
            fingerprint_with_prior = f"{fingerprint}.{prior_fingerprint(sasrec_folder=out / 'baselines' / 'sasrec')}"
        else:
            from m6gen.baselines import content as content_code

            fingerprint_with_prior = f"{fingerprint}.{prior_fingerprint(code=content_code)}"

    def new_targets(name: str) -> np.ndarray:
        """(users,) bool: whose target on split ``name`` is a new item (--new-items)."""
        targets = split.test if name == "test" else split.valid
        return np.array([targets[u] in split.new_items for u in eval_users(name)])

    # the rows whose beams were searched with w * the prior inside the search, and their w
    searched_rows = {f"m6gen + {args.decode_prior} in decoding (w {w:g})": w for w in decode_blend}

    def histories_and_targets(name: str, users: list[str]) -> tuple[list[list[int]], np.ndarray]:
        if name == "test":
            return [split.test_history(u) for u in users], np.array([split.test[u] for u in users])
        return [split.valid_history(u) for u in users], np.array([split.valid[u] for u in users])

    def decode_split(name: str, users: list[str], histories: list[list[int]]) -> dict[str, list[np.ndarray]]:
        """Beams per user of each decoding (row -> per user an (n, 5) array), shared among processes."""
        tag = f"{name}-{rec.config.template}-h{rec.config.max_history}-b{rec.config.beams}-{dtype}"
        if rec.retriever is not None:
            tag += f"-c{rec.config.n_candidates}"
        if cold is not None:
            tag += "-cold"
        runs = {"": (out / f"beams_{tag}-{fingerprint}.jsonl", None, 1.0, 0.0)}
        for row, w in searched_rows.items():
            file_name = f"beams_{tag}-{fingerprint_with_prior}-{args.decode_prior.lower()}{w:g}.jsonl"
            runs[row] = (out / file_name, decode_prior, w, w if with_readout else 0.0)
        decoded = {}
        for row, (path, prior, w, readout_w) in runs.items():
            cached = generate_cached(
                rec,
                users,
                histories,
                path,
                args.progress,
                ds.profiles,
                prior=prior,
                prior_weight=w,
                procs=procs,
                allowed=cold,
                readout_weight=readout_w,
            )
            # Older caches hold 4 columns (no prior); a user with no beam gives an empty (0, 5) array.
            decoded[row] = [
                np.array([b[:4] + [b[4] if len(b) > 4 else 0.0] for b in cached[u]], dtype=np.float64).reshape(-1, 5)
                for u in users
            ]
        return decoded

    def evaluate_split(name: str) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every row's metrics, per-user NDCG@10 and per-user HR@10 on one split's users."""
        users = eval_users(name)
        histories, targets = histories_and_targets(name, users)
        decoded = decode_split(name, users, histories)
        seen = [set(h) for h in histories]
        # what the peers may not rank: the history, and with --cold-only every item with a training interaction
        exclude = seen if cold is None else [s | warm for s in seen]
        # run_baselines' rows ranked the whole catalog for the first N users: kept only when that is what is asked
        rows: dict[str, dict[str, float]] = {} if args.new_item_users or cold is not None else dict(base.get(name, {}))
        per_user: dict[str, np.ndarray] = {}  # row -> per-user NDCG@10, for the paired comparison with SASRec
        hits: dict[str, np.ndarray] = {}  # row -> per-user HR@10, for the new-item table
        peer_lists = {}  # the same lists run_baselines scored, kept per user
        if sasrec is not None:
            peer_lists["SASRec"] = sasrec.recommend(histories, max(ks), exclude=exclude)
        if "Pop" in methods:
            from m6gen.baselines.run import pop_rank
            from m6gen.data import item_popularity

            peer_lists["Pop"] = pop_rank(item_popularity(split, n_items), exclude, max(ks))

        def score(row: str, lists, table: bool = True) -> None:
            if table:
                rows[row] = evaluate_rankings(
                    lists,
                    targets,
                    ks=ks,
                    features=features,
                    user_freq=user_freq,
                    n_users=len(split.train),
                    n_items=n_items,
                    seen=seen,
                )
            scores = per_user_scores(lists, targets, 10)
            per_user[row], hits[row] = scores["NDCG"], scores["HR"]

        for peer, lists in {**peer_lists, **content.rankings(histories, exclude, max(ks))}.items():
            score(peer, lists, table=peer not in rows)  # tabled here unless run_baselines did, on these users
        ranked = m6gen_rankings(
            decoded.pop(""),
            histories,
            seen,
            sasrec=sasrec,
            blend=blend,
            weights=weights,
            features=features,
            score_col=score_col,
            k=max(ks),
        )
        for row, beams in decoded.items():  # searched with a prior: ranked by score + w * prior, as searched
            w = searched_rows[row]
            for col, by in SCORE_COLUMNS:  # and by the other two scores, so --choose-on-valid also picks --rank-by
                name = row if col == score_col else f"{row[:-1]}, rank by {by})"
                ranked[name] = [
                    b[np.argsort(-(b[:, col] + w * b[:, PRIOR_COLUMN]), kind="stable"), 0].astype(np.int64)
                    for b in beams
                ]
            # and by the prior alone: the titles choose which items the beams hold, the prior their order
            ranked[f"{row[:-1]}, rank by prior)"] = [
                b[np.argsort(-b[:, PRIOR_COLUMN], kind="stable"), 0].astype(np.int64) for b in beams
            ]
        for row, lists in ranked.items():
            score(row, lists)
        if rec.readout is not None:
            score(READOUT_ROW, readout_ranking(users, histories, exclude, max(ks)))
        return rows, per_user, hits

    def readout_ranking(users: list[str], histories: list[list[int]], exclude, k: int) -> list[np.ndarray]:
        """The run's readout ranking the whole catalog from each user's prompt (one forward, no search)."""
        from tqdm.auto import tqdm

        from m6gen.baselines.content import rank

        profiles = [user_vars(u, ds.profiles) for u in users]
        with tqdm(total=len(users), desc="readout", unit="user", disable=not args.progress, leave=False) as bar:
            return rank(rec.readout_log_probs(histories, profiles, bar.update), exclude, k)

    if not procs.is_main:  # decode this process's share of every split; the main process scores and reports
        for name in (["valid"] if args.choose_on_valid else []) + [args.split]:
            users = eval_users(name)
            decode_split(name, users, histories_and_targets(name, users)[0])
        return 0
    if args.choose_on_valid:
        valid_rows, valid_per_user, valid_hits = evaluate_split("valid")
        report(out, label["valid"], len(eval_users("valid")), ranked_what, valid_rows, valid_per_user)
        if split.new_items:
            report_new_items(out, label["valid"], new_targets("valid"), valid_per_user, valid_hits)
        candidates = [r for r in valid_rows if r.startswith("m6gen") and r != READOUT_ROW]
        chosen = max(candidates, key=lambda r: valid_rows[r]["NDCG@10"])
    rows, per_user, hits = evaluate_split(args.split)
    if args.choose_on_valid:
        # The one m6gen setting picked on validation, reported on test: the honest headline row.
        label_chosen = f"m6gen, chosen on valid: {chosen.removeprefix('m6gen ')}"
        rows[label_chosen], per_user[label_chosen] = rows[chosen], per_user[chosen]
        hits[label_chosen] = hits[chosen]
    report(out, label[args.split], len(users), ranked_what, rows, per_user)
    if split.new_items:
        report_new_items(out, label[args.split], new_targets(args.split), per_user, hits)
    # the options as given, and what they became (dtype auto, a run's own template and retriever)
    settings = {
        **{k: v for k, v in vars(args).items() if k != "groups"},
        "resolved": {
            "dtype": dtype,
            "template": rec.config.template,
            "template_path": str(rec.template.path),
            "max_history": rec.config.max_history,
            "retriever": retriever,
            "n_users": len(users),
            "beam_cache_fingerprint": fingerprint,
            "cold_items": len(cold) if cold is not None else None,
        },
    }
    if args.choose_on_valid:
        (out / f"eval_{label['valid']}_config.json").write_text(
            json.dumps({**settings, "split": "valid"}, indent=2, default=str)
        )
        settings["chosen_on_valid"] = {"row": chosen, "valid_NDCG@10": valid_rows[chosen]["NDCG@10"]}
    (out / f"eval_{label[args.split]}_config.json").write_text(json.dumps(settings, indent=2, default=str))
    return 0


def saved_config(folder: Path):
    """The SASRecConfig a saved SASRec was trained with (None when unreadable)."""
    from m6gen.baselines.config import SASRecConfig

    try:
        return SASRecConfig(**json.loads((folder / "sasrec.json").read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen eval", HELP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
