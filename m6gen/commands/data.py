"""``m6gen data``: a data set's summary and the sizes of its leave-one-out split.

m6gen data --data path/to/folder
"""

from __future__ import annotations

from m6gen.config import DataArgs

GROUPS = [DataArgs]
HELP = "summary of a data set and its leave-one-out split"


def run(args) -> int:
    from m6gen.commands.common import format_summary, load_data
    from m6gen.data import default_data_dir, detect_format, summary

    ds, split = load_data(args)
    folder = args.data or default_data_dir()
    detected = f"{detect_format(folder)} (detected)" if args.format == "auto" else args.format
    print(format_summary({"folder": str(folder), "format": detected, **summary(ds, split)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen data", HELP, run, argv)
