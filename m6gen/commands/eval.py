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
paired-bootstrap 95% interval, since a ratio measured on a few hundred users is noisy, and
``eval_<split>_by_popularity``: every row within (up to) three groups of users, from the rarest targets
in training to the most popular.
``--choose-on-valid`` evaluates the validation split first and adds to the test table the m6gen row
that scored best there: choosing a weight by its test score would peek at the test items.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from m6gen.commands.eval_rows import choose_row, tied_rows
from m6gen.commands.eval_run import DEFAULT_BLEND, parse_weights, prepare, write_settings
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

PEERS = ("Pop", "SASRec", "EASE", "Content", "Newest", "TitleNN")
DEFAULT_WEIGHTS = "0.3,0;0,0.3;0.3,0.3"


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
        "peers in the same run (comma list of Pop, SASRec, EASE (item-to-item, closed form), Content (genres and "
        "year), Newest (latest release year first, then genres), TitleNN (nearest neighbours by the model's title "
        "embeddings); '' for none)",
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
    plain_beams: bool = option(
        True,
        "decode the plain search (no prior) too: its rows (ranked by each beam score, --blend, --weights) are "
        "tabled and are --choose-on-valid's candidates; false, with --decode-blend: only the searches with the "
        "prior are decoded (about half the decoding), and the choice is among their rows",
    )
    choose_on_valid: bool = option(
        False,
        "with --split test: evaluate every row on the validation split first and add a test row for the m6gen row "
        "with the best validation NDCG@10 (the honest figure: chosen without seeing test items)",
    )
    sasrec_from: str | None = option(
        None,
        "a saved SASRec folder (`m6gen baselines --out DIR` writes DIR/sasrec) to use as the SASRec peer and "
        "prior instead of training one here; it must be recorded as trained on these training interactions",
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
        if not self.plain_beams and not self.decode_blend.strip():
            raise ConfigError("plain_beams: false leaves nothing to decode without --decode-blend weights")


GROUPS = [DataArgs, PromptArgs, ModelArgs, DeviceArgs, DecodeArgs, EvalArgs, SASRecArgs, RuntimeArgs]
HELP = "full-ranking evaluation against Pop and SASRec"


def run(args) -> int:
    ev = prepare(args)
    if not ev.procs.is_main:  # decode this process's share of every split; the main process scores and reports
        for name in (["valid"] if args.choose_on_valid else []) + [args.split]:
            ev.decode(name)
        return 0
    chosen, tied = None, []
    if args.choose_on_valid:
        valid = ev.evaluate("valid")
        ev.report("valid", valid)
        chosen = choose_row(valid.rows)
        tied = tied_rows(valid.rows, chosen)
        if tied:  # the first listed is reported, but validation did not choose it
            print(
                f"note: --choose-on-valid: {len(tied) + 1} m6gen rows tie at validation NDCG@10 "
                f"{valid.rows[chosen]['NDCG@10']:.4f}; the first listed ({chosen}) is reported, not a choice: "
                "evaluate more users",
                file=sys.stderr,
            )
    scores = ev.evaluate(args.split)
    if chosen is not None:
        # The one m6gen setting picked on validation, reported on test: the honest headline row.
        scores.add_as(f"m6gen, chosen on valid: {chosen.removeprefix('m6gen ')}", chosen)
    ev.report(args.split, scores)
    write_settings(ev, chosen, valid.rows[chosen]["NDCG@10"] if chosen is not None else None, tied)
    return 0


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen eval", HELP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
