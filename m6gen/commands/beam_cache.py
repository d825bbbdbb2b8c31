"""What ``m6gen eval`` computes per user, cached on disk: the beams (one JSONL file per model, template,
data options and decoding) and the prompt states the run's readout reads. Each file is appended as
users finish (a killed run resumes), shared among processes under ``torchrun`` (one shard each,
merged by the main process), and named by a fingerprint of what made it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np


def generate_cached(
    rec,
    users,
    histories,
    path: Path,
    progress: bool,
    profiles: dict | None = None,
    prior=None,
    prior_weight: float = 1.0,
    procs=None,
    allowed=None,
    readout_weight: float = 0.0,
    states_path: Path | None = None,
) -> dict[str, list[list[float]]]:
    """Beams per user, generated once and appended to ``path`` (JSONL); resumes after a kill.

    Each beam is [item, logprob, normalized, catalog, prior] (prior 0 without ``prior``).
    ``allowed``: the only items any user's beams may name (an index array; None: the catalog). Under
    ``torchrun`` (``procs``: :class:`~m6gen.commands.common.Processes`) each process generates every
    ``count``-th missing user into its own shard of ``path``, which the main process then appends.
    ``states_path``: a :func:`prompt_states_cached` file to which each user's prompt state, read at
    the search's own prefill, is appended too (not with a retriever: its prompts differ).
    """
    from m6gen.commands.common import Processes
    from m6gen.prompts import user_vars

    procs = procs or Processes()
    sink = _StatesSink(states_path, procs) if states_path is not None else None

    def beams(chunk_users, chunk_histories):
        states = {}  # row in the chunk -> its prompt state, as the search's batches read them

        def keep(rows, batch_states):
            states.update(zip(rows, batch_states))

        lists = rec.generate(
            chunk_histories,
            profiles=[user_vars(u, profiles) for u in chunk_users],
            allowed=None if allowed is None else [allowed] * len(chunk_users),
            prior=prior,
            prior_weight=prior_weight,
            readout_weight=readout_weight,
            on_states=keep if sink is not None else None,
        )
        if sink is not None:
            sink.append(chunk_users, [states[r] for r in range(len(chunk_users))])
        return [[[b.item, b.logprob, b.normalized, b.catalog, b.prior] for b in bl] for bl in lists]

    batching = {"batch_size": rec.config.batch_size, "progress": progress, "procs": procs}
    return cached_per_user(path, users, histories, beams, field="beams", desc="generating", **batching)


def prompt_states_cached(rec, users, histories, path: Path, progress: bool, profiles=None, procs=None) -> np.ndarray:
    """(users, width) float32: the model's state at the end of each user's prompt, where the search
    starts (what the run's readout reads), computed once and appended to ``path`` as the beams are.
    Stored exactly, as base64 of the float32 bytes."""
    from m6gen.prompts import user_vars

    def states(chunk_users, chunk_histories):
        profiles_ = [user_vars(u, profiles) for u in chunk_users]
        return [_encode_state(s) for s in rec.prompt_states(chunk_histories, profiles_)]

    batching = {"batch_size": rec.config.batch_size, "progress": progress, "procs": procs}
    cached = cached_per_user(path, users, histories, states, field="state", desc="prompt states", **batching)
    return np.stack([np.frombuffer(base64.b64decode(cached[u]), dtype="<f4") for u in users])


def _encode_state(state: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(state, dtype="<f4").tobytes()).decode("ascii")


class _StatesSink:
    """Appends prompt states read at a search's prefill to a :func:`prompt_states_cached` file (this
    process's shard under ``torchrun``), each user once: after a kill between a batch's states and its
    beams, the redone batch's states are not written twice. The states pass then computes only the
    users still missing."""

    def __init__(self, path: Path, procs):
        from m6gen.outputs import done_users

        if procs.is_main:
            merge_shards(path)  # a killed sharded run's states count as done
        procs.wait_for_everyone()
        self.target = shard_path(path, procs)
        self.done = {u for p in {path, self.target} for u in done_users(p, fix="delete it to compute them again")}

    def append(self, users: list[str], states: list[np.ndarray]) -> None:
        from m6gen.files import append_synced

        new = [(u, s) for u, s in zip(users, states) if u not in self.done]
        lines = [json.dumps({"user_id": u, "state": _encode_state(s)}) + "\n" for u, s in new]
        append_synced(self.target, "".join(lines))
        self.done.update(u for u, _ in new)


def shard_path(path: Path, procs) -> Path:
    """Where this process appends its share of ``path``'s users: ``path`` itself when alone."""
    return path if procs.count == 1 else path.with_name(f"{path.name}.shard{procs.index}of{procs.count}")


def cached_per_user(
    path: Path, users, inputs, compute, *, field: str, desc: str, batch_size: int, progress: bool, procs=None
) -> dict:
    """``{user: value}``: ``compute(users, inputs)`` for each user, a batch at a time, appended to
    ``path`` as JSONL lines ``{"user_id": ..., field: value}`` so a killed run resumes. Under ``torchrun``
    each process computes every ``count``-th missing user into its own shard, appended by the main one."""
    from tqdm.auto import tqdm

    from m6gen.commands.common import Processes
    from m6gen.files import append_synced as append
    from m6gen.outputs import done_users

    procs = procs or Processes()
    if procs.is_main:
        merge_shards(path)  # a killed sharded run's users count as done
    procs.wait_for_everyone()
    done = set(done_users(path, fix=f"delete it to compute those {field}s again"))
    todo = [(u, x) for u, x in zip(users, inputs) if u not in done][procs.index :: procs.count]
    target = shard_path(path, procs)
    share = len(users[procs.index :: procs.count])  # this process's part of the users, done ones included
    bar = tqdm(
        total=share,
        initial=max(share - len(todo), 0),
        desc=f"{desc}[{procs.index}]" if procs.count > 1 else desc,
        unit="user",
        disable=not progress,
    )
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        values = compute([u for u, _ in chunk], [x for _, x in chunk])
        append(target, "".join(json.dumps({"user_id": u, field: v}) + "\n" for (u, _), v in zip(chunk, values)))
        bar.update(len(chunk))
    bar.close()
    procs.wait_for_everyone()
    if procs.is_main:
        merge_shards(path)
    procs.wait_for_everyone()
    return {line["user_id"]: line[field] for line in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def merge_shards(path: Path) -> None:
    """Append every process's shard of ``path`` (``<name>.shard<i>of<n>``) to it, then delete them.

    Safe to redo after a kill at any point: a line cut short in ``path`` is dropped first, and a
    shard's users already in ``path`` (appended, but the shard not yet deleted) are not added twice.
    """
    import glob

    from m6gen.files import append_synced as append
    from m6gen.files import write_atomic

    shards = sorted(path.parent.glob(f"{glob.escape(path.name)}.shard*of*"))
    if not shards:
        return
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        write_atomic(path, text)
    have = {json.loads(line)["user_id"] for line in text.splitlines()}
    for shard in shards:
        lines = [x for x in shard.read_text(encoding="utf-8").splitlines(keepends=True) if x.endswith("\n")]
        new = [x for x in lines if json.loads(x)["user_id"] not in have]  # a line cut by a kill is left out
        append(path, "".join(new))
        have.update(json.loads(x)["user_id"] for x in new)
        shard.unlink()


WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt")
DATA_SUFFIXES = (".inter", ".item", ".user", ".jsonl", ".csv", ".data", ".dat")  # and the ml-100k u.* files
CONFIG_NAMES = ("m6gen_config.json", "adapter_config.json", "config.json", "sasrec.json")


def cache_fingerprint(model: str | None, template: Path, *others: str | Path | None, extra: str = "") -> str:
    """8 hex digits naming what made a beam cache, so another model's beams are never reused.

    Covers the contents of the model's weight and config files (a Hugging Face id as given), the
    template's text, the files of ``others`` (the retriever, the data folder) and ``extra`` (the data
    options). Contents, not paths or modification times, so a run folder that is copied, moved or
    touched keeps its caches. Outputs written into a run folder (tables, caches) do not count: data
    suffixes count only in ``others``, so an eval's ``eval_*.csv`` beside the model renews nothing.
    A prior searched with the beams is named apart, by :func:`prior_fingerprint`: so is the run's
    collaborative readout, which a plain search never reads.
    """
    import hashlib

    from m6gen.hybrid.placeholders import READOUT_FILE

    local = model is not None and Path(model).exists()
    parts = ["local" if local else str(model or "default"), Path(template).read_text(encoding="utf-8"), extra]
    for src, suffixes in ((model, WEIGHT_SUFFIXES), *((o, WEIGHT_SUFFIXES + DATA_SUFFIXES) for o in others)):
        path = Path(src) if src else None
        if path is None or not path.exists():
            continue
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for f in files:
            if f.is_file() and (f.suffix in suffixes or f.name in CONFIG_NAMES) and f.name != READOUT_FILE:
                parts.append(f"{f.name}:{_file_sha1(f)}")
    return hashlib.sha1("\n".join(parts).encode("utf-8")).hexdigest()[:8]


def _file_sha1(path: Path) -> str:
    import hashlib

    with path.open("rb") as f:  # well under a second for a run's adapter; seconds for a 1B model's weights
        return hashlib.file_digest(f, "sha1").hexdigest()


def prior_fingerprint(sasrec_folder: Path | None = None, code=None, files=()) -> str:
    """8 hex digits naming a prior searched with the beams, by content, so a copied SASRec keeps its
    caches and a retrained one (or a changed content peer, ``code``: its module; a refitted readout,
    ``files``: those that exist) does not."""
    import hashlib
    import inspect

    digest = hashlib.sha1()
    if sasrec_folder is not None:
        for f in sorted(Path(sasrec_folder).iterdir()):
            if f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.name in CONFIG_NAMES):
                digest.update(f.name.encode("utf-8") + f.read_bytes())
    if code is not None:
        digest.update(inspect.getsource(code).encode("utf-8"))
    for f in map(Path, files):
        if f.is_file():
            digest.update(f.name.encode("utf-8") + f.read_bytes())
    return digest.hexdigest()[:8]
