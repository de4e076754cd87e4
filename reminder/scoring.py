"""Teacher-forced scoring of a given response: per-token P(unsafe) and the reminder's final verdict."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checkpoint import Reminder
from .models.base import Prompt, VLMAdapter


@dataclass
class Score:
    """``tokens``: response pieces; ``p_unsafe``: one per token; ``final``: detector with the reminder appended."""

    tokens: list[str]
    p_unsafe: list[float]
    final: float


@torch.inference_mode()
def score_response(adapter: VLMAdapter, prompt: Prompt, response: str, reminder: Reminder) -> Score:
    """Run prompt + response + soft prompt in one forward; read the token probe per response token."""
    ids = adapter.tokens(response) if response else torch.zeros(1, 0, dtype=torch.long, device=adapter.device)
    enc = adapter.encode(prompt)
    soft = reminder.soft_prompt(adapter.dtype, adapter.device)
    n = ids.shape[1]
    _, hidden = adapter.forward(*adapter.extend(enc, ids, soft), None, reminder.layer)
    start = len(prompt)
    per_token = reminder.token_probe()(hidden[0, start:start + n]).tolist()
    pieces = [adapter.tokenizer.decode([i]) for i in ids[0].tolist()]
    return Score(pieces, per_token, float(reminder.detector(hidden[0, -1])))
