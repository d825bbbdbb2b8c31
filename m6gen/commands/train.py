"""``m6gen train``: LoRA-tune the model on the train split (the loop lives in ``m6gen.training``).

m6gen train --output-dir runs/lora                              # a few minutes on a CPU
m6gen train --config configs/cpu-sequence.yaml                  # a recipe; flags win
accelerate launch --multi_gpu -m m6gen train --output-dir runs/lora-ddp
torchrun --nproc_per_node 2 -m m6gen train --output-dir runs/lora-ddp
"""

from __future__ import annotations

import json
import os
import sys
import warnings

from m6gen.commands.common import interrupted_status
from m6gen.config import TRAIN_GROUPS

GROUPS = list(TRAIN_GROUPS)
HELP = "LoRA-tune the model on the train split"


def run(args) -> int:
    from m6gen.config import TrainConfig
    from m6gen.training.loop import train

    cfg = TrainConfig.from_groups(*(args.groups[g] for g in GROUPS))
    try:
        with warnings.catch_warnings():  # library deprecation notes a user cannot act on
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            warnings.filterwarnings("ignore", category=UserWarning, module="peft")
            summary = train(cfg)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (commands.common.Terminated)
        print("interrupted: continue from the last checkpoint with --resume", file=sys.stderr)
        return interrupted_status(stop)
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch, one summary, not one per process
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen train", HELP, run, argv)
