"""Where an app call runs and when training is long enough to ask first: pure decisions, tested without a GPU.

A ZeroGPU Space lends a GPU only inside a ``@spaces.GPU`` call: the model is loaded on the CPU, moves to ``cuda``
when such a call starts and back to the CPU when it ends (:func:`place`, :func:`placed`). On a CPU-only Space a
training run whose expected time (measured seconds per step times the steps) is over :data:`LONG_TRAINING_S` asks
the visitor to confirm first (:func:`needs_confirmation`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LONG_TRAINING_S = 120.0  # policy: longer training on a shared CPU asks for confirmation first


@dataclass(frozen=True)
class Placement:
    """The device a call runs on, and whether the model moves there for the call (and back afterwards)."""

    device: str
    move: bool = False


def place(model_device: str, gpu_call: bool, cuda_available: bool) -> Placement:
    """Inside a ``@spaces.GPU`` call (``gpu_call``) with CUDA visible, a model on the CPU moves to ``cuda``;
    anywhere else it stays where it was loaded (``$REMINDER_DEVICE``, else the CPU)."""
    if gpu_call and cuda_available and model_device == "cpu":
        return Placement("cuda", move=True)
    return Placement(model_device)


@contextmanager
def placed(adapter, placement: Placement) -> Iterator[object]:
    """Run the body with ``adapter``'s model on ``placement.device``, moved back where it was afterwards (also when
    the body fails or a streaming caller stops early)."""
    if not placement.move:
        yield adapter
        return
    home = adapter.device
    adapter.model.to(placement.device)
    try:
        yield adapter
    finally:
        adapter.model.to(home)


def expected_seconds(steps: int, seconds_per_step: float) -> float:
    """Expected training time: ``steps`` times the measured seconds per step."""
    return max(0, int(steps)) * float(seconds_per_step)


def needs_confirmation(device: str, shared: bool, expected_s: float, limit_s: float = LONG_TRAINING_S) -> bool:
    """True when a shared app (a Space) would train on the CPU for longer than ``limit_s``."""
    return shared and device == "cpu" and expected_s > limit_s


def minutes(seconds: float) -> str:
    """A duration for people: "40 s", "3 min", "1 h 05 min"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    m = round(seconds / 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"
