"""A Train click in the app: SAPT into one of the visitor's own reminder folders, with live progress.

Where it writes and what it starts from is :meth:`demo.workspace.Workspace.plan_training`'s decision: a new
name starts from a copy of the reminder picked in Compare (without one a detector is fitted first), "continue" trains
the visitor's own folder further; shipped reminders are never written. On a shared CPU a run expected to be long
asks first (:mod:`demo.placement`, one step measured here). A folder the job made and did not finish is removed.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evaluation import plots
from reminder.checkpoint import Reminder
from training import detector, sapt

from .jobs import Finished, in_thread
from .placement import expected_seconds, minutes, needs_confirmation
from .workspace import TrainPlan, Workspace, start_copy

_step_seconds: dict[tuple, float] = {}  # measured seconds per training step, by (model, device, batch size)


@dataclass
class TrainRequest:
    """The Train tab's inputs (its widgets start at these defaults); ``base``: the reminder picked in Compare."""

    model: str
    name: str = ""
    max_steps: int = 20
    lr: float = 1e-2
    batch_size: int = 4
    prompts: int = 8  # training prompts per set (harmful, benign, validation)
    base: str | None = None
    continue_training: bool = False
    calibrate: bool = False


@dataclass
class Update:
    """One change to the Train tab: a field left None stays as it is; ``clear`` empties the plot and the metrics;
    ``folder`` (at the end) is the trained reminder."""

    status: str | None = None
    figure: object = None
    metrics: dict | None = None
    clear: bool = False
    folder: Path | None = None


class _Progress(sapt.TrainCallback):
    def __init__(self, emit):
        self.emit = emit

    def on_step(self, step, loss, metrics):
        self.emit(step, loss, metrics)

    def on_eval(self, epoch, metrics):
        self.emit(metrics)


@dataclass
class TrainJob:
    plan: TrainPlan
    cfg: sapt.SaptConfig
    adapter: object
    start: Reminder | None  # the reminder training starts from (None: a detector is fitted first)

    @classmethod
    def prepare(cls, ws: Workspace, adapter, req: TrainRequest) -> TrainJob:
        """Decide the folder and the config; refuse bad names and folders with a WorkspaceError (writes nothing)."""
        base = ws.resolve(req.base, req.model) if req.base and not req.continue_training else None
        name = (req.name or "").strip() or ws.free_name(f"{base.name if base else req.model}-sapt")
        plan = ws.plan_training(name, base, bool(req.continue_training))
        start = Reminder.load(plan.base or plan.folder, adapter) if (plan.base or plan.continued) else None
        n = max(1, int(req.prompts))
        n_steps = max(1, int(req.max_steps))  # as many epochs as steps: the step count decides, however few prompts
        cfg = sapt.SaptConfig(model=req.model, out=str(plan.folder), epochs=n_steps, max_steps=n_steps,
                              lr=float(req.lr), batch_size=max(1, int(req.batch_size)), max_harmful=n, max_benign=n,
                              max_val=n, refit="threshold" if req.calibrate else "none")
        return cls(plan, cfg, adapter, start)

    def expected_time(self) -> float:
        """``max_steps`` times one step measured on this machine (once per model, device and batch size)."""
        if self.start is None:
            return float("inf")
        key = (self.adapter.name, str(self.adapter.device), self.cfg.batch_size)
        if key not in _step_seconds:
            _step_seconds[key] = sapt.step_seconds(self.adapter, self.start, self.cfg)
        return expected_seconds(self.cfg.max_steps, _step_seconds[key])

    def ask_first(self) -> str | None:
        """On a shared CPU, the message asking to confirm a long run (None: it may start)."""
        device = self.adapter.device.type
        if device != "cpu" or not needs_confirmation(device, True, expected := self.expected_time()):
            return None
        took = (f"about {minutes(expected)} ({self.cfg.max_steps} steps × {expected / self.cfg.max_steps:.1f} s "
                "measured for one step here)" if self.start is not None else "long: a detector is fitted first")
        return (f"⏳ On this Space's CPU this training takes {took}, plus answering the training prompts the first "
                "time. Tick **train on the CPU anyway** and press Train again to start it.")

    def run(self, stop: threading.Event) -> Iterator[Update]:
        """Copy or fit the starting reminder, train (``stop`` ends it early, keeping what was learnt), save."""
        plan, cfg, adapter = self.plan, self.cfg, self.adapter
        created = not plan.continued
        try:
            if plan.base is not None:
                start_copy(plan.base, plan.folder, adapter)
            elif not plan.continued:
                yield Update(f"fitting the detector into {plan.folder} first (the model answers the training "
                             "prompts once: slow)…", clear=True)
                n = cfg.max_harmful
                detector.run(detector.DetectorConfig(model=cfg.model, out=str(plan.folder),
                                                     max_per_split={"train": n, "val": n, "test": n}), adapter)
            steps: list[int] = []
            curves: dict[str, list[float]] = {}
            yield Update(f"training {plan.folder.name}: answering the training prompts first…", clear=True)
            for item in in_thread(lambda cb: sapt.train(cfg, adapter, _Progress(cb), stop), stop):
                if isinstance(item, Finished):
                    created = False
                    metrics = json.loads(json.dumps(item.result.metrics, default=str)) or None
                    yield Update(done_message(item.result, plan.folder), metrics=metrics, folder=plan.folder)
                elif len(item) == 1:  # validation after an epoch
                    yield Update(metrics={"after step": steps[-1] if steps else 0, **item[0]})
                else:
                    step, loss, metrics = item
                    steps.append(step)
                    for k, v in {"loss": loss, **{k: v for k, v in metrics.items() if k in ("ce", "bce")}}.items():
                        curves.setdefault(k, []).append(float(v))
                    yield Update(f"step {step}: loss {loss:.4f}", figure=plots.loss_curve(steps, curves))
        finally:
            if created:  # nothing half-written: a folder this job made and did not finish goes again
                shutil.rmtree(plan.folder, ignore_errors=True)


def done_message(res: sapt.TrainResult, folder: Path) -> str:
    """How the run ended and where it was saved (and how to calibrate it, when it is uncalibrated)."""
    return (f"{'stopped' if res.stopped else 'done'} after {res.step} step{'s' * (res.step != 1)}; saved as "
            f"**{folder.name}** (in Compare's reminder list)"
            + ("" if res.reminder.calibrated else "; **uncalibrated**: its threshold was chosen for the earlier "
               "prompt (tick 'calibrate the threshold afterwards', or `python -m training.detector --out DIR "
               "--calibrate-only`)"))
