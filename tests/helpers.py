"""Test data shared by several test files (fixtures built from it live in conftest.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tiny_lm import make_model, make_tokenizer

# The tiny `world` (conftest.py): 8 titles, 6 users of 4 interactions each.
TITLES = ["Toy Story", "Alien", "Aliens", "Heat", "Casino", "Amélie", "The Godfather", "Fargo"]
WORLD_USERS, WORLD_STEPS = 6, 4


def write_world_data(folder: Path, shift: int = 1) -> Path:
    """items.jsonl over TITLES and interactions.csv: user u's step s is item (u * shift + s) mod 8."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": str(i), "title": t, "year": 1990 + i}) + "\n" for i, t in enumerate(TITLES)),
        encoding="utf-8",
    )
    rows = ["user_id,item_id,timestamp"]
    for u in range(WORLD_USERS):
        for step in range(WORLD_STEPS):
            rows.append(f"u{u},{(u * shift + step) % len(TITLES)},{step}")
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
    return folder


def save_tiny_model(folder: Path, seed: int = 0, **kw) -> Path:
    """A tiny random Llama and its tokenizer saved as a Hugging Face folder."""
    tok = make_tokenizer()
    make_model(len(tok), seed=seed, **kw).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# The synthetic training data (`tiny_dirs` in conftest.py): 20 items, 30 users of 9 interactions.
N_ITEMS, N_USERS, LENGTH = 20, 30, 9


def write_synthetic(folder: Path) -> None:
    """20 items, 30 users; each history walks the catalog in order (item i is always followed by i+1)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "items.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title"])
        for i in range(N_ITEMS):
            w.writerow([f"i{i}", f"Movie {chr(65 + i)} ({1980 + i})"])
    with (folder / "interactions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp"])
        for u in range(N_USERS):
            for t in range(LENGTH):
                w.writerow([f"u{u}", f"i{(u + t) % N_ITEMS}", t])


def tiny_config(tiny_dirs, out, **kw):
    """A TrainConfig for a few quick steps on the synthetic data."""
    from m6gen.config import TrainConfig

    model_dir, data_dir = tiny_dirs
    base = dict(
        model=str(model_dir),
        data=str(data_dir),
        output_dir=str(out),
        template="titles",
        max_history=4,
        examples_per_user=None,
        epochs=2,
        max_steps=None,
        train_batch_size=2,
        pack_len=128,
        lr=3e-2,
        warmup_ratio=0.0,
        eval_every=0,
        eval_users=10,
        eval_beams=5,
        eval_at_start=False,
        progress=False,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        mixed_precision="no",
    )
    base.update(kw)
    return TrainConfig(**base)


def tiny_world(tiny_dirs, template_name: str, max_history: int = 50):
    """(tokenizer, dataset, split, template, target ids) on the synthetic data."""
    from m6gen.data import build_histories, leave_one_out, load_dataset
    from m6gen.model import encode_targets
    from m6gen.prompts import TemplateLibrary

    tok = make_tokenizer()
    ds = load_dataset(tiny_dirs[1])
    template = TemplateLibrary(max_history=max_history).get(template_name)
    target_ids = encode_targets(tok, [template.render_target(it) for it in ds.catalog])
    return tok, ds, leave_one_out(build_histories(ds)), template, target_ids
