"""Open-ended generation (M6-Rec's open setting): plain beam search, each title then matched against
the catalog and flagged when it is not in it. The constrained search is ``m6gen.decoding.search``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpenOutput:
    """One title from unconstrained ("open") generation; ``item`` is -1 outside the catalog."""

    text: str
    item: int
    logprob: float

    @property
    def in_catalog(self) -> bool:
        return self.item >= 0


def line_break_tokens(tokenizer) -> list[int]:
    """Every token whose text holds a line break: where a title written as a line ends."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return [i for i, text in enumerate(texts) if "\n" in text]


def open_generate(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    targets: list[str],
    num_beams: int = 20,
    max_new_tokens: int = 24,
    line_breaks: list[int] | None = None,
) -> list[list[OpenOutput]]:
    """Unconstrained beam search (M6-Rec's open-ended setting): the model may name any title.

    A beam ends with the end-of-text token or at a line break (``line_breaks``: their token ids,
    :func:`line_break_tokens` when None), and may not open with either: otherwise a model that writes
    one title a line fills every beam with the same list, and the beams differ only after the first
    title. Each output is matched against the catalog's target texts (exactly, then ignoring
    surrounding whitespace) and flagged as in the catalog or not.
    """
    import torch

    lookup = {t.strip(): i for i, t in enumerate(targets)}
    line_breaks = line_break_tokens(tokenizer) if line_breaks is None else line_breaks
    ends = [t for t in [tokenizer.eos_token_id, *line_breaks] if t is not None]
    width = max(len(p) for p in prompt_ids)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            num_beams=num_beams,
            num_return_sequences=num_beams,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=True,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=pad,
            eos_token_id=ends,
            begin_suppress_tokens=ends or None,  # no empty title
        )
    texts = tokenizer.batch_decode(out.sequences[:, width:], skip_special_tokens=True)
    scores = out.sequences_scores.tolist()
    results = []
    for u in range(len(prompt_ids)):
        row = []
        for text, score in zip(texts[u * num_beams : (u + 1) * num_beams], scores[u * num_beams : (u + 1) * num_beams]):
            # the line break that ended the beam is not part of the title
            text = next((line for line in text.split("\n") if line.strip()), "")
            row.append(OpenOutput(text=text, item=lookup.get(text.strip(), -1), logprob=float(score)))
        results.append(row)
    return results
