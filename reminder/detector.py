"""The safety-state detector: a linear probe on one layer's hidden state giving P(unsafe).

P(unsafe | h) = sigmoid(w · P((h - mean) / scale) + b), where P projects onto ``components`` (PCA, [k, d]) or is the
identity when no components are stored. The numbers come from scikit-learn at fit time (``training/detector.py``)
and live in safetensors; the probe itself is plain torch so it is differentiable (SAPT's BCE term uses that).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

Aggregate = Literal["last", "mean"]  # how a generation's checks combine (see gate)
AGGREGATES: tuple[str, ...] = get_args(Aggregate)


def gate(logits: torch.Tensor, aggregate: str = "last") -> torch.Tensor:
    """The score each check compares with the threshold, from the check log-odds so far: [K] -> P [K].

    ``last``: each check on its own (the paper). ``mean``: the mean log-odds of all checks up to this one, so a
    generation has to stay suspicious to fire and one odd check on a benign answer is outvoted by its others.
    """
    if aggregate == "last":
        return torch.sigmoid(logits)
    if aggregate == "mean":
        return torch.sigmoid(torch.cumsum(logits, 0) / torch.arange(1, len(logits) + 1, device=logits.device))
    raise ValueError(f"unknown gate aggregate {aggregate!r} (choose from {', '.join(AGGREGATES)})")


class Detector(nn.Module):
    """Probe over hidden states [..., d] -> P(unsafe) [...]."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 components: torch.Tensor | None = None):
        super().__init__()
        d = mean.shape[-1]
        k = d if components is None else components.shape[0]
        if scale.shape != (d,) or weight.shape != (k,) or (components is not None and components.shape[1] != d):
            raise ValueError("detector tensors have inconsistent shapes")
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float().reshape(()))
        self.register_buffer("components", None if components is None else components.float())

    @property
    def hidden_size(self) -> int:
        return self.mean.shape[0]

    def logit(self, hidden: torch.Tensor) -> torch.Tensor:
        """Log-odds of unsafe: [..., d] -> [...] (on the probe's device, wherever ``hidden`` lives), in float32
        under a caller's ``torch.autocast`` too: scores are compared with a threshold."""
        with torch.autocast(self.mean.device.type, enabled=False):
            z = (hidden.to(self.mean.device, torch.float32) - self.mean) / self.scale
            if self.components is not None:
                z = z @ self.components.T
            return z @ self.weight + self.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """P(unsafe): [..., d] -> [...]."""
        return torch.sigmoid(self.logit(hidden))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat safetensors dict under ``prefix``."""
        out = {f"{prefix}.{k}": v.contiguous() for k, v in
               (("mean", self.mean), ("scale", self.scale), ("weight", self.weight), ("bias", self.bias))}
        if self.components is not None:
            out[f"{prefix}.components"] = self.components.contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> Detector | None:
        """Inverse of :meth:`tensors`; ``None`` when no probe is stored under ``prefix``."""
        if f"{prefix}.weight" not in tensors:
            return None
        get = lambda k: tensors[f"{prefix}.{k}"]  # noqa: E731
        return cls(get("mean"), get("scale"), get("weight"), get("bias"), tensors.get(f"{prefix}.components"))
