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
from pathlib import Path

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
        print(interrupted_hint(cfg.output_dir), file=sys.stderr)
        return interrupted_status(stop)
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch, one summary, not one per process
        print(json.dumps(summary, indent=2))
        print(next_steps(summary))
    return 0


def interrupted_hint(output_dir: str) -> str:
    """What continues a killed run: --resume needs the folder's config (and continues from its last
    checkpoint, if any); a run killed while loading wrote nothing yet."""
    from m6gen.runs import CONFIG_FILE
    from m6gen.training.run_folder import checkpoint_pointer

    out = Path(output_dir)
    if checkpoint_pointer(out).get("last"):
        return "interrupted: continue from the last checkpoint with --resume"
    if (out / CONFIG_FILE).is_file():
        return "interrupted before the first checkpoint: --resume starts the run again from step 0"
    return "interrupted before the run folder was written: run the same command again"


def next_steps(summary: dict) -> str:
    """What to run with the new folder, and a plain word when validation did not beat the untuned model."""
    from m6gen.hybrid.placeholders import INFO_FILE
    from m6gen.training.model_card import usage_commands

    out = summary["output_dir"]
    lines = [f"saved {out} (its README.md says what was trained); next:"]
    collaborative = (Path(out) / INFO_FILE).is_file()  # trained with --cf-source
    lines += [
        f"  {command}   # {what}"
        for command, what in usage_commands(out, collaborative, summary.get("example_user", "196"))
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
