"""Where and in which dtype a model runs: --device and --dtype resolution, without a model."""

import pytest
import torch

from m6gen.model import ModelError, resolve_device, resolve_dtype

HAS_ACCELERATOR = torch.accelerator.is_available()


def test_cpu_is_always_there():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)
    assert resolve_dtype("float32", "cpu") == torch.float32 and resolve_dtype("bf16", "cpu") == torch.bfloat16


@pytest.mark.skipif(HAS_ACCELERATOR, reason="auto picks the accelerator on this machine")
def test_auto_without_an_accelerator_is_the_cpu():
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not HAS_ACCELERATOR, reason="needs a GPU or other accelerator")
def test_auto_with_an_accelerator_is_that_accelerator():
    assert resolve_device("auto").type == torch.accelerator.current_accelerator().type


@pytest.mark.skipif(HAS_ACCELERATOR, reason="the machine has an accelerator")
def test_a_missing_gpu_is_a_clear_error():
    with pytest.raises(ModelError, match=r"device 'cuda': not available here \(torch sees only the cpu\)"):
        resolve_device("cuda")
    with pytest.raises(ModelError, match="device 'mps:0': not available here"):
        resolve_device("mps:0")


def test_a_misspelt_device_is_a_clear_error():
    with pytest.raises(ModelError, match="device 'gpu0': not a device name"):
        resolve_device("gpu0")


def test_auto_dtype_follows_the_device():
    assert resolve_dtype("auto", "meta") == torch.float32  # not CUDA, not the CPU: fp32 unless asked for


def test_a_folder_that_holds_no_model_is_named(tmp_path):
    """Once transformers' tokenizer error ("Couldn't instantiate the backend tokenizer ..."), naming no folder."""
    from m6gen.model import resolve_model

    (tmp_path / "x.txt").write_text("not a model")
    with pytest.raises(ModelError, match=rf"{tmp_path}: neither a model folder .* nor an m6gen run"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")  # a model folder: left to transformers
    assert resolve_model(str(tmp_path)) == (str(tmp_path), None)


def test_a_file_that_is_not_a_gguf_is_named_not_handed_to_transformers(tmp_path):
    """Once a traceback: a file holding "196" parsed as a JSON config ("argument of type 'int' is not iterable")."""
    from m6gen.model import resolve_model

    for name, text in (("users.txt", "196\n"), ("config.json", "{}")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ModelError, match=rf"{tmp_path / name}: a file, not a model; give a model folder"):
            resolve_model(str(tmp_path / name))


def test_a_missing_run_under_an_existing_folder_is_a_path_not_a_hub_id(tmp_path, monkeypatch):
    """ "runs/my-run" where ./runs exists is a mistyped path, said at once; "org/name" stays a hub id."""
    from m6gen.model import resolve_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelError, match="runs/lora-default: model path does not exist"):
        resolve_model("runs/lora-default")
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)


def test_a_hub_id_that_cannot_be_downloaded_is_refused_at_once(monkeypatch):
    """A mistyped --model took 50 s of transformers' retries and logged a stray line before its error."""
    import socket

    from huggingface_hub import constants

    from m6gen import model as m

    def unreachable(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    m.hub_problem.cache_clear()
    with pytest.raises(
        ModelError, match=r"^nope-org/nope_model: no such folder here, not in the Hugging Face cache, and "
    ):
        m.load_tokenizer("nope-org/nope_model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    m.hub_problem.cache_clear()
    with pytest.raises(ModelError, match=r"not in the Hugging Face cache \(HF_HUB_OFFLINE is set\)"):
        m.load_model("nope-org/nope_model")
    m.hub_problem.cache_clear()
