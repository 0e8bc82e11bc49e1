"""The next-token loss split by the role of each predicted token, with the cheap reply metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    loss: torch.Tensor
    assistant_loss: torch.Tensor
    prompt_loss: torch.Tensor
    correct: int
    assistant_tokens: int
    replies_exact: int
    replies: int


def role_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    roles: torch.Tensor,
    loss_on: str,
    prompt_weight: float,
    weights: Optional[torch.Tensor] = None,
) -> LossParts:
    """Next-token loss split by the role of the predicted token, combined as `loss_on` says; `weights` (one per
    example) scale the reply part."""
    target = input_ids[:, 1:]
    r = roles[:, 1:]
    logits = logits[:, :-1]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    ce = ce.view_as(target)
    asst = r == 1
    prm = r == 0
    n_a = asst.sum()
    n_p = prm.sum()
    if weights is not None:
        wa = asst * weights.to(ce.dtype)[:, None]
        a_loss = (ce * wa).sum() / wa.sum().clamp(min=1e-9)
    else:
        a_loss = (ce * asst).sum() / n_a.clamp(min=1)
    p_loss = (ce * prm).sum() / n_p.clamp(min=1)
    if loss_on == "assistant":
        loss = a_loss
    elif loss_on == "all":
        loss = (ce * (asst | prm)).sum() / (n_a + n_p).clamp(min=1)
    else:
        loss = a_loss + prompt_weight * p_loss
    with torch.no_grad():
        hit = torch.zeros_like(asst)
        hit[asst] = logits[asst].argmax(-1) == target[asst]
        wrong_in_reply = (asst & ~hit).any(dim=1)
        has_reply = asst.any(dim=1)
        exact = int((has_reply & ~wrong_in_reply).sum())
    return LossParts(
        loss=loss,
        assistant_loss=a_loss.detach(),
        prompt_loss=p_loss.detach(),
        correct=int(hit.sum()),
        assistant_tokens=int(n_a),
        replies_exact=exact,
        replies=int(has_reply.sum()),
    )
