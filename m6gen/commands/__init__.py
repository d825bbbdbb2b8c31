"""The ``m6gen`` command line: one module per sub-command. Their options come from ``m6gen.config``,
whose parser (``m6gen/config/parser.py``) is the only place argparse is used.

    m6gen demo | data | prompts | recommend | chat | eval | tune-prompts | train | baselines | serve

Every command is built from the option groups of ``m6gen.config`` and takes ``--config FILE``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.registry import COMMANDS, command

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: m6gen <command> [options]   (m6gen <command> --help for its options)\n")
        print("Generative recommendation by constrained generation of item titles.\n\ncommands:")
        for name in COMMANDS:
            print(f"  {name:<13} {command(name).HELP}")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from m6gen import __version__

        print(f"m6gen {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"m6gen: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return command(argv[0]).main(argv[1:])
