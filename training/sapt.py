"""SAPT: train only the reminder's soft prompt on the frozen model (detector from ``training.detector``).

    python -m training.sapt --model embedded --out checkpoints/embedded [--resume] [--epochs 2] [--lr 1e-2]

Each training example is a prompt plus the model's own response cut at one of the points where guarded generation
checks it (every ``interval`` tokens, before the first token for a reminder with ``check_start``, where the answer
ended for one with ``check_end``; for a reminder whose ``mode`` rolls back or regenerates, also before the first
token, where such a reminder may enter after a rollback; chosen at random; ``--cuts random``: at a random word
boundary, about a third empty, else at least ~20 characters), followed by the soft prompt:

* harmful: prompt + the start of a compliant answer (the model's own, after the prefill "Sure, here is" or unprompted
  where it complies) + soft prompt -> a refusal (refusals.json);
* benign: prompt + the start of the model's own answer + soft prompt -> the rest of that answer.

``--images`` adds the same kinds of training conversations with an image in the user turn.

Loss = cross-entropy on the target tokens + ``lambda_bce`` * BCE of the frozen check detector at the last soft-prompt
token (so the detector keeps working on the trained prompt). AdamW on the n x d soft-prompt vectors only. After
training, the threshold is calibrated again on validation generations read through the trained prompt (``--refit
detector`` refits the probes on features read through it first)
on whole validation generations (:func:`training.detector.fit`).

Default lr is 1e-2, not the paper's 1e-4: on this model 1e-4 and 1e-3 barely move 4 vectors in a few hundred
steps (measured in ../shared/FINDINGS.md), 1e-2 reaches >90% refusals on harmful continuations in ~250 steps.

Runs under ``accelerate`` (CPU, one GPU or several: each process takes its share of every batch). The reminder folder
is saved atomically each epoch and on stop/Ctrl-C with its ``training_state.safetensors`` (soft prompt, AdamW state,
RNG state) and ``training_state.json`` (step, epoch, config); ``--resume`` continues to exactly the result of an
uninterrupted run (the data order depends only on the seed and the epoch). A new (not resumed) run on a folder whose
prompt was already trained continues from that prompt and keeps the earlier runs' records under ``sapt_history``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import shlex
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from reminder import Reminder, load_model
from reminder.config_cli import add_config_args, config_from_args
from reminder.data import load_refusals
from reminder.progress import Callback, Progress

from . import loop
from .calibration import calibrate_reminder
from .detector import DetectorConfig, fit
from .examples import Cut, Pair, cut_response, image_paths, labelled_responses, soft_batch
from .features import check_pairs
from .state import load_state, save_state

UNCALIBRATED = "the soft prompt was trained after the threshold was chosen: calibrate it again with `python -m " \
               "training.detector --out DIR --calibrate-only`"


@dataclass
class SaptConfig:
    model: str = "embedded"
    out: str = "checkpoints/embedded"  # holds the detector's reminder; the trained soft prompt replaces its own
    epochs: int = 2
    max_steps: int | None = None  # stop after this many optimiser steps in total (None: all epochs)
    lr: float = 1e-2
    weight_decay: float = 0.01
    batch_size: int = 4
    lambda_bce: float = 0.05
    seed: int = 0
    resume: bool = False
    max_harmful: int | None = None  # cap on train prompts per set
    max_benign: int | None = None
    max_val: int | None = None  # cap on validation prompts per set (evaluation and threshold)
    cuts: Cut = "checks"  # partials: at a random check point, or ("random") at a random word boundary
    min_chars: int = 20  # with cuts="random": a non-empty partial response keeps at least this much
    max_new_tokens: int = 96  # of the cached model responses (shared with training.detector)
    max_target_tokens: int = 24  # benign targets: the next tokens of the model's own answer
    eval_examples: int = 16  # validation pairs for on_eval after each epoch (0: none)
    # after training: "threshold" (calibrate it again), "detector" (refit probes too), "none"
    refit: Literal["threshold", "detector", "none"] = "threshold"
    cache: str | None = None
    images: tuple[str, ...] = ()  # image files put in the user turn of extra training conversations
    typographic: int = 0  # image conversations per kind (training.examples.image_conversations; -1: all)
    adversarial: tuple[str, ...] = ()  # adversarial images (files or folders) among the image conversations
    check_start: bool = False  # turn on the reminder's check before the first token (trained for, then calibrated)
    check_end: bool = False  # turn on its check where an answer ends between check points (likewise)
    mode: Literal["continue", "rollback", "regenerate"] | None = None  # set the reminder's mode (None: keep it)
    command: str = ""  # the command line that ran this (recorded in reminder.json)

    def __post_init__(self):
        self.images = image_paths(self.images)
        self.adversarial = image_paths(self.adversarial)


@dataclass
class TrainResult:
    reminder: Reminder
    step: int
    losses: list[float] = field(default_factory=list)
    stopped: bool = False
    folder: Path | None = None
    metrics: dict = field(default_factory=dict)


TrainCallback = Progress  # the one progress protocol (reminder.progress), under the name the app subclasses


@dataclass
class Example:
    pair: Pair
    target: list[int]


def build_examples(adapter, cfg: SaptConfig, split: str = "train", interval: int = 16,
                   start: bool = False, end: bool = False) -> list[Example]:
    """Harmful and benign examples of ``split`` (fixed by ``cfg.seed``), in a fixed order; check points every
    ``interval`` tokens, with ``start`` before the first token and with ``end`` where an answer ended between check
    points (the reminder's)."""
    rng = random.Random(cfg.seed)
    refusals = load_refusals()
    eos = adapter.tokenizer.eos_token_id
    caps = ({"harmful": cfg.max_harmful, "benign": cfg.max_benign} if split == "train"
            else {"harmful": cfg.max_val, "benign": cfg.max_val})
    out: list[Example] = []
    images = cfg.images if split == "train" else ()
    typographic = None if cfg.typographic < 0 else cfg.typographic  # validation: at most 16 per kind
    if split != "train" and cfg.typographic:
        typographic = 16 if typographic is None else min(typographic, 16)
    for ans in labelled_responses(adapter, split, cfg.max_new_tokens, caps, cfg.cache, False, images=images,
                                  typographic=typographic, adversarial=cfg.adversarial):
        points = check_pairs(adapter, ans, interval, cfg.max_new_tokens, start, end) if cfg.cuts == "checks" else []
        if points:
            partial, rest = (p := rng.choice(points)).partial, p.rest
        else:
            partial, rest = cut_response(ans.response, rng, min_chars=cfg.min_chars)
        if ans.unsafe:
            text = (" " if partial else "") + rng.choice(refusals)
            target = adapter.tokens(text)[0].tolist() + [eos]
        else:
            target = adapter.tokens(rest)[0].tolist()[:cfg.max_target_tokens] or [eos]
        out.append(Example(Pair(ans.record.prompt, partial, ans.unsafe, rest, split, ans.image), target))
    return out


def entry_at_start(reminder: Reminder) -> bool:
    """Whether the reminder may enter before the first generated token: it checks there, or a check that fires
    takes the answer back there (``rollback`` to a start no check has passed yet, ``regenerate``)."""
    return reminder.check_start or reminder.mode in ("rollback", "regenerate")


def batch_loss(adapter, reminder: Reminder, soft: torch.Tensor, batch: list[Example], lambda_bce: float,
               weights: tuple[float, float] = (1.0, 1.0)) -> tuple[torch.Tensor, dict[str, float]]:
    """LM cross-entropy on the targets + lambda * BCE of the check detector at the last soft token, the two terms
    scaled by ``weights`` (a process's share of a batch split across processes; see :func:`train`)."""
    targets = [torch.tensor(e.target, device=adapter.device) for e in batch]
    out = soft_batch(adapter, [e.pair for e in batch], soft, reminder.layer, targets)
    ce = F.cross_entropy(out["logits"].flatten(0, 1), out["labels"].flatten(), ignore_index=-100)
    logit = reminder.detector.logit(out["check"])
    labels = torch.tensor([float(e.pair.unsafe) for e in batch], device=logit.device)
    bce = F.binary_cross_entropy_with_logits(logit, labels)
    loss = weights[0] * ce + lambda_bce * weights[1] * bce
    return loss, {"ce": ce.item(), "bce": bce.item(), "p_unsafe": torch.sigmoid(logit).mean().item()}


def step_seconds(adapter, reminder: Reminder, cfg: SaptConfig) -> float:
    """Measured seconds of one training step's forward and backward at its longest (``batch_size`` train prompts,
    each with a ``max_new_tokens`` partial answer and a ``max_target_tokens`` target), on the adapter's device: an
    upper bound on a step for an expected training time. The soft prompt is not changed."""
    from reminder.data import load_prompt_set

    records = load_prompt_set("harmful", "train")[:max(1, cfg.batch_size)]
    filler = " ".join(["step"] * cfg.max_new_tokens)
    target = [adapter.tokenizer.eos_token_id] * cfg.max_target_tokens
    batch = [Example(Pair(r.prompt, filler, 1), target) for r in records]
    # grad on, whatever the calling thread's mode (a streaming app's worker thread may have left inference mode on,
    # so the reminder's tensors are copied out of it first)
    with torch.inference_mode(False), torch.enable_grad():
        probe = dataclasses.replace(reminder, detector=copy.deepcopy(reminder.detector))
        soft = reminder.soft_prompt.embeddings.clone().to(adapter.device, adapter.dtype)[None].requires_grad_(True)
        start = time.perf_counter()
        loss, _ = batch_loss(adapter, probe, soft, batch, cfg.lambda_bce)
        torch.autograd.grad(loss, soft)  # the soft prompt's gradient only, as in training (the model is frozen)
    return time.perf_counter() - start


def train(config: SaptConfig, adapter=None, callback: Callback | None = None,
          stop: threading.Event | None = None) -> TrainResult:
    """Train the soft prompt of the reminder in ``config.out`` (:mod:`training.loop`); returns when done, stopped
    (``stop``) or interrupted. ``callback``: :mod:`reminder.progress` (``on_step``; ``on_eval`` after each epoch)."""
    from accelerate import Accelerator

    cfg, progress = config, Progress.of(callback)
    started = time.perf_counter()
    accelerator = Accelerator(cpu=adapter is not None and adapter.device.type == "cpu")
    adapter = adapter or load_model(cfg.model)
    adapter.model.to(accelerator.device).requires_grad_(False)
    reminder = Reminder.load(cfg.out, adapter)
    if not cfg.resume and "sapt" in reminder.meta:  # a new run on a trained prompt: keep the earlier runs' records
        reminder.meta["sapt_history"] = [*reminder.meta.get("sapt_history", []), reminder.meta.pop("sapt")]
    reminder.meta["uncalibrated"] = UNCALIBRATED  # until the refit: the threshold predates the trained prompt
    reminder.check_start = reminder.check_start or cfg.check_start
    reminder.check_end = reminder.check_end or cfg.check_end
    reminder.mode = cfg.mode or reminder.mode
    reminder.detector.to(accelerator.device)
    examples = build_examples(adapter, cfg, interval=reminder.interval, start=entry_at_start(reminder),
                              end=reminder.check_end)
    soft_module = reminder.soft_prompt.to(accelerator.device)
    optimizer = torch.optim.AdamW(soft_module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    soft_module, optimizer = accelerator.prepare(soft_module, optimizer)
    state = loop.Loop()
    if cfg.resume:
        params, info = load_state(cfg.out, optimizer)
        with torch.no_grad():
            reminder.soft_prompt.embeddings.copy_(params["soft_prompt"])
        state = loop.Loop(info["step"], info["losses"])
    else:
        torch.manual_seed(cfg.seed)
    world = accelerator.num_processes

    def loss_of(idx: list[int], mine: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = [examples[i] for i in mine or idx[:1]]
        # this process's share of the whole batch's token-mean CE and example-mean BCE, times the process count
        # (DDP averages the gradients), so that the update is the one a single process makes on the whole batch
        tokens = sum(len(examples[i].target) for i in idx)
        weights = (world * sum(len(examples[i].target) for i in mine) / tokens, world * len(mine) / len(idx))
        soft = soft_module(adapter.dtype, accelerator.device)  # DDP's forward: backward averages the gradients
        return batch_loss(adapter, reminder, soft, batch, cfg.lambda_bce, weights)

    def save(state: loop.Loop) -> None:
        _checkpoint(accelerator, reminder, optimizer, cfg, state.step, state.losses, started)

    def on_epoch(epoch: int) -> None:
        progress.on_eval(epoch, evaluate(adapter, reminder, cfg))

    state = loop.run(accelerator, optimizer, len(examples), cfg.batch_size, cfg.epochs, cfg.max_steps, cfg.seed,
                     loss_of, save, state, on_epoch=on_epoch, callback=progress, stop=stop, desc="SAPT")
    metrics = {}
    if not state.stopped and cfg.refit != "none":
        metrics = refit(adapter, reminder, cfg)
        save(state)
    return TrainResult(reminder, state.step, state.losses, state.stopped, Path(cfg.out), metrics)


@torch.no_grad()
def evaluate(adapter, reminder: Reminder, cfg: SaptConfig) -> dict[str, Any]:
    """Mean validation loss and detector accuracy at 0.5 on the first ``eval_examples`` validation examples."""
    if not cfg.eval_examples:
        return {}
    val = build_examples(adapter, cfg, "val", reminder.interval, entry_at_start(reminder), reminder.check_end)
    rng = random.Random(cfg.seed)
    val = rng.sample(val, min(cfg.eval_examples, len(val)))
    soft = reminder.soft_prompt(adapter.dtype, adapter.device)
    parts = [batch_loss(adapter, reminder, soft, val[i:i + cfg.batch_size], cfg.lambda_bce)
             for i in range(0, len(val), cfg.batch_size)]
    return {"val_loss": float(np.mean([float(loss) for loss, _ in parts])),
            "val_ce": float(np.mean([p["ce"] for _, p in parts]))}


def refit(adapter, reminder: Reminder, cfg: SaptConfig) -> dict[str, Any]:
    """After training, read the validation generations through the trained prompt and calibrate the threshold again
    (``cfg.refit == "threshold"``), after refitting both probes on features read through it (``"detector"``).

    The detector's own settings (layer, data caps, cuts, ``max_fpr``) come from the reminder's ``detector_config``.
    """
    det_cfg = DetectorConfig.of(reminder)
    det_cfg.cache = cfg.cache or det_cfg.cache
    if cfg.refit == "detector":
        soft = reminder.soft_prompt(adapter.dtype, adapter.device).detach()
        detectors, threshold, metrics = fit(adapter, soft, det_cfg, reminder.interval)
        reminder.detector, reminder.token_detector = detectors["check"], detectors["token"]
        reminder.meta["detector_metrics"] = metrics
    else:
        threshold, calibration = calibrate_reminder(adapter, reminder, det_cfg)
        metrics = {"threshold": threshold, "calibration": calibration}
    reminder.threshold = threshold
    reminder.meta.pop("uncalibrated", None)
    reminder.meta["sapt_refit"] = {"mode": cfg.refit, **metrics}
    return metrics


def _checkpoint(accelerator, reminder: Reminder, optimizer, cfg: SaptConfig, step: int, losses: list[float],
                started: float) -> None:
    """Save the reminder (atomically), then its training state beside it (each file written atomically)."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    reminder.meta["sapt"] = {"step": step, "config": {k: v for k, v in asdict(cfg).items() if k != "resume"},
                             "final_loss": losses[-1] if losses else None,
                             "seconds": round(time.perf_counter() - started, 1), "device": str(accelerator.device),
                             "processes": accelerator.num_processes}
    folder = reminder.save(cfg.out)
    save_state(folder, {"soft_prompt": reminder.soft_prompt.embeddings}, optimizer,
               {"step": step, "losses": losses, "config": asdict(cfg)})


HELP = {
    "max_harmful": "cap on harmful train prompts", "max_benign": "cap on benign train prompts",
    "cuts": "cut responses at a random check point or at a random word boundary",
    "check_start": "also check before the first token: trained for, then calibrated (kept in the reminder)",
    "check_end": "also check an answer that ends between check points: trained for, then calibrated (kept)",
    "refit": "after training: calibrate the threshold again, also refit the probes, or neither",
    "mode": "what guarded generation does when the reminder fires (stored in it; rollback and regenerate are also "
            "trained for before the first token)",
}


def main(argv: list[str] | None = None) -> TrainResult:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(ap, SaptConfig, skip=("command",), help=HELP)
    cfg = config_from_args(SaptConfig, ap.parse_args(argv),
                           command="python -m training.sapt " + shlex.join(sys.argv[1:] if argv is None else argv))
    result = train(cfg)
    print(json.dumps({"step": result.step, "final_loss": result.losses[-1] if result.losses else None,
                      "stopped": result.stopped, **result.metrics}, indent=2))
    return result

if __name__ == "__main__":
    main()
