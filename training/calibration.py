"""The threshold, chosen on whole validation generations the way guarded generation uses it: every generation is read
at each of its check points and the checks are combined by the reminder's gate (:func:`reminder.detector.gate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from reminder import Detector, Reminder
from reminder.detector import gate

from .features import GenerationChecks, generation_checks
from .probe import choose_threshold

if TYPE_CHECKING:
    from .detector_config import DetectorConfig


def generation_peaks(checks: GenerationChecks, detector: Detector, aggregate: str) -> np.ndarray:
    """Each generation's highest gate score over its checks [G] (0 for one too short to be checked)."""
    with torch.no_grad():
        logits = detector.logit(checks.feats)
    peak = np.zeros(len(checks.unsafe))
    for g in np.unique(checks.gen):
        peak[g] = float(gate(logits[torch.from_numpy(checks.gen == g)], aggregate).max())
    return peak


def calibrate(checks: GenerationChecks, detector: Detector, aggregate: str, max_fpr: float) -> tuple[float, dict]:
    """Choose the threshold on whole generations, the way guarded generation will use it.

    A generation fires when the gate's score (:func:`reminder.detector.gate` over its checks so far) reaches the
    threshold at any check. The threshold maximises the harmful firing rate with at most ``max_fpr`` of benign
    generations firing. Returns (threshold, per-kind firing rates).
    """
    peak = generation_peaks(checks, detector, aggregate)
    threshold = choose_threshold(peak, checks.unsafe, max_fpr)
    fired = {k: float(np.mean(peak[checks.kind == k] >= threshold)) for k in ("harmful", "harmful+prefill", "benign")
             if (checks.kind == k).any()}
    return threshold, {"generations": {k: int((checks.kind == k).sum()) for k in fired},
                       "checks": len(checks.gen), "fired": fired, "aggregate": aggregate}


def calibrate_reminder(adapter, reminder: Reminder, cfg: DetectorConfig) -> tuple[float, dict]:
    """(threshold, firing rates) for ``reminder``'s own prompt and check probe on ``cfg``'s validation generations."""
    soft = reminder.soft_prompt(adapter.dtype, adapter.device).detach()
    checks = generation_checks(adapter, soft, cfg, reminder.interval, reminder.layer)
    return calibrate(checks, reminder.detector.cpu(), reminder.aggregate, cfg.max_fpr)
