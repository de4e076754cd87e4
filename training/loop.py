"""The one training loop, shared by SAPT (:mod:`training.sapt`) and the LoRA alignment (:mod:`training.align`).

Runs under ``accelerate`` (CPU, one GPU or several): the examples are shuffled once per epoch by :func:`epoch_order`
(seeded, so a resumed run sees the order an uninterrupted one would), each optimiser step takes the next
``batch_size`` of them and each process its share (``idx[rank::world]``). Progress and cancellation follow
:mod:`reminder.progress`: ``callback.on_step`` after each step, a set ``stop`` ends the run after its step, saved.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from reminder.progress import Progress, stopped


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of ``epoch`` (depends only on the seed and the epoch, so a resumed run sees the same)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


@dataclass
class Loop:
    """Where a run stands: optimiser steps taken, the loss of each, whether it was stopped before the end."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    stopped: bool = False


def run(accelerator, optimizer, n_examples: int, batch_size: int, epochs: int, max_steps: int | None, seed: int,
        loss_of: Callable[[list[int], list[int]], tuple[torch.Tensor, dict[str, float]]],
        save: Callable[[Loop], None], state: Loop | None = None, after_backward: Callable[[], None] | None = None,
        on_epoch: Callable[[int], None] | None = None, callback: Progress | None = None,
        stop: threading.Event | None = None, desc: str = "train") -> Loop:
    """Train from ``state`` (a resumed run's) to ``epochs`` epochs or ``max_steps`` steps.

    ``loss_of(idx, mine)``: the loss to back-propagate for the batch ``idx`` (example indices) of which this process
    holds ``mine`` (possibly none: it then computes on ``idx[:1]`` with weight 0, so that it keeps step with the
    others), with its parts for the progress bar and ``callback.on_step``; scaled so that the gradients averaged over
    the processes are those of one process on the whole batch. ``after_backward``: e.g. averaging gradients by hand
    where no DDP wrapper does. At each epoch's end ``on_epoch(epoch)`` then ``save(state)``; ``save`` again when
    stopped (``stop`` or Ctrl-C) between epoch ends.
    """
    from tqdm.auto import tqdm

    state, progress = state or Loop(), Progress.of(callback)
    per_epoch = math.ceil(n_examples / batch_size)
    total = min(epochs * per_epoch, max_steps or epochs * per_epoch)
    rank, world = accelerator.process_index, accelerator.num_processes
    bar = tqdm(total=total, initial=state.step, desc=desc, disable=not accelerator.is_main_process)
    try:
        while state.step < total:
            epoch, offset = divmod(state.step, per_epoch)
            idx = epoch_order(n_examples, seed, epoch)[offset * batch_size:(offset + 1) * batch_size]
            loss, parts = loss_of(idx, idx[rank::world])
            optimizer.zero_grad()
            accelerator.backward(loss)
            if after_backward is not None:
                after_backward()
            optimizer.step()
            state.step += 1
            state.losses.append(accelerator.reduce(loss.detach(), "mean").item())  # the whole batch's loss
            bar.update(1)
            bar.set_postfix(loss=f"{state.losses[-1]:.3f}", **{k: f"{v:.3f}" for k, v in parts.items() if k == "ce"})
            progress.on_step(state.step, state.losses[-1], parts)
            boundary = state.step % per_epoch == 0 or state.step == total
            if boundary:
                if on_epoch is not None:
                    on_epoch(epoch)
                save(state)
            if stopped(stop) and state.step < total:
                state.stopped = True
                if not boundary:
                    save(state)
                break
    except KeyboardInterrupt:
        state.stopped = True
        save(state)
    finally:
        bar.close()
    return state
