"""``python -m tests.fsdp_train ARGS`` under torchrun: ``m6gen train`` with FSDP on CPU processes (tests only).

accelerate sets FSDP up only on accelerators (GPUs, ...); on CPU processes it stays DDP. This
entry point switches each process's accelerate state to FSDP2, as ``accelerate launch --use_fsdp
--fsdp_version 2`` does on GPUs, so that the sharded paths of ``m6gen.training.loop`` run in the tests.
``M6GEN_TEST_KILL_AT=N`` interrupts every process after optimizer step N (a kill, for --resume).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    import m6gen.training.loop as train_module

    real_init = Accelerator.__init__

    def init_with_fsdp(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does on GPUs
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2,
            auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
        )

    Accelerator.__init__ = init_with_fsdp
    kill_at = int(os.environ.get("M6GEN_TEST_KILL_AT", "0"))
    real_step = train_module.train_step

    def step_then_maybe_die(run, module, optimizer, scheduler, step):
        result = real_step(run, module, optimizer, scheduler, step)
        if kill_at and step + 1 == kill_at:
            raise KeyboardInterrupt
        return result

    train_module.train_step = step_then_maybe_die
    from m6gen.commands.train import main as train_main

    return train_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
