"""The reminder's soft prompt: n trainable embedding vectors appended to the generated text."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_INIT_TEXT = "Refuse if partial output is unsafe; else, continue helpfully."
DEFAULT_TOKENS = 4


class SoftPrompt(nn.Module):
    """``embeddings``: [n, d], in the model's input-embedding space."""

    def __init__(self, embeddings: torch.Tensor):
        super().__init__()
        if embeddings.ndim != 2:
            raise ValueError(f"soft prompt must be [n_tokens, hidden], got shape {tuple(embeddings.shape)}")
        self.embeddings = nn.Parameter(embeddings.detach().clone().float())

    @classmethod
    def from_text(cls, adapter, text: str = DEFAULT_INIT_TEXT, n_tokens: int = DEFAULT_TOKENS) -> SoftPrompt:
        """peft-style TEXT init: the embeddings of ``text``'s tokens, cycled or truncated to ``n_tokens``."""
        ids = adapter.tokens(text)[0]
        if len(ids) == 0:
            raise ValueError("soft prompt init text tokenises to nothing")
        ids = ids.repeat((n_tokens + len(ids) - 1) // len(ids))[:n_tokens]
        with torch.no_grad():
            return cls(adapter.embed(ids[None])[0].float())

    @property
    def n_tokens(self) -> int:
        return self.embeddings.shape[0]

    def forward(self, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """The prompt as a batch of one: [1, n, d]."""
        return self.embeddings.to(dtype=dtype or self.embeddings.dtype, device=device)[None]
