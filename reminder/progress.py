"""The one progress and cancel protocol of long jobs (SAPT, LoRA alignment, the attacks, the evaluation grid): a job
takes ``callback`` (a :class:`Progress`, or a plain function) and ``stop`` (a ``threading.Event``; once set, the job
ends after its current step, saved where it saves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Progress:
    """Progress hooks; override the ones you need (each job calls those that apply to it)."""

    def on_step(self, step: int, loss: float, metrics: dict[str, float]) -> None:
        """After each optimisation step: the loss and its parts (training: ``ce``, ``bce``, ``p_unsafe``)."""

    def on_eval(self, epoch: int, metrics: dict[str, Any]) -> None:
        """After each training epoch: validation metrics."""

    def on_row(self, row: dict) -> None:
        """After each new row of the evaluation grid."""

    @staticmethod
    def of(callback: Progress | Callable | None) -> Progress:
        """``callback`` as a :class:`Progress`: a plain function is called with the job's own event, ``(step, loss)``
        by training and the attacks, ``(row)`` by the evaluation grid."""
        if isinstance(callback, Progress):
            return callback
        return _Calls(callback) if callback is not None else Progress()


class _Calls(Progress):
    def __init__(self, fn: Callable):
        self.fn = fn

    def on_step(self, step, loss, metrics):
        self.fn(step, loss)

    def on_row(self, row):
        self.fn(row)


Callback = Progress | Callable[..., None]  # what a job's ``callback`` may be


def stopped(stop) -> bool:
    """True once the caller has set the cancellation event ``stop`` (None: never)."""
    return stop is not None and stop.is_set()
