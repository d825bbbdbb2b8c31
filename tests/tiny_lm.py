"""Tiny random causal LMs and tokenizers built in memory for tests: no downloads, fast."""

from __future__ import annotations

from functools import cache

CORPUS = [
    "Toy Story (1995)",
    "Toy Soldiers (1991)",
    "Alien (1979)",
    "Aliens (1986)",
    "Alien 3 (1992)",
    "The Godfather (1972)",
    "The Godfather: Part II (1974)",
    "Heat (1995)",
    "Casino (1995)",
    "Amélie (2001)",
    "千と千尋の神隠し (2001)",
    "Crouching Tiger, Hidden Dragon (2000)",
    "🎬 Emoji Movie (2017)",
    "A user watched these movies, in order:",
    "Next:",
    "- ",
    "\n",
]


@cache
def _bpe_backend(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<pad>", "<eos>", "<bos>"]
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind == "sentencepiece":  # Unigram with the metaspace "▁", as sentencepiece models do
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=200, special_tokens=specials, unk_token="<pad>", show_progress=False
        )
    else:
        raise ValueError(kind)
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok.to_str()


def make_tokenizer(kind: str = "bytelevel", extra_text: list[str] | None = None):
    """A PreTrainedTokenizerFast with EOS/PAD/BOS, byte-level BPE (any script) or sentencepiece-style."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_bpe_backend(kind))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", bos_token="<bos>")


def make_model(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2, model_type: str = "llama"):
    """A tiny random causal LM (fp32, eval mode): a Llama, or another architecture of the same shape
    (grouped-query attention: 4 query heads, 2 key/value heads; no sliding window)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    extra = {"sliding_window": None} if model_type in ("mistral", "qwen2", "qwen3") else {}
    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=False,
        **extra,
    )
    model = AutoModelForCausalLM.from_config(cfg)
    # Larger logits than the default init so that beam orders are decisive, not near-ties.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20)
    return model.eval()
