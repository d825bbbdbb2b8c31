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

from m6gen.commands.common import interrupted_status, library_notes_silenced
from m6gen.config import TRAIN_GROUPS

GROUPS = list(TRAIN_GROUPS)
HELP = "LoRA-tune the model on the train split"


def run(args) -> int:
    from m6gen.config import TrainConfig
    from m6gen.training.loop import train

    cfg = TrainConfig.from_groups(*(args.groups[g] for g in GROUPS))
    try:
        with library_notes_silenced():
            summary = train(cfg)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (commands.common.Terminated)
        print("interrupted: continue from the last checkpoint with --resume", file=sys.stderr)
        return interrupted_status(stop)
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch, one summary, not one per process
        print(json.dumps(summary, indent=2))
        print(next_steps(summary))
    return 0


def next_steps(summary: dict) -> str:
    """What to run with the new folder, and a plain word when validation did not beat the untuned model."""
    out = summary["output_dir"]
    lines = [
        f"saved {out} (its README.md says what was trained); next:",
        f"  m6gen recommend --model {out} --users 196      # lists for a few users",
        f"  m6gen eval --model {out}                       # the test split, against Pop and SASRec",
    ]
    untuned, last = summary.get("untuned"), summary.get("last_eval")
    if untuned and last and last["step"] > 0:
        metric = next(key for key in last if key.startswith("NDCG@"))
        if last[metric] <= untuned[metric]:
            lines.append(
                f"note: validation {metric} {last[metric]:.4f} after {last['step']} steps, {untuned[metric]:.4f} "
                f"untuned: {last['step']} steps is a first look, not a trained recommender; "
                "configs/cpu-sequence.yaml trains 600 steps (about 47 minutes on 2 CPU cores)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen train", HELP, run, argv)
