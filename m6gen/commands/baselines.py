"""``m6gen baselines``: Pop, SASRec and EASE on the leave-one-out split, tables and the models saved.

m6gen baselines --out runs/baselines                        # a few minutes on a CPU
m6gen baselines --methods EASE --out runs/ease              # seconds: EASE has a closed form
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

    methods: str = option("Pop,SASRec", "comma list of Pop, SASRec, EASE")
    max_users: int | None = option(None, "evaluate only the first N users (default: all)")
    out: str | None = option(
        None,
        "folder for the tables, baselines.json and the SASRec and EASE models (none: nothing is saved; give one to "
        "keep the SASRec for --sasrec or --cf-source, or either as an m6gen fit-readout --readout-teachers)",
    )
    ease_l2: float = option(100.0, "EASE's L2 penalty (100 ranked best of 100, 300 and 1000 on ML-100K validation)")
    ease_temperature: float = option(
        3.0,
        "EASE as a fit-readout teacher: its next-item distribution is softmax(temperature x scores), averaged with "
        "SASRec's log-probabilities (3 chosen on validation among 3, 10 and 30); its own ranking does not change",
    )

    def __post_init__(self):
        at_least(self, 1, "max_users", optional=True)
        from m6gen.baselines.run import METHODS

        unknown = [m for m in self.methods.split(",") if m.strip() not in METHODS]
        if unknown:
            raise ConfigError(f"methods: unknown {unknown[0].strip()!r}; choose from {', '.join(METHODS)}")
        for name in ("ease_l2", "ease_temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: a number > 0, got {getattr(self, name)}")


GROUPS = [DataArgs, BaselinesArgs, SASRecArgs, RuntimeArgs]
HELP = "Pop, SASRec and EASE on the same split (tables and the saved models)"


def run(args) -> int:
    import time

    from m6gen.baselines.ease import EASEConfig
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
        ease_config=EASEConfig(l2=args.ease_l2, temperature=args.ease_temperature),
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
