"""The option groups every command is built from: data, prompts, model, device, decoding, prior,
reranking, runtime; each field with its help text and its check in ``__post_init__``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

FORMATS = ("auto", "recbole", "ml-100k", "ml-1m", "plain")
RANKINGS = ("logprob", "normalized", "catalog")


class ConfigError(ValueError):
    """A config file or option value is wrong; the message names the file, field or flag."""


def option(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:  # noqa: A002
    """A dataclass field with help text (shown by ``--help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def at_least(obj: Any, low: float, *names: str, optional: bool = False) -> None:
    """Each of ``obj``'s fields ``names`` is a finite number >= ``low`` (or None, with ``optional``)."""
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            none = " (or leave it unset)" if optional else ""
            raise ConfigError(f"{name}: expected a number >= {low}{none}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")


def one_of(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    """``obj``'s field ``name`` is one of ``allowed`` (a YAML value bypasses argparse's choices)."""
    if getattr(obj, name) not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(obj, name)!r}")


# ------------------------------------------------------------------------------------------ groups
@dataclass
class DataArgs:
    """Which interactions and items to read, and which users to keep."""

    _argument_group_name = "data"

    data: str | None = option(None, "data folder (default: $M6GEN_DATA, else MovieLens-100K from scripts/setup.sh)")
    format: Literal["auto", "recbole", "ml-100k", "ml-1m", "plain"] = option(
        "auto", "data format (auto: detected from the files; `m6gen data` shows which)"
    )
    title_field: str | None = option(
        None, "item title column (default: 'title' in plain CSV/JSONL files; detected in RecBole and MovieLens files)"
    )
    dedupe: Literal["first", "keep", "last"] = option(
        "first", "repeated items in a history: keep the first, all, or the last"
    )
    min_history: int = option(
        3, "drop users with fewer interactions (at least 3: a train, a validation and a test item)"
    )
    unknown_items: Literal["error", "skip"] = option(
        "error", "interactions whose item is not in the item file: an error, or skip them"
    )
    new_items: float | None = option(
        None,
        "new-item protocol: the FRAC of items first interacted with latest are new; every interaction with one "
        "leaves training (LM, SASRec, Pop, collaborative tokens, reranker popularity) and histories, they stay "
        "in the catalog as targets (0: the standard split; default: a trained --model run's own, else 0; "
        "docs/evaluation.md)",
    )

    def __post_init__(self):
        at_least(self, 3, "min_history")
        if self.new_items is not None and not 0 <= self.new_items < 1:
            raise ConfigError(f"new_items: expected a fraction in [0, 1), got {self.new_items}")
        one_of(self, "format", FORMATS)
        one_of(self, "dedupe", ("first", "keep", "last"))
        one_of(self, "unknown_items", ("error", "skip"))


@dataclass
class PromptArgs:
    """How a history becomes a prompt."""

    _argument_group_name = "prompts"

    templates: str | None = option(None, "extra folder of .jinja templates, searched before prompts/")
    template: str | None = option(None, "template name or .jinja path (default: the trained run's, else titles)")
    max_history: int | None = option(None, "most recent items shown in a prompt (default: the trained run's, else 20)")
    candidates: str | None = option(
        None,
        "a saved SASRec folder as retriever: prompts may list its top --n-candidates unseen items and only they "
        "are ranked (default: the retriever the trained run used)",
    )
    n_candidates: int | None = option(
        None, "items the retriever proposes per user (default: the trained run's, else 20)"
    )

    def __post_init__(self):
        at_least(self, 1, "max_history", "n_candidates", optional=True)


@dataclass
class ModelArgs:
    """Which language model."""

    _argument_group_name = "model"

    model: str | None = option(
        None,
        "a trained m6gen run folder, a Hugging Face model id or folder, or a .gguf file "
        "(default: SmolLM2-135M-Instruct)",
    )
    gguf_file: str | None = option(None, "GGUF file name inside --model's folder")

    def __post_init__(self):
        pass  # any name may be a hub id; loading checks it


@dataclass
class DeviceArgs:
    """Where and in which precision the model runs."""

    _argument_group_name = "device"

    device: str = option("auto", "auto (the GPU or other accelerator torch sees, else cpu), cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", "auto: bfloat16 where the device computes it natively (on other CPUs it is ~400x slower), else float32"
    )

    def __post_init__(self):
        one_of(self, "dtype", ("auto", "float32", "bfloat16"))


@dataclass
class DecodeArgs:
    """The trie-constrained beam search."""

    _argument_group_name = "decoding"

    beams: int = option(20, "beams = distinct catalog items generated per user before reranking")
    batch_size: int = option(8, "users decoded together")
    rank_by: Literal["logprob", "normalized", "catalog"] = option("logprob", "beam score used for ranking")

    def __post_init__(self):
        at_least(self, 1, "beams", "batch_size")
        one_of(self, "rank_by", RANKINGS)


@dataclass
class PriorArgs:
    """A collaborative prior inside the search."""

    _argument_group_name = "prior"

    sasrec: str | None = option(
        None, "a saved SASRec folder whose log-probabilities join the beam search as an item prior"
    )
    sasrec_weight: float = option(1.0, "weight of the SASRec prior (with --sasrec)")
    readout_weight: float = option(
        0.0,
        "weight of the trained run's own collaborative readout (m6gen fit-readout) as an item prior in the "
        "search; 0: not used",
    )

    def __post_init__(self):
        at_least(self, 0, "sasrec_weight", "readout_weight")
        if self.sasrec is None and self.sasrec_weight != 1.0:  # a weight of nothing would be silently ignored
            raise ConfigError(
                f"sasrec_weight: {self.sasrec_weight:g} weighs nothing without --sasrec (a saved SASRec folder)"
            )


MAX_WEIGHT = 1000.0  # a reranker weight's bound: far past any useful trade-off; larger ones overflow to inf


@dataclass
class RerankArgs:
    """The final top-k: accuracy traded against diversity and novelty."""

    _argument_group_name = "reranking"

    k: int = option(10, "recommendations per user (at most --beams)")
    diversity: float = option(0.0, "reranker diversity weight (0 to 1000)")
    novelty: float = option(0.0, "reranker novelty weight (0 to 1000)")

    def __post_init__(self):
        at_least(self, 1, "k")
        at_least(self, 0, "diversity", "novelty")
        for name in ("diversity", "novelty"):
            if getattr(self, name) > MAX_WEIGHT:
                raise ConfigError(f"{name}: expected a number from 0 to {MAX_WEIGHT:g}, got {getattr(self, name)!r}")


@dataclass
class RuntimeArgs:
    """Console and CPU settings."""

    _argument_group_name = "runtime"

    progress: bool = option(True, "show progress bars (--no-progress: none)")
    threads: int | None = option(None, "CPU threads for torch (default: torch's, all cores)")

    def __post_init__(self):
        at_least(self, 1, "threads", optional=True)


def check_k_fits_beams(rerank: RerankArgs, decode: DecodeArgs) -> None:
    """k > beams would silently return short lists: refuse it in one line."""
    if rerank.k > decode.beams:
        raise ConfigError(f"k: {rerank.k} recommendations need at least as many beams (--beams {decode.beams})")


# ------------------------------------------------------------------------------------------ SASRec
def _sasrec_args() -> type:
    """SASRec's own options (``SASRecConfig``) as a group, each prefixed ``sasrec_`` (``--sasrec-epochs``)."""
    from m6gen.baselines.config import SASRecConfig

    fields = [
        (f"sasrec_{f.name}", f.type, field(default=f.default, metadata={"help": f.metadata.get("help", "")}))
        for f in dataclasses.fields(SASRecConfig)
    ]

    def __post_init__(self):
        self.to_config()

    def to_config(self) -> SASRecConfig:
        values = {f.name: getattr(self, f"sasrec_{f.name}") for f in dataclasses.fields(SASRecConfig)}
        try:
            return SASRecConfig(**values)
        except ValueError as err:
            raise ConfigError(str(err).replace("SASRecConfig.", "sasrec_")) from None

    cls = dataclasses.make_dataclass(
        "SASRecArgs",
        fields,
        namespace={
            "__post_init__": __post_init__,
            "to_config": to_config,
            "_argument_group_name": "SASRec baseline",
            "__module__": __name__,
        },
    )
    cls.__doc__ = "The SASRec baseline (full cross-entropy): architecture, training and early stopping."
    return cls


SASRecArgs = _sasrec_args()
