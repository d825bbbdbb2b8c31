"""A trained run folder, read back: its saved options, what it sets for later commands (template,
history length, data, readout), and the model it holds.

Training writes the folder (``m6gen.training``); the recommender, the commands and training itself
(``--resume``, ``--init-adapter``) read it through here.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

from m6gen.config import DataArgs, PromptArgs, TrainConfig, TrainError

CONFIG_FILE = "m6gen_config.json"
SAVED_TEMPLATES = "prompts"  # a run's copy of its template (and the _partials beside it), what loading reads


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file; a :class:`TrainError` naming the file and line when it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f":{err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise TrainError(f"{path}{where}: damaged, not valid JSON; restore it or train into a new folder") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: damaged, expected a JSON object; restore it or train into a new folder")
    return data


# ---------------------------------------------------------------------------------- run folder
def read_run_config(output_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """(config, resolved extras) of a training run's folder."""
    path = Path(output_dir) / CONFIG_FILE
    if not path.is_file():
        raise TrainError(f"{output_dir}: not an m6gen training output ({CONFIG_FILE} missing)")
    saved = read_json(path)
    if not isinstance(saved.get("config"), dict):
        raise TrainError(f'{path}: damaged, no "config" object; restore it or train into a new folder')
    values = upgrade_saved_config(saved["config"])
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names}), saved.get("resolved", {})


# Runs saved before 0.2 spelled some options differently (CHANGELOG.md).
RENAMED_IN_0_2 = {
    "data_format": "format",
    "prompts_dir": "templates",
    "min_history": "min_prompt_items",
    "batch_size": "train_batch_size",
}


def upgrade_saved_config(values: dict[str, Any]) -> dict[str, Any]:
    """A saved run config in today's option names (a run saved before 0.2 had no ``min_prompt_items``)."""
    if "min_prompt_items" in values:
        return values
    return {RENAMED_IN_0_2.get(k, k): v for k, v in values.items()}


def trained_run_config(model: str | Path | None) -> TrainConfig | None:
    """The training config when ``model`` is an m6gen run folder, else None (a model id, a path, a .gguf)."""
    if model is None or not (Path(model) / CONFIG_FILE).is_file():
        return None
    return read_run_config(model)[0]


def load_trained(output_dir: str | Path, dtype: str = "float32", merge: bool = False, device: str = "cpu"):
    """(model, tokenizer, config) of a training output, ready for ``constrained_beam_search``.

    Loads the base model named in ``m6gen_config.json`` onto ``device`` plus the LoRA adapter (the
    best one when validation ran); ``merge=True`` folds the adapter into the weights (faster decoding).
    The catalog trie is in ``<output_dir>/trie`` (``m6gen.decoding.trie.CatalogTrie.load``).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    from m6gen.model import load_model

    cfg, _ = read_run_config(output_dir)
    if not (Path(output_dir) / "adapter_config.json").is_file():
        raise TrainError(f"{output_dir}: no adapter saved yet (the run did not finish; use --resume)")
    if (Path(output_dir) / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(output_dir))
    else:  # saved at the end of training; a folder holding a checkpoint's adapter copied by hand has none
        from m6gen.model import load_tokenizer

        tokenizer = load_tokenizer(cfg.model, cfg.gguf_file)
    base = load_model(cfg.model, cfg.gguf_file, dtype=dtype, device=device)
    from m6gen.hybrid.soft_tokens import attach_saved

    attach_saved(base, output_dir, tokenizer)  # collaborative tokens; peft loads their projector with the adapter
    with warnings.catch_warnings():  # peft asks transformers 5 a deprecated question; nothing for our users to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = PeftModel.from_pretrained(base, str(output_dir))
    model.eval()
    return (model.merge_and_unload() if merge else model), tokenizer, cfg


def run_templates(model, run) -> tuple[str | None, str]:
    """(folder searched first, template name or path) that give a run its own template.

    The copy the run saved (``<run>/prompts/``), so later edits of the original change nothing;
    runs saved before there was one read the template where they were trained from (None: the
    shipped folder), and a folder that is gone is an error naming the run.
    """
    from m6gen.prompts import SUFFIX

    name = Path(run.template).name.removesuffix(SUFFIX)
    saved = Path(model) / SAVED_TEMPLATES
    if (saved / f"{name}{SUFFIX}").is_file():
        return str(saved), name
    if run.templates and not Path(run.templates).is_dir():
        from m6gen.model import ModelError

        raise ModelError(
            f"{model} was trained with templates from {run.templates}, which is not there: "
            f"pass --templates DIR (a folder holding {run.template}.jinja)"
        )
    return run.templates, run.template


def resolve_prompt(model, prompt: PromptArgs) -> PromptArgs:
    """``prompt`` with what was left unset taken from the trained run ``model`` (else the defaults).

    The one place where a run folder's template (its own saved copy), history length, retriever and
    number of candidates are resolved; every command and ``from_pretrained`` go through it.
    """
    run = trained_run_config(model)
    template = prompt.template or (run.template if run else "titles")
    templates = prompt.templates
    if run is not None and templates is None and template in (run.template, Path(run.template).stem):
        templates, template = run_templates(model, run)  # the run's own copy of its template
    return dataclasses.replace(
        prompt,
        templates=templates,
        template=template,
        max_history=prompt.max_history or (run.max_history if run else 20),
        n_candidates=prompt.n_candidates or (run.n_candidates if run else 20),
        candidates=prompt.candidates or (run.candidates if run else None),
    )


def resolve_data(model, data: DataArgs, say=print) -> DataArgs:
    """``data`` with, when no folder is given and ``model`` is a trained run, the run's own data
    folder and the data options left at their defaults (``say`` tells the user). A run's new-item
    fraction holds whatever the folder, unless ``--new-items`` is given: its model never saw those items."""
    from m6gen.data import default_data_dir

    run = trained_run_config(model)
    if run is not None and data.new_items is None and getattr(run, "new_items", None):
        data = dataclasses.replace(data, new_items=run.new_items)
    if run is None or not run.data or data.data is not None:
        return data
    if not Path(run.data).is_dir():  # e.g. trained on another machine
        say(f"note: {model} was trained on data at {run.data}, which is not here; using the default data (pass --data)")
        return data
    defaults = DataArgs()
    changes = {"data": run.data}
    for name in ("format", "title_field", "dedupe", "unknown_items", "new_items"):
        if getattr(data, name) == getattr(defaults, name):
            changes[name] = getattr(run, name)
    if Path(run.data).resolve() != default_data_dir(must_exist=False).resolve():
        say(f"note: data {run.data} (the one {model} was trained on; --data to change)")
    return dataclasses.replace(data, **changes)


def run_readout(run_folder, lm):
    """The collaborative readout of the run in ``run_folder`` over ``lm``'s item table: the one
    ``m6gen fit-readout`` fitted, else the one trained with LoRA (``--readout-loss``); None: not a
    run, or it has none."""
    from m6gen.hybrid import find
    from m6gen.hybrid.readout import load_readout

    embedding = find(lm)
    if run_folder is None or embedding is None:
        return None
    fitted = load_readout(run_folder, embedding.table)
    return fitted if fitted is not None else embedding.readout
