"""The frozen collaborative item embeddings behind ``{{ it.cf }}``: read, checked and fingerprinted."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m6gen.files import UNREADABLE, why_unreadable
from m6gen.model import ModelError

TABLE_KEYS = ("embeddings", "item_embeddings", "weight")  # tried in a .safetensors file with several tensors


class CollaborativeError(ModelError):
    """A collaborative embedding source is missing or does not fit the catalog; the message says which."""


@dataclass(frozen=True)
class ItemTable:
    """One vector per catalog item (rows in catalog order) and which rows carry information."""

    vectors: np.ndarray  # (n_items, d) float32
    known: np.ndarray  # (n_items,) bool: False for items with no trained vector (new items, zero rows)
    source: str  # where the vectors came from, as given
    fingerprint: str  # sha1 of the vectors' bytes and shape, 12 hex digits

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def fingerprint(vectors: np.ndarray) -> str:
    digest = hashlib.sha1(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    digest.update(str(vectors.shape).encode())
    return digest.hexdigest()[:12]


def _read_sasrec(folder: Path) -> np.ndarray:
    """A saved SASRec's item embedding table, padding row dropped (item i is row i + 1 there)."""
    import torch

    try:
        state = torch.load(folder / "sasrec.pt", map_location="cpu", weights_only=True)
        return state["item_emb.weight"][1:].float().numpy()
    except UNREADABLE as err:
        raise CollaborativeError(
            f"collaborative source {folder}: sasrec.pt is not a readable saved SASRec ({why_unreadable(err)})"
        ) from None


def _read_safetensors(path: Path) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.torch import load_file  # torch's reader: it also reads bf16 tables, which numpy cannot

    try:
        tensors = {key: t.float().numpy() for key, t in load_file(str(path)).items()}
    except (SafetensorError, *UNREADABLE) as err:
        raise CollaborativeError(
            f"collaborative source {path}: not a readable .safetensors file ({why_unreadable(err)})"
        ) from None
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    for key in TABLE_KEYS:
        if key in tensors:
            return tensors[key]
    raise CollaborativeError(
        f"collaborative source {path}: {len(tensors)} tensors ({', '.join(sorted(tensors))}); "
        f"name the item table one of {', '.join(TABLE_KEYS)} or save it alone"
    )


def read_vectors(source: str | Path) -> np.ndarray:
    """The raw (rows, d) matrix of a SASRec folder, a ``.npy`` or a ``.safetensors`` file."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "sasrec.pt").is_file():
            raise CollaborativeError(
                f"collaborative source {path}: no sasrec.pt there (give a saved SASRec folder, e.g. "
                "<out>/sasrec of `m6gen baselines --out <out>`, or a .npy/.safetensors items x d file)"
            )
        return _read_sasrec(path)
    if not path.is_file():
        raise CollaborativeError(f"collaborative source {path}: no such file or folder")
    if path.suffix == ".npy":
        try:
            vectors = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise CollaborativeError(f"collaborative source {path}: not a numeric .npy array ({err})") from None
        except (EOFError, OSError) as err:  # an empty or cut-off file
            raise CollaborativeError(f"collaborative source {path}: not a readable .npy file ({err})") from None
    elif path.suffix == ".safetensors":
        vectors = _read_safetensors(path)
    else:
        raise CollaborativeError(
            f"collaborative source {path}: unknown file type {path.suffix or '(none)'!r}; "
            "expected a SASRec folder, .npy or .safetensors"
        )
    return vectors


def load_item_table(source: str | Path, n_items: int, trained: np.ndarray | None = None) -> ItemTable:
    """The item table of ``source`` for a catalog of ``n_items``; a one-line error when it does not fit.

    ``trained``: (n_items,) bool, the items that have a training interaction in the split the
    run trains on; the others (e.g. new items held out by ``--new-items``) get no token, since their
    vectors were never trained. All-zero and non-finite rows count as unknown too.
    """
    vectors = read_vectors(source)
    # real numbers only: a complex table would lose its imaginary part without a word
    if vectors.ndim != 2 or vectors.dtype.kind not in "fiu" or vectors.shape[1] == 0:
        raise CollaborativeError(
            f"collaborative source {source}: expected a 2-D real items x d matrix (d >= 1), got shape "
            f"{vectors.shape} of {vectors.dtype}"
        )
    if vectors.shape[0] != n_items:
        raise CollaborativeError(
            f"collaborative source {source}: {vectors.shape[0]} rows, the catalog has {n_items} items "
            f"(expected shape ({n_items}, d), rows in catalog order)"
        )
    vectors = vectors.astype(np.float32, copy=False)
    known = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    if not known.any():  # a "hybrid" run without a single collaborative token would pass unnoticed
        raise CollaborativeError(f"collaborative source {source}: no usable row: every row is all zero or not finite")
    if trained is not None:
        known &= np.asarray(trained, dtype=bool)
    vectors = np.where(known[:, None], vectors, 0.0).astype(np.float32)
    return ItemTable(vectors, known, str(source), fingerprint(vectors))
