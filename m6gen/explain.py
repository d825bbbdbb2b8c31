"""M6-Rec's explanation task: the model says, in a sentence or two, why an item suits a history.

Used by ``m6gen chat`` (``why N``) and ``m6gen serve`` (``POST /explain``).
"""

from __future__ import annotations


def explain(
    model, tokenizer, history_titles: list[str], title: str, max_new_tokens: int = 40, sample: bool = False
) -> str:
    """M6-Rec's explanation task: free text from the model on why ``title`` suits this history."""
    import torch

    from m6gen.model import encode_prompts
    from m6gen.prompts import fallback_chat

    recent = ", ".join(history_titles[-10:])
    messages = [
        {"role": "system", "content": "You explain recommendations in one or two short sentences."},
        {"role": "user", "content": f"I watched {recent}. Why would I like {title}?"},
    ]
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        prompt = fallback_chat(messages)
    ids = torch.tensor(encode_prompts(tokenizer, [prompt]))  # (1, T)
    device = next(model.parameters()).device
    kw = {"do_sample": True, "temperature": 0.7, "top_p": 0.9} if sample else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=torch.ones_like(ids).to(device),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **kw,
        )
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    text = " ".join(text.strip().split("\n\n")[0].split())
    end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    if not text.endswith((".", "!", "?")) and end > 0:  # cut at max_new_tokens: keep whole sentences
        text = text[: end + 1]
    return text
