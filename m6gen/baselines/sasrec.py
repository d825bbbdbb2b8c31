"""SASRec (Kang & McAuley, 2018) trained with full softmax cross-entropy over all items: the strong sequential peer.

Run on MovieLens-100K (Pop and SASRec, valid and test, whole catalog ranked)::

    python -m m6gen.baselines.run --out runs/baselines

Conventions: item ``i`` of the catalog is embedding row ``i + 1``; row 0 is padding.
Sequences are padded on the left and positions count from the right end, so the most recent
item always has position ``max_len - 1``: the same history gives the same scores whatever
it is batched with (no padding effects). Training sees ``split.train`` only; validation
predicts ``split.valid`` from the train items, test predicts ``split.test`` from
``split.test_history(u)`` (train items, then the valid item).
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from m6gen.baselines.config import SASRecConfig  # noqa: F401  (re-exported)
from m6gen.data import Split
from m6gen.files import write_atomic
from m6gen.ranking.metrics import per_user_scores
from m6gen.ranking.top import mask_items, top_k

History = Sequence[int] | np.ndarray


class _Block(nn.Module):
    """One SASRec block as in the original code: residuals start from the layer-normed input."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln_attn, self.ln_ffn = nn.LayerNorm(d, eps=1e-8), nn.LayerNorm(d, eps=1e-8)
        self.q, self.kv = nn.Linear(d, d), nn.Linear(d, 2 * d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        h = self.n_heads
        q_in = self.ln_attn(x)  # queries are normalized, keys/values are not (Kang & McAuley)
        q = self.q(q_in).view(B, L, h, d // h).transpose(1, 2)  # (B, h, L, d/h)
        k, v = self.kv(x).view(B, L, 2, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, L, d/h)
        # plain attention: on CPU it beats scaled_dot_product_attention with a boolean mask and dropout
        w = (q @ k.transpose(-1, -2)) * (d // h) ** -0.5  # (B, h, L, L)
        w = F.dropout(w.masked_fill(~allowed, float("-inf")).softmax(-1), self.dropout, self.training)
        x = q_in + (w @ v).transpose(1, 2).reshape(B, L, d)
        x = self.ln_ffn(x)
        return x + self.ffn(x)


class SASRecModel(nn.Module):
    """Causal self-attention over item-id sequences; scores are dot products with the (tied) item embeddings."""

    def __init__(self, n_items: int, config: SASRecConfig):
        super().__init__()
        d, self.max_len = config.hidden, config.max_len
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(d, config.n_heads, config.dropout) for _ in range(config.n_blocks))
        self.ln_out = nn.LayerNorm(d, eps=1e-8)
        for p in self.parameters():  # the reference implementation's init
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position: (B, W) embedding rows, 0 = left padding, W <= max_len -> (B, W, d)."""
        B, W = seq.shape
        if W > self.max_len:
            raise ValueError(f"sequence width {W} exceeds max_len {self.max_len}")
        real = seq > 0  # (B, W)
        pos = torch.arange(self.max_len - W, self.max_len, device=seq.device)  # right-aligned positions
        x = self.item_emb(seq) * self.item_emb.embedding_dim**0.5 + self.pos_emb(pos)
        x = self.drop(x) * real.unsqueeze(-1)
        causal = torch.ones(W, W, dtype=torch.bool, device=seq.device).tril()
        # a key is visible if it is earlier and real; a padded query sees only itself (no all-masked rows, no NaN)
        allowed = causal & (real.unsqueeze(1) | torch.eye(W, dtype=torch.bool, device=seq.device))  # (B, W, W)
        allowed = allowed.unsqueeze(1)  # (B, 1, W, W)
        for block in self.blocks:
            x = block(x, allowed) * real.unsqueeze(-1)
        return self.ln_out(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., n_items) scores for catalog items 0..n-1 (padding row left out)."""
        return hidden @ self.item_emb.weight[1:].T


def _pad_left(histories: Sequence[History], width: int) -> torch.Tensor:
    """Last ``width`` items of each history as embedding rows (item + 1), left-padded with 0 -> (B, width)."""
    out = np.zeros((len(histories), width), dtype=np.int64)
    for r, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-width:] if width else np.zeros(0, np.int64)
        if len(tail):
            out[r, width - len(tail) :] = tail + 1
    return torch.from_numpy(out)


def training_windows(train: dict[str, list[int]], max_len: int, all_windows: bool = True) -> np.ndarray:
    """(N, max_len + 1) embedding rows, left-padded: each window's items predict their successors.

    Windows are cut from the end of each train sequence so the last one ends at the most
    recent train item; windows overlap by one item so every train transition is used once.
    """
    rows = []
    for items in train.values():
        seq = np.asarray(items, dtype=np.int64) + 1
        end = len(seq)
        while end >= 2:  # a window needs an input and a target
            rows.append(seq[max(0, end - max_len - 1) : end])
            if not all_windows:
                break
            end -= max_len
    out = np.zeros((len(rows), max_len + 1), dtype=np.int64)
    for r, w in enumerate(rows):
        out[r, max_len + 1 - len(w) :] = w
    return out


def _check_items(histories: Sequence[History], n_items: int) -> None:
    for u, h in enumerate(histories):
        a = np.asarray(h, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() >= n_items):
            raise ValueError(f"history {u} holds item indices outside [0, {n_items}): range [{a.min()}, {a.max()}]")


class SASRec:
    """A trained SASRec-CE: score, recommend and save. Build with ``fit`` or ``SASRec.load``."""

    def __init__(self, n_items: int, config: SASRecConfig, model: SASRecModel | None = None):
        self.n_items, self.config = n_items, config
        self.model = model if model is not None else SASRecModel(n_items, config)
        self.log: list[dict[str, float]] = []  # one entry per validation check
        self.train_seconds = 0.0
        self.best_epoch = 0
        self.stopped = "epochs"  # why training ended (see fit)

    @torch.no_grad()
    def score(self, histories: Sequence[History]) -> np.ndarray:
        """(users, n_items) float32 logits of the next item after each history (empty history allowed)."""
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        for start, hidden in self._batch_states(histories, self.config.eval_batch_size):
            out[start : start + len(hidden)] = self.model.logits(hidden).numpy()
        return out

    @torch.no_grad()
    def states(self, histories: Sequence[History], batch_size: int | None = None) -> np.ndarray:
        """(users, hidden) float32: the state after each history's most recent item, which ``score``
        turns into logits and a collaborative state token starts from."""
        out = np.empty((len(histories), self.config.hidden), dtype=np.float32)
        for start, hidden in self._batch_states(histories, batch_size or self.config.eval_batch_size):
            out[start : start + len(hidden)] = hidden.numpy()
        return out

    def _batch_states(self, histories: Sequence[History], batch_size: int):
        """Yields (first row, (B, hidden) states) batch by batch, in float32."""
        _check_items(histories, self.n_items)
        self.model.eval()
        # float32 even inside a caller's CPU autocast (e.g. m6gen train's validation): same scores everywhere
        with torch.autocast("cpu", enabled=False):
            for s in range(0, len(histories), batch_size):
                batch = histories[s : s + batch_size]
                # pad only to the longest history in the batch: saves work, and scores do not depend on it
                width = max(1, min(self.config.max_len, max(len(h) for h in batch)))
                yield s, self.model(_pad_left(batch, width))[:, -1]

    def recommend(
        self, histories: Sequence[History], k: int, exclude: Sequence[set[int] | History] | None = None
    ) -> list[np.ndarray]:
        """Top-``k`` item indices per user, best first, over the whole catalog.

        Args:
            exclude: items never recommended to each user; None excludes the user's history.
                Pass empty sets to exclude nothing.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        exclude = histories if exclude is None else exclude
        return top_k(mask_items(self.score(histories), exclude), k)

    def score_items(
        self, histories: Sequence[History], candidates: Sequence[History], log_probs: bool = True
    ) -> list[np.ndarray]:
        """Scores of each user's candidate items, for blending into candidate ranking.

        Returns one float array per user, aligned with ``candidates[u]``: log p(item | history)
        under the full-catalog softmax (``log_probs=True``, comparable across users) or raw logits.
        """
        if len(candidates) != len(histories):
            raise ValueError(f"candidates has {len(candidates)} entries for {len(histories)} histories")
        _check_items(candidates, self.n_items)
        scores = self.score(histories)
        if log_probs:
            scores = torch.log_softmax(torch.from_numpy(scores), dim=-1).numpy()
        return [scores[u, np.asarray(c, dtype=np.int64)] for u, c in enumerate(candidates)]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``sasrec.pt`` (state_dict) and ``sasrec.json`` (config, n_items, training log), each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "n_items": self.n_items,
            "config": asdict(self.config),
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "log": self.log,
            "stopped": self.stopped,
        }
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        write_atomic(folder / "sasrec.pt", buf.getvalue())
        write_atomic(folder / "sasrec.json", json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> SASRec:
        folder = Path(folder)
        meta = json.loads((folder / "sasrec.json").read_text(encoding="utf-8"))
        rec = cls(meta["n_items"], SASRecConfig(**meta["config"]))
        rec.model.load_state_dict(torch.load(folder / "sasrec.pt", map_location="cpu", weights_only=True))
        rec.best_epoch, rec.train_seconds, rec.log = meta["best_epoch"], meta["train_seconds"], meta["log"]
        rec.stopped = meta.get("stopped", "epochs")
        return rec


def validation_ndcg(rec: SASRec, split: Split, k: int = 10) -> float:
    """NDCG@k of ``split.valid`` from the train items over the whole catalog, history items excluded."""
    users = split.users
    histories = [split.valid_history(u) for u in users]
    targets = np.array([split.valid[u] for u in users])
    return float(per_user_scores(rec.recommend(histories, k), targets, k)["NDCG"].mean())


@dataclass
class _FitState:
    """Where a SASRec training run stands: enough to resume it after a kill at the same epoch."""

    epoch: int = 0
    best: float = -1.0
    bad: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"  # why it ended: epochs, patience or time budget


def fit(
    split: Split,
    n_items: int,
    config: SASRecConfig | None = None,
    valid: bool = True,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
) -> SASRec:
    """Train SASRec-CE on ``split.train`` only.

    Args:
        valid: check validation NDCG@10 every ``config.eval_every`` epochs, stop after
            ``config.patience`` checks without improvement and keep the best weights.
            False: train ``config.epochs`` epochs and never read ``split.valid``.
        progress: show a tqdm bar over epochs.
        checkpoint: a folder where the best model so far is saved (a loadable SASRec) and the
            training state after every epoch, each atomically; a run killed and started again
            with the same folder and config continues from its last epoch.

    Returns
    -------
    The trained ``SASRec``; ``.log`` holds the validation checks, ``.train_seconds`` the wall time,
    ``.stopped`` why training ended.
    """
    from tqdm.auto import tqdm

    config = config or SASRecConfig()
    _check_items(list(split.train.values()), n_items)
    if valid and any(split.valid[u] in set(split.train[u]) for u in split.users):
        warnings.warn(
            "some validation targets are in their user's train items (dedupe='keep'?); "
            "excluding history removes them, so validation NDCG is underestimated",
            stacklevel=2,
        )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    rec = SASRec(n_items, config)
    windows = torch.from_numpy(training_windows(split.train, config.max_len, config.all_windows))
    if len(windows) == 0:
        raise ValueError("no training windows: every train sequence has fewer than 2 items")
    opt = torch.optim.AdamW(rec.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    state, best_state = _FitState(), None
    folder = Path(checkpoint) if checkpoint is not None else None
    from m6gen.baselines.run import split_fingerprint  # here: run.py imports this module

    interactions = split_fingerprint(split)
    if folder is not None and (folder / "resume.pt").is_file():
        resumed = _resume(folder, rec, opt, config, interactions)
        if resumed is not None:  # else the fresh start above stands
            state, best_state, rng = resumed
    start = time.perf_counter() - state.seconds
    bar = tqdm(range(state.epoch + 1, config.epochs + 1), desc="SASRec", disable=not progress, leave=False)
    for epoch in bar:
        loss = _train_epoch(rec.model, opt, windows, rng, config.batch_size)
        state.epoch, state.seconds = epoch, time.perf_counter() - start
        out_of_time = config.time_budget_s is not None and state.seconds > config.time_budget_s
        if valid and (epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time):
            ndcg = validation_ndcg(rec, split)
            rec.log.append({"epoch": epoch, "loss": loss, "valid_NDCG@10": ndcg, "seconds": state.seconds})
            bar.set_postfix(loss=f"{loss:.3f}", ndcg=f"{ndcg:.4f}", best=f"{max(state.best, ndcg):.4f}")
            if ndcg > state.best:
                state.best, state.bad, rec.best_epoch = ndcg, 0, epoch
                best_state = copy.deepcopy(rec.model.state_dict())
                if folder is not None:
                    rec.train_seconds = state.seconds
                    rec.save(folder)  # the best model so far: what a killed run leaves
            else:
                state.bad += 1
        else:
            rec.best_epoch = epoch
            bar.set_postfix(loss=f"{loss:.3f}")
        if valid and state.bad >= config.patience:
            state.stopped = f"patience ({config.patience} checks without a better validation NDCG@10)"
        elif out_of_time:
            state.stopped = f"time budget ({config.time_budget_s:g} s)"
        if folder is not None:
            _save_resume(folder, rec, opt, state, best_state, rng, interactions)
        if state.stopped != "epochs":
            break
    bar.close()
    if best_state is not None:
        rec.model.load_state_dict(best_state)
    rec.model.eval()
    rec.train_seconds, rec.stopped = time.perf_counter() - start, state.stopped
    return rec


def _train_epoch(model, opt, windows: torch.Tensor, rng: np.random.Generator, batch_size: int) -> float:
    """One pass over the training windows in a fresh random order; the mean loss per target."""
    model.train()
    total, count = 0.0, 0
    for idx in torch.from_numpy(rng.permutation(len(windows))).split(batch_size):
        w = windows[idx]  # (B, max_len + 1)
        inp, tgt = w[:, :-1], w[:, 1:]  # (B, L) each
        mask = (inp > 0) & (tgt > 0)  # positions with an input and a target
        hidden = model(inp)[mask]  # (M, d): only real positions pay for the full softmax
        loss = F.cross_entropy(model.logits(hidden), tgt[mask] - 1)  # (M, n_items) vs (M,)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, count = total + loss.item() * len(hidden), count + len(hidden)
    return total / count


def _save_resume(folder: Path, rec: SASRec, opt, state: _FitState, best_state, rng, interactions: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(
        {
            "config": asdict(rec.config),
            "train_split": interactions,
            "state": asdict(state),
            "model": rec.model.state_dict(),
            "optimizer": opt.state_dict(),
            "best": best_state,
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "log": rec.log,
            "best_epoch": rec.best_epoch,
        },
        buf,
    )
    write_atomic(folder / "resume.pt", buf.getvalue())


def _resume(folder: Path, rec: SASRec, opt, config: SASRecConfig, interactions: str):
    """The state of a killed training in ``folder``, continued only on the same training interactions;
    None (and its checkpoint removed) where it saw others: another data set, or the new items that
    --new-items holds out, so training starts again."""
    saved = torch.load(folder / "resume.pt", map_location="cpu", weights_only=False)
    if saved["config"] != asdict(config):
        raise ValueError(f"{folder}: holds a SASRec run with another configuration; delete it or choose another folder")
    if saved.get("train_split") != interactions:
        print(
            f"note: {folder / 'resume.pt'} was a SASRec training on other interactions; starting again",
            file=sys.stderr,
        )
        (folder / "resume.pt").unlink()
        return None
    rec.model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    rng = np.random.default_rng()
    rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch_rng"])
    rec.log, rec.best_epoch = saved["log"], saved["best_epoch"]
    return _FitState(**saved["state"]), saved["best"], rng


def load_sasrec(folder: str | Path, n_items: int):
    """A saved SASRec for a catalog of ``n_items``; a one-line :class:`ModelError` when it is not one."""
    from m6gen.files import UNREADABLE, why_unreadable
    from m6gen.model import ModelError

    if not (Path(folder) / "sasrec.json").is_file():
        raise ModelError(f"sasrec {folder}: no saved SASRec there (sasrec.json missing)")
    try:
        sasrec = SASRec.load(folder)
    except UNREADABLE as err:  # e.g. a copy cut short
        raise ModelError(f"sasrec {folder}: not a readable saved SASRec ({why_unreadable(err)})") from None
    if sasrec.n_items != n_items:
        raise ModelError(f"sasrec {folder}: trained on {sasrec.n_items} items, the catalog has {n_items}")
    return sasrec
