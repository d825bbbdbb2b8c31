"""Training: LoRA-tune a causal LM to continue a prompt with the next item's title (peft + accelerate)."""
