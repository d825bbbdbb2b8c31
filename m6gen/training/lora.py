"""LoRA on a base model: which modules it adapts (per-architecture defaults, checked against the
model's linear layers) and the peft model itself (:func:`attach_lora`)."""

from __future__ import annotations

from m6gen.config import TrainConfig, TrainError

LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS = {
    **{
        t: LLAMA_LIKE
        for t in (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "smollm3",
            "olmo",
            "olmo2",
            "granite",
            "phi",
        )
    },
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def linear_module_names(model) -> list[str]:
    """Short names (last dotted part) of the model's linear layers, the output layer excluded."""
    import torch

    head = model.get_output_embeddings()
    names = {
        n.rsplit(".", 1)[-1]
        for n, m in model.named_modules()
        if m is not head and (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
    }
    return sorted(names)


def resolve_target_modules(model, requested: list[str] | None) -> list[str]:
    """The LoRA target modules: ``requested`` (checked against the model) or the architecture's default."""
    available = linear_module_names(model)
    if requested is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

        model_type = model.config.model_type
        wanted = DEFAULT_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type) or ["all-linear"]
        present = [m for m in wanted if m in available]
        return present if present else ["all-linear"]
    if requested == ["all-linear"]:
        return requested
    missing = [m for m in requested if m not in available]
    if missing:
        raise TrainError(
            f"LoRA target module(s) {', '.join(missing)} not in {model.config.model_type} model; "
            f"its linear layers: {', '.join(available)} (or all-linear)"
        )
    return list(requested)


def attach_lora(cfg: TrainConfig, base, collaborative=None):
    """The peft model: LoRA on ``cfg.target_modules`` (and ``--init-adapter``'s weights); the projectors of
    ``collaborative``'s tokens (a ``CollaborativeEmbedding``) and its readout train and are saved with the adapter."""
    from peft import LoraConfig, get_peft_model

    from m6gen.hybrid.soft_tokens import PROJECTOR, READOUT, STATE_PROJECTOR

    projectors = None
    if collaborative is not None:
        projectors = [PROJECTOR, STATE_PROJECTOR] if collaborative.has_states else [PROJECTOR]
        projectors += [READOUT] if collaborative.readout is not None else []

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules,
        task_type="CAUSAL_LM",
        modules_to_save=projectors,
    )
    peft_model = get_peft_model(base, lora)
    if cfg.cf_state_frozen:  # still saved with the adapter (its random start is not reproducible), never trained
        for name, param in peft_model.named_parameters():
            if f".{STATE_PROJECTOR}." in f".{name}.":
                param.requires_grad_(False)
    if cfg.init_adapter:
        from m6gen.training.run_folder import load_init_adapter

        load_init_adapter(peft_model, cfg.init_adapter, cfg)
    return peft_model
