"""``m6gen data``: a data set's summary and the sizes of its leave-one-out split.

m6gen data --data path/to/folder
"""

from __future__ import annotations

import numpy as np

from m6gen.config import DataArgs

GROUPS = [DataArgs]
HELP = "summary of a data set and its leave-one-out split"


def run(args) -> int:
    from m6gen.commands.common import format_summary, load_data
    from m6gen.data import default_data_dir, detect_format, summary

    ds, split = load_data(args)
    folder = args.data or default_data_dir()
    detected = f"{detect_format(folder)} (detected)" if args.format == "auto" else args.format
    repeats = sum(len(ev.items) - len(np.unique(ev.items)) for ev in ds.interactions.values())
    dedupe = {"repeated_interactions": f"{repeats} (--dedupe {args.dedupe})"} if repeats else {}
    # which files and which title column were read: a folder may hold several, a file several title columns
    print(format_summary({"folder": str(folder), "format": detected, **ds.read_from, **summary(ds, split), **dedupe}))
    return 0


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen data", HELP, run, argv)
