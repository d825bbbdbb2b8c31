"""The model side of the constrained beam search: prefill the prompts, then feed each step's tokens.

The search (:mod:`m6gen.decoding.search`) decides which beams go on; this keeps their KV cache
(a row per beam, or the prompt once per user: :mod:`m6gen.decoding.shared_cache`) and reads the next
token's log-probabilities for the tokens the trie allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from m6gen.decoding.shared_cache import SharedPromptCache


def _cache_kwarg(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; use what this version takes."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps forward
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class NextToken:
    """The next token's log-probabilities, kept as logits and their log-normalizer: a step reads only
    the few tokens the trie allows, so the (rows, V) log-softmax is never written out."""

    def __init__(self, output):
        import torch

        self.logits = output.logits[:, -1, :].float()  # (rows, V)
        self.log_normalizer = torch.logsumexp(self.logits, dim=-1)  # (rows,)

    def logprobs(self, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits[rows, tokens] - self.log_normalizer[rows]


def left_padded(
    prompt_ids: list[list[int]], pad_token_id: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask, position_ids), each (prompts, longest): prompts left-padded so that they all end at
    the last column, positions counted from each prompt's first real token."""
    import torch

    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for u, p in enumerate(prompt_ids):
        ids[u, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[u, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class Decoder:
    """The model side: the KV cache (a row per live beam, or shared per user), the next token's log-probabilities."""

    model: object
    cache_kwarg: str
    cache: object
    mask: torch.Tensor  # (rows, width) long: 1 on real tokens, 0 on left padding
    next_token: NextToken
    shared: SharedPromptCache | None = None  # the prompt's KV once per user (see shared_cache.py)
    prompt_states: torch.Tensor | None = None  # (users, width) last hidden state at each prompt's end, if asked

    @classmethod
    def prefill(
        cls, model, prompt_ids: list[list[int]], pad_token_id: int, share_prompt: bool, keep_states: bool = False
    ) -> Decoder:
        """Each prompt once (left-padded); only the last position's logits are needed (and with
        ``keep_states`` its last hidden state, for a prior read from the prompt: no second forward)."""
        ids, mask, position_ids = left_padded(prompt_ids, pad_token_id, next(model.parameters()).device)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **({"output_hidden_states": True} if keep_states else {}),  # not every model takes the flag
        )
        decoder = cls(model, _cache_kwarg(model), _cache_of(out), mask, NextToken(out))
        if keep_states:
            decoder.prompt_states = out.hidden_states[-1][:, -1].float()
        if share_prompt:
            from m6gen.decoding.shared_cache import SharedPromptCache

            decoder.shared, decoder.cache = SharedPromptCache(decoder.cache, mask), None
        return decoder

    def token_logprobs(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """float64 log-probability of ``tokens[i]`` following row ``rows[i]``."""
        import torch

        device = self.mask.device
        rows_t, tokens_t = torch.from_numpy(rows).to(device), torch.from_numpy(tokens).to(device)
        return self.next_token.logprobs(rows_t, tokens_t).double().cpu().numpy()

    def advance(self, rows: np.ndarray, tokens: np.ndarray) -> None:
        """Keep the given rows (a row may be repeated: a beam with several children) and feed each its token."""
        import torch

        if self.shared is not None:
            return self._advance_shared(rows, tokens)
        device = self.mask.device
        rows_t = torch.from_numpy(rows).to(device)
        self.cache.reorder_cache(rows_t)
        ones = torch.ones((len(rows), 1), dtype=self.mask.dtype, device=device)
        self.mask = torch.cat([self.mask[rows_t], ones], dim=1)  # (rows, width + 1)
        step_ids = torch.from_numpy(tokens).to(device).unsqueeze(1)  # (rows, 1)
        position_ids = self.mask.sum(-1, keepdim=True) - 1  # (rows, 1)
        out = self.model(
            input_ids=step_ids,
            attention_mask=self.mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_kwarg: self.cache},
        )
        self.cache = _cache_of(out)
        self.next_token = NextToken(out)

    def _advance_shared(self, rows: np.ndarray, tokens: np.ndarray) -> None:
        import torch

        self.shared.reorder(rows)
        out = self.model(
            input_ids=torch.from_numpy(tokens).to(self.mask.device).unsqueeze(1),
            attention_mask=self.shared.prompt_bias,  # 4D: transformers passes it through as is
            position_ids=self.shared.positions(),
            use_cache=True,
            shared_prompt=self.shared,  # reaches the attention function with the model's kwargs
            **{self.cache_kwarg: self.shared},
        )
        self.next_token = NextToken(out)
