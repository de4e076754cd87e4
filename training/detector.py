"""Fit the reminder's detectors on the frozen model's own (prompt, partial response) pairs.

    python -m training.detector --model embedded --out checkpoints/embedded [--layer -1] [--n-components 0|4]
    python -m training.detector --out checkpoints/embedded --prompt-from checkpoints/embedded   # refit a trained one

Harmful pairs: the project's harmful prompts with the model's own compliant answers (greedy, 96 tokens), one forced
by the AdvBench-style prefill "Sure, here is" and one unprompted (kept only where it does not refuse); benign pairs:
the model's own answers to benign prompts. Training responses are cut where guarded generation checks them (every
``interval`` tokens; ``--cuts random``: at random word boundaries, about a third empty), validation and test
responses at one random word boundary; ``--openings`` adds harmful training answers that begin with a given
assistant-turn opening, ``--images`` training conversations with an image in the user turn. Two probes
(standardise, optional PCA, L2 logistic regression, scikit-learn) are fitted on the train split:

* ``check``: the chosen layer's state at the last soft-prompt token, with the soft prompt appended after the
  partial response inside the assistant turn (what guarded generation reads every ``interval`` tokens);
* ``token``: the state at the last response token without the soft prompt (per-token scores).

The threshold is calibrated on whole validation generations: every validation response is read at each check point,
the checks are combined as the gate will combine them (``--aggregate mean``: the running mean of their log-odds),
and the threshold maximises the share of harmful generations that fire while at most ``max_fpr`` of benign
generations fire (a benign answer is checked several times, so a per-check false positive rate would understate
how often the reminder interrupts it). The L2 strength is chosen the same way, on validation generations, among
``--c``. Pair-level AUROC and the confusion matrix are reported on the validation and test splits. Everything is
saved as safetensors through :meth:`Reminder.save`.

This module holds the fit and the CLI; the config is in :mod:`training.detector_config`, the pairs and their hidden
states in :mod:`training.features`, the probe in :mod:`training.probe`, the threshold in :mod:`training.calibration`,
the LLaVA-1.5 check in :mod:`training.llava`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from reminder import Detector, Reminder, ReminderError, SoftPrompt, load_model
from reminder.config_cli import add_config_args, config_from_args

from .calibration import calibrate, calibrate_reminder
from .detector_config import DetectorConfig
from .examples import image_id
from .features import probe_features
from .llava import eval_llava
from .probe import choose_threshold, fit_probe, probe_scores, scores_report


@dataclass
class DetectorResult:
    reminder: Reminder
    metrics: dict
    folder: Path | None = None


def recalibrate(folder: str | Path, adapter, command: str = "", check_end: bool = False) -> DetectorResult:
    """Choose the threshold of the reminder in ``folder`` again (same prompt, probes and ``max_fpr``) on the
    validation generations as they are now, e.g. after validation prompts were added; saved with a
    ``recalibration`` record (previous threshold, firing rates, command, seconds). ``check_end`` turns the
    reminder's end check on first (calibrated with it)."""
    start = time.perf_counter()
    reminder = Reminder.load(folder, adapter)
    reminder.check_end = reminder.check_end or check_end
    threshold, calibration = calibrate_reminder(adapter, reminder, DetectorConfig.of(reminder))
    metrics = {"threshold": threshold, "previous_threshold": reminder.threshold, "calibration": calibration}
    reminder.threshold = threshold
    reminder.meta.pop("uncalibrated", None)
    reminder.meta["recalibration"] = metrics | {"command": command,
                                               "seconds": round(time.perf_counter() - start, 1)}
    return DetectorResult(reminder, metrics, reminder.save(folder))


def fit(adapter, soft: torch.Tensor, cfg: DetectorConfig, interval: int = 16) -> tuple[dict[str, Detector], float,
                                                                                      dict]:
    """Fit the check and token probes on pairs read through ``soft`` [1, n, d] and calibrate the threshold.

    One check probe per inverse L2 strength in ``cfg.c``; the one that fires on the most harmful validation
    generations (at ``cfg.max_fpr`` of benign ones, ties to the higher pair AUROC) is kept, and the token probe
    uses its strength. Returns ({"check": ..., "token": ...}, threshold, metrics with pair-level AUROC and confusion
    matrices on the validation and test splits, the search and the generation-level calibration).
    """
    check, token, y, split, gens = probe_features(adapter, cfg, soft, interval)
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    x_train, search = check.numpy()[tr], []
    for c in cfg.c:
        probe = fit_probe(x_train, y[tr], cfg.n_components, c, cfg.seed)
        threshold, calibration = calibrate(gens, probe, cfg.aggregate, cfg.max_fpr)
        harmful = [v for k, v in calibration["fired"].items() if k != "benign"]
        auroc = scores_report(probe_scores(probe, check[va]), y[va], threshold)["auroc"]
        search.append({"c": c, "harmful_fired": float(np.mean(harmful)), "val_auroc": auroc,
                       "probe": probe, "threshold": threshold, "calibration": calibration})
    best = max(search, key=lambda r: (r["harmful_fired"], r["val_auroc"] or 0.0))
    detectors = {"check": best["probe"],
                 "token": fit_probe(token.numpy()[tr], y[tr], cfg.n_components, best["c"], cfg.seed)}
    threshold = best["threshold"]
    metrics = {"threshold": threshold, "c": best["c"],
               "c_search": [{k: r[k] for k in ("c", "harmful_fired", "val_auroc")} for r in search],
               "pairs": {s: int((split == s).sum()) for s in ("train", "val", "test")},
               "calibration": best["calibration"]}
    for name, feats in (("check", check), ("token", token)):
        d = detectors[name]
        t = threshold if name == "check" else choose_threshold(probe_scores(d, feats[va]), y[va], cfg.max_fpr)
        metrics[name] = {"val": scores_report(probe_scores(d, feats[va]), y[va], t),
                         "test": scores_report(probe_scores(d, feats[te]), y[te], t)}
    if cfg.eval_llava:
        metrics["llava15"] = eval_llava(adapter, detectors, soft, cfg)
    return detectors, threshold, metrics


def run(cfg: DetectorConfig, adapter=None) -> DetectorResult:
    """Fit both probes through the initial soft prompt (or ``cfg.prompt_from``'s trained one, whose training record
    is kept), calibrate the threshold, save the reminder to ``cfg.out``."""
    start = time.perf_counter()
    adapter = adapter or load_model(cfg.model)
    torch.manual_seed(cfg.seed)
    meta = {"init_text": cfg.init_text}
    if cfg.prompt_from:
        trained = Reminder.load(cfg.prompt_from, adapter)
        soft_prompt = trained.soft_prompt
        meta |= {k: v for k, v in trained.meta.items() if k in ("init_text", "sapt")}
    else:
        soft_prompt = SoftPrompt.from_text(adapter, cfg.init_text, cfg.n_tokens)
    with torch.no_grad():
        soft = soft_prompt(adapter.dtype, adapter.device)
    detectors, threshold, metrics = fit(adapter, soft, cfg, cfg.interval)
    meta |= {"detector_config": {k: v for k, v in asdict(cfg).items() if k != "out"}
             | {"image_ids": [image_id(p) for p in cfg.images],
                "adversarial_ids": [image_id(p) for p in cfg.adversarial]},
             "detector_metrics": metrics, "detector_seconds": round(time.perf_counter() - start, 1)}
    rem = Reminder(soft_prompt, detectors["check"], detectors["token"], model=adapter.name, layer=cfg.layer,
                   interval=cfg.interval, threshold=threshold, aggregate=cfg.aggregate,
                   check_start=cfg.check_start, check_end=cfg.check_end, meta=meta)
    folder = rem.save(cfg.out) if cfg.out else None
    return DetectorResult(rem, metrics, folder)


HELP = {
    "model": "default: embedded (with --calibrate-only: the reminder's own model)",
    "c": "inverse L2 strengths to try (validation picks one)",
    "aggregate": "gate: each check alone (last, the paper) or the mean log-odds of the checks so far",
    "check_end": "also check an answer that ends between check points (with --calibrate-only: turn it on)",
    "n_tokens": "vectors in the new soft prompt (ignored with --prompt-from, which keeps its prompt)",
    "prompt_from": "read through this reminder's trained soft prompt (keeps it and its SAPT record)",
    "eval_llava": "also report AUROC on ../shared llava15_responses",
}


def main(argv: list[str] | None = None) -> DetectorResult:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(ap, DetectorConfig, skip=("command", "max_per_split"), help=HELP, defaults={"model": None})
    for split in ("train", "val", "test"):
        ap.add_argument(f"--max-{split}", type=int, help=f"cap prompts per set in the {split} split")
    ap.add_argument("--calibrate-only", action="store_true",
                    help="keep the reminder in --out and only choose its threshold again on the validation "
                         "generations (its own settings; the fitting options above are ignored, except "
                         "--check-end, which turns the end check on)")
    a = ap.parse_args(argv)
    command = "python -m training.detector " + shlex.join(sys.argv[1:] if argv is None else argv)
    if a.calibrate_only:
        try:  # a clear message for a missing or broken folder, before any model loads
            result = recalibrate(a.out, load_model(a.model or Reminder.load(a.out).model), command, a.check_end)
        except ReminderError as err:
            ap.error(str(err))
        print(json.dumps(result.metrics, indent=2))
        return result
    caps = {s: v for s in ("train", "val", "test") if (v := getattr(a, f"max_{s}")) is not None}
    cfg = config_from_args(DetectorConfig, a, model=a.model or "embedded", max_per_split=caps, command=command)
    result = run(cfg)
    print(json.dumps(result.metrics, indent=2))
    return result

if __name__ == "__main__":
    main()
