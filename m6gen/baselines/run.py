"""Peers for the evaluation table: Pop (most popular unseen items), SASRec-CE and EASE, ranked over the whole catalog.

Run as ``m6gen baselines --out runs/baselines`` (``m6gen.commands.baselines``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m6gen.files import write_atomic

if TYPE_CHECKING:
    from m6gen.baselines.ease import EASEConfig
    from m6gen.baselines.sasrec import SASRec, SASRecConfig

METHODS = ("Pop", "SASRec", "EASE")
DEFAULT_METHODS = ("Pop", "SASRec")


def pop_rank(popularity: np.ndarray, seen: Sequence[set[int] | np.ndarray], k: int | None = None) -> list[np.ndarray]:
    """Most popular items each user has not seen, best first.

    Args:
        popularity: (n_items,) train counts (``item_popularity``); ties go to the lower item index.
        seen: per user, items to leave out (the user's history).
        k: list length; None ranks every unseen item (full ranking).
    """
    pop = np.asarray(popularity).reshape(-1)
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be an integer >= 1 or None, got {k!r}")
    order = np.argsort(-pop, kind="stable")  # stable: equal counts keep index order
    out = []
    for s in seen:
        s_arr = np.fromiter(s, dtype=np.int64) if isinstance(s, set) else np.asarray(s, dtype=np.int64).reshape(-1)
        if k is not None and len(s_arr) < k:  # enough candidates among the top k + |seen|: skip the full isin
            head = order[: k + len(s_arr)]
            out.append(head[~np.isin(head, s_arr)][:k])
        else:
            keep = order[~np.isin(order, s_arr)]
            out.append(keep if k is None else keep[:k])
    return out


def _evaluate(ranked, targets, seen, user_freq, n_users, n_items, features, ks) -> dict[str, float]:
    from m6gen.ranking.metrics import evaluate_rankings

    return evaluate_rankings(
        ranked, targets, ks=ks, features=features, user_freq=user_freq, n_users=n_users, n_items=n_items, seen=seen
    )


def split_fingerprint(split) -> str:
    """12 hex digits naming a split's training interactions: a saved SASRec is reused only on the same ones."""
    import hashlib

    text = "\n".join(f"{u}:{','.join(map(str, split.train[u]))}" for u in split.users)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def recorded_split(sasrec_folder: str | Path) -> str | None:
    """The training interactions' fingerprint (:func:`split_fingerprint`) that ``m6gen baselines`` or
    ``eval`` recorded beside a SASRec it saved (``../baselines.json``); None where none is recorded."""
    record = Path(sasrec_folder) / ".." / "baselines.json"
    if not record.is_file():
        return None
    return json.loads(record.read_text(encoding="utf-8")).get("train_split")


def run_baselines(
    dataset_path: str | Path | None = None,
    *,
    config: SASRecConfig | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    ks: Sequence[int] = (5, 10, 20),
    max_users: int | None = None,
    out_dir: str | Path | None = None,
    model: SASRec | None = None,
    threads: int | None = 1,
    loaded: tuple[Any, Any] | None = None,
    progress: bool = True,
    ease_config: EASEConfig | None = None,
) -> dict[str, Any]:
    """Train and evaluate the peers on one leave-one-out split, whole catalog ranked, history items excluded.

    Args:
        dataset_path: data folder (None: ``default_data_dir()``); histories use ``build_histories`` defaults.
        config: SASRec settings (None: ``SASRecConfig()``); early stopping on validation NDCG@10.
        methods: any of ``METHODS``.
        max_users: evaluate only the first N users (training always uses every user's train items).
        out_dir: if given, write ``baselines_valid``/``baselines_test`` tables (.md/.csv/.json),
            ``baselines.json`` (this function's result) and the SASRec and EASE models there.
        model: an already trained SASRec to evaluate instead of training one.
        threads: torch CPU threads while this runs (restored after); None leaves torch's setting.
            1 is the default because on a shared 2-core machine 2 threads ran a step 8x slower.
        loaded: ``(dataset, split)`` already read by the caller with its own data options
            (format, title field, dedupe, min history); ``dataset_path`` is then only recorded.
        ease_config: EASE's settings (None: ``EASEConfig()``); fitted on the training interactions.

    Returns
    -------
    ``{"valid": {method: metrics}, "test": {method: metrics}, "sasrec": {...training facts...},
    "data": {...counts...}, "users_evaluated": n}``.
    """
    from m6gen.data import build_histories, item_popularity, leave_one_out, load_dataset, summary, user_frequency
    from m6gen.ranking.metrics import write_results
    from m6gen.ranking.rerank import ItemFeatures

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if loaded is not None:
        ds, split = loaded
    else:
        ds = load_dataset(dataset_path)
        split = leave_one_out(build_histories(ds))
    n_items = len(ds.catalog)
    users = split.users if max_users is None else split.users[:max_users]
    popularity = item_popularity(split, n_items)
    user_freq = user_frequency(split, n_items)
    genres = [list(it.genres) for it in ds.catalog]
    features = ItemFeatures.from_genres(genres, popularity) if any(genres) else None
    kmax = max(ks)
    stages = {
        "valid": ([split.valid_history(u) for u in users], np.array([split.valid[u] for u in users])),
        "test": ([split.test_history(u) for u in users], np.array([split.test[u] for u in users])),
    }
    result: dict[str, Any] = {"valid": {}, "test": {}, "data": summary(ds, split), "users_evaluated": len(users)}

    def add(method: str, rank_fn) -> None:
        for stage, (hist, targets) in stages.items():
            seen = [set(h) for h in hist]
            result[stage][method] = _evaluate(
                rank_fn(hist, seen), targets, seen, user_freq, len(split.train), n_items, features, ks
            )

    if "Pop" in methods:
        add("Pop", lambda hist, seen: pop_rank(popularity, seen, kmax))
    if "SASRec" in methods:
        import torch

        from m6gen.baselines.sasrec import SASRecConfig, fit

        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        trained_here = model is None
        try:
            if model is None:
                # the best model so far is kept (and a killed run resumes) in <out>/sasrec.partial
                partial = Path(out_dir) / "sasrec.partial" if out_dir is not None else None
                model = fit(split, n_items, config or SASRecConfig(), valid=True, progress=progress, checkpoint=partial)
            add("SASRec", lambda hist, seen: model.recommend(hist, kmax, exclude=seen))
        finally:
            torch.set_num_threads(before)
        result["sasrec"] = {
            "config": asdict(model.config),
            "train_seconds": round(model.train_seconds, 1),
            "best_epoch": model.best_epoch,
            "epochs_run": model.log[-1]["epoch"] if model.log else None,
            "stopped": model.stopped,
            "log": model.log,
        }
    if "EASE" in methods:
        from m6gen.baselines.ease import EASE

        ease = EASE.fit([split.train[u] for u in split.users], n_items, ease_config)
        add("EASE", lambda hist, seen: ease.recommend(hist, kmax, exclude=seen))
        result["ease"] = {"config": asdict(ease.config)}
    if out_dir is not None:
        out = Path(out_dir)
        for stage in ("valid", "test"):
            write_results(out / f"baselines_{stage}", result[stage])
        if "SASRec" in methods and trained_here:  # a model given is already saved (re-saving would look like a new one)
            model.save(out / "sasrec")
            shutil.rmtree(out / "sasrec.partial", ignore_errors=True)  # finished: the resume state is not needed
        if "EASE" in methods:
            ease.save(out / "ease")
        text = json.dumps(
            {
                **result,
                "dataset_path": str(dataset_path) if dataset_path else None,
                "train_split": split_fingerprint(split),
            },
            indent=2,
        )
        write_atomic(out / "baselines.json", text)
    return result
