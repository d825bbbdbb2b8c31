"""``m6gen baselines``: Pop and SASRec on the leave-one-out split, tables and the SASRec model saved.

m6gen baselines --out runs/baselines                        # a few minutes on a CPU
m6gen baselines --sasrec-epochs 20 --max-users 200          # a quick look
m6gen baselines --data my/folder --format plain --sasrec-time-budget-s 600
"""

from __future__ import annotations

from dataclasses import dataclass

from m6gen.config import ConfigError, DataArgs, RuntimeArgs, SASRecArgs, at_least, option


@dataclass
class BaselinesArgs:
    """Which baselines, on how many users, saved where."""

    _argument_group_name = "baselines"

    methods: str = option("Pop,SASRec", "comma list of Pop, SASRec")
    max_users: int | None = option(None, "evaluate only the first N users (default: all)")
    out: str | None = option(
        None,
        "folder for the tables, baselines.json and the SASRec model (none: nothing is saved; give one to keep the "
        "SASRec for --sasrec or --cf-source)",
    )

    def __post_init__(self):
        at_least(self, 1, "max_users", optional=True)
        unknown = [m for m in self.methods.split(",") if m.strip() not in ("Pop", "SASRec")]
        if unknown:
            raise ConfigError(f"methods: unknown {unknown[0].strip()!r}; choose from Pop, SASRec")


GROUPS = [DataArgs, BaselinesArgs, SASRecArgs, RuntimeArgs]
HELP = "Pop and SASRec on the same split (tables and a saved SASRec)"


def run(args) -> int:
    import time

    from m6gen.baselines.run import run_baselines
    from m6gen.commands.common import load_data
    from m6gen.ranking.metrics import format_table

    t0 = time.perf_counter()
    ds, split = load_data(args)
    methods = [m.strip() for m in args.methods.split(",")]
    res = run_baselines(
        args.data,
        config=args.groups[SASRecArgs].to_config(),
        methods=methods,
        max_users=args.max_users,
        out_dir=args.out,
        threads=None,  # run_command already set --threads (else torch's default: all cores)
        progress=args.progress,
        loaded=(ds, split),
    )
    cols = ["NDCG@10", "HR@10", "NDCG@20", "HR@20", "MRR@10"]
    for stage in ("valid", "test"):
        print(f"\n{stage} ({res['users_evaluated']} users, whole catalog, history excluded)")
        print(format_table(res[stage], cols))
    if "sasrec" in res:
        s = res["sasrec"]
        print(
            f"SASRec: {s['train_seconds']} s training, best epoch {s['best_epoch']} of {s['epochs_run']}, "
            f"stopped by {s['stopped']}"
        )
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen baselines", HELP, run, argv)
