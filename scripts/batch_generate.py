"""Batch recommendation lists for many users (same as `m6gen recommend`).

.venv/bin/python scripts/batch_generate.py --output runs/recs.jsonl --users-file ids.txt
accelerate launch scripts/batch_generate.py --output runs/recs.jsonl   # sharded across processes
"""

import sys

from m6gen.commands.recommend import main

if __name__ == "__main__":
    sys.exit(main())
