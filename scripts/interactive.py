"""Interactive recommendations in a plain terminal: type titles you liked, get the top-k with score breakdowns.

    python scripts/interactive.py                          # default model, MovieLens-100K (scripts/setup.sh)
    python scripts/interactive.py --model runs/lora1 --k 5 # a trained output directory
    python scripts/interactive.py --user 196               # start from user 196's history

Type `help` in the session for the commands; the same session is `m6gen chat`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.chat import main as chat_main

    return chat_main(argv)


if __name__ == "__main__":
    sys.exit(main())
