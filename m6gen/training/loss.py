"""The training loss: summed cross-entropy of the target (title) tokens, and with ``--readout-loss``
the collaborative readout's cross-entropy on each next item.

:class:`TargetLoss` is the module ``Accelerator.prepare`` wraps, so DDP/FSDP see every forward. Two
shortcuts keep it cheap, each checked on the model actually trained by :func:`check_loss_paths`
(a model failing one is trained without it): the output layer runs only where a target token is
predicted (a few percent of a packed batch), and several examples share a packed row (position ids
restart at 0 for each; see :mod:`m6gen.training.examples`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from m6gen.hybrid.soft_tokens import find
from m6gen.training.examples import IGNORE, Example, collate


@dataclass(frozen=True)
class LossParts:
    """What the last forward summed, detached, for the training log."""

    title: float = 0.0  # cross-entropy summed over the target (title) tokens
    item: float = 0.0  # the readout's cross-entropy summed over the next items it read (unweighted)
    items: int = 0  # how many next items the readout read


class TargetLoss(torch.nn.Module):
    """Wraps a (peft) causal LM; ``forward`` returns (summed loss, target tokens).

    ``weights`` ((B, L), optional): each label's weight in the sum (``--rare-target-power``).
    ``readout_weight``: with a model that has a collaborative readout (``--readout-loss``), its
    cross-entropy on each next item, read at the position before the item's title, is added to the
    sum with this weight. ``fast_head``: the output layer runs only at positions that predict a target
    token; models that change logits after the output layer (soft-capping, scaling) need ``False``.
    """

    def __init__(self, model, fast_head: bool = True, readout_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.fast_head = fast_head
        self.readout_weight = readout_weight
        self.last = LossParts()

    def lm(self):
        """The causal LM under the peft wrapper (its ``base_model`` is the decoder body)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def readout(self):
        """The collaborative readout trained with LoRA, or None (no collaborative tokens, or no readout)."""
        collaborative = find(self.lm())
        return collaborative.readout if collaborative is not None else None

    def own_examples(self, position_ids):
        """While a packed batch runs: user-state tokens read the history of their own example only."""
        collaborative = find(self.lm())
        return collaborative.segments(position_ids) if collaborative is not None else nullcontext()

    def body(self, input_ids, position_ids, attention_mask=None):
        """The decoder body's last hidden states (B, L, H)."""
        with self.own_examples(position_ids):
            return (
                self.lm()
                .base_model(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
                )
                .last_hidden_state
            )

    def forward(
        self, input_ids, labels, position_ids, attention_mask=None, readout_at=None, readout_items=None, weights=None
    ):
        target = labels[:, 1:]  # (B, L-1): the token each position predicts
        keep = target != IGNORE  # (B, L-1)
        readout = self.readout() if self.readout_weight else None
        if self.fast_head:
            hidden = self.body(input_ids, position_ids, attention_mask)  # (B, L, H)
            logits = self.lm().get_output_embeddings()(hidden[:, :-1][keep])  # (T, V)
        else:
            with self.own_examples(position_ids):
                out = self.lm()(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    use_cache=False,
                    output_hidden_states=readout is not None,
                )
            logits = out.logits[:, :-1][keep]  # (T, V)
            hidden = out.hidden_states[-1] if readout is not None else None  # the last layer, normed
        if weights is None:
            loss = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="sum")
            self.last = LossParts(title=float(loss.detach()))
        else:  # --rare-target-power: each token weighted by its title's item; the log keeps the plain sum
            per_token = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="none")
            loss = (per_token * weights[:, 1:][keep]).sum()
            self.last = LossParts(title=float(per_token.detach().sum()))
        if readout is not None and readout_at is not None and len(readout_at):
            item_logits = readout(hidden[readout_at[:, 0], readout_at[:, 1]])  # (N, items)
            item_loss = torch.nn.functional.cross_entropy(item_logits, readout_items, reduction="sum")
            self.last = LossParts(self.last.title, float(item_loss.detach()), len(readout_items))
            loss = loss + self.readout_weight * item_loss
        return loss, keep.sum()


def loss_module(model, fast_head: bool = True, readout_weight: float = 0.0) -> TargetLoss:
    """The :class:`TargetLoss` of ``model``."""
    return TargetLoss(model, fast_head, readout_weight)


def calibrate_readout(module: TargetLoss, examples: list[Example], pad_id: int, soft_from: int | None = None) -> int:
    """Standardize a fresh collaborative readout's input by the states it reads on ``examples`` (the
    same on every process); returns how many states were read (0: no readout, or it is not fresh)."""
    readout = module.readout()
    if readout is None or bool(readout.mean.any()) or not bool((readout.std == 1).all()):
        return 0  # none, or trained already (--init-adapter, a checkpoint)
    batch = collate([[ex] for ex in examples], pad_id, soft_from)
    device = readout.mean.device
    was_training = module.training
    module.eval()
    with torch.no_grad():
        hidden = module.body(batch["input_ids"].to(device), batch["position_ids"].to(device))
    module.train(was_training)
    at = batch["readout_at"].to(device)
    states = hidden[at[:, 0], at[:, 1]].float()
    readout.mean.copy_(states.mean(0))
    readout.std.copy_(states.std(0).clamp(min=1e-6) if len(states) > 1 else torch.ones_like(readout.std))
    return len(states)


def check_loss_paths(
    module: TargetLoss, examples, pad_id: int, tol: float = 1e-4, soft_from: int | None = None
) -> tuple[bool, bool]:
    """(fast head agrees with full logits, packed rows agree with one example per row) on ``examples``.

    The reference is the model's own full-logit forward, one example per row. A model whose
    attention ignores position-id packing, or that post-processes logits, fails here and is
    trained without the shortcut instead of with a silently wrong loss.
    """

    def total(rows, fast: bool) -> float:
        old, module.fast_head = module.fast_head, fast
        try:
            with torch.no_grad():
                b = collate(rows, pad_id, soft_from)
                loss, _ = module(
                    b["input_ids"],
                    b["labels"],
                    b["position_ids"],
                    readout_at=b["readout_at"],
                    readout_items=b["readout_items"],
                )
        finally:
            module.fast_head = old
        return float(loss)

    was_training = module.training
    module.eval()
    ref = sum(total([[ex]], False) for ex in examples)
    fast = sum(total([[ex]], True) for ex in examples)
    packed = total([list(examples)], False)
    module.train(was_training)
    close = lambda a: abs(a - ref) <= tol * max(1.0, abs(ref))  # noqa: E731
    return close(fast), close(packed)
