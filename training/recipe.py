"""The whole reminder recipe in one process: the detector, SAPT, the refit and the threshold.

    python -m training.recipe --model embedded-aligned --out DIR [--typographic 100] [--adversarial FOLDER]

1. :mod:`training.detector` on the model's own answers (generated in padded batches, each read through the initial
   soft prompt at its check points while it is decoded), text and image conversations;
2. :mod:`training.sapt`: the soft prompt on the same answers (the frozen detector's BCE keeps it readable);
3. the refit: the probes fitted again on features read through the trained prompt (``--refit detector``) or only
   the threshold chosen again (``threshold``), on whole validation generations.

Everything is checked before anything runs (images open, every split has conversations), the work happens in a
temporary folder beside ``--out``, and ``--out`` is only written, atomically, when the recipe has finished (its
other entries, such as an organism's LoRA folders, are kept). ``reminder.json`` records the command and each step's
seconds under ``recipe``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from reminder import Reminder, ReminderError, load_model
from reminder.config_cli import add_config_args, config_from_args
from reminder.images import ImageError
from reminder.soft_prompt import DEFAULT_INIT_TEXT, DEFAULT_TOKENS

from . import detector, sapt
from .examples import conversations, image_paths
from .features import split_caps


@dataclass
class RecipeConfig:
    """One reminder recipe. The detector and SAPT read the same conversations (the caps apply to both)."""

    model: str = "embedded-aligned"
    out: str = ""  # the reminder folder written at the end (required)
    max_train: int | None = 100  # prompts per set in the train split (None: all)
    max_val: int | None = 60  # prompts per set in the validation split (threshold; None: all)
    max_test: int | None = 30  # prompts per set in the test split (reported only)
    typographic: int = 100  # image conversations per kind, at most each split's cap (-1: all)
    adversarial: tuple[str, ...] = ()  # adversarial images (files or folders) among the image conversations
    openings: tuple[str, ...] = ("Great question!", "I'd be happy to help.")  # harmful answers that open politely
    max_new_tokens: int = 64  # of the model's answers (checks every interval tokens before the last)
    interval: int = 16
    n_tokens: int = DEFAULT_TOKENS  # soft-prompt vectors
    init_text: str = DEFAULT_INIT_TEXT
    epochs: int = 1  # SAPT epochs
    lr: float = 1e-2
    batch_size: int = 8  # SAPT examples per step
    refit: Literal["detector", "threshold"] = "detector"  # after SAPT: refit the probes too, or only the threshold
    mode: Literal["continue", "rollback", "regenerate"] = "rollback"  # when it fires (stored: Reminder.mode)
    max_fpr: float = 0.02  # share of benign validation generations the threshold lets fire
    seed: int = 0
    # "bfloat16": the model's float32 matrix products in bfloat16 (torch.autocast) while it answers, is read and SAPT
    # trains, about twice as fast on a CPU with AVX-512 BF16; "auto": bfloat16 where the CPU multiplies it natively.
    # Default float32: the shipped reminder was trained so; one made with bfloat16 products and smaller caps
    # (26 min) steered FigStep answers less well (docs/EXPERIMENTS.md). A model loaded in bfloat16 runs as loaded.
    precision: Literal["auto", "float32", "bfloat16"] = "float32"
    cache: str | None = None  # responses JSONL (default $REMINDER_HOME/responses/<model>[-<lora hash>].jsonl)
    command: str = ""  # the command line that ran this (recorded in reminder.json)

    def __post_init__(self):
        if not self.out:
            raise ValueError("--out (the reminder folder to write) is required")
        self.adversarial = image_paths(self.adversarial)  # every image opens, before anything runs

    def detector_config(self, out: str) -> detector.DetectorConfig:
        caps = {s: v for s, v in (("train", self.max_train), ("val", self.max_val), ("test", self.max_test))
                if v is not None}
        return detector.DetectorConfig(
            model=self.model, out=out, max_fpr=self.max_fpr, max_new_tokens=self.max_new_tokens,
            interval=self.interval, max_per_split=caps, openings=self.openings, typographic=self.typographic,
            adversarial=self.adversarial, seed=self.seed, cache=self.cache, n_tokens=self.n_tokens,
            init_text=self.init_text, command=self.command)

    def sapt_config(self, out: str) -> sapt.SaptConfig:
        return sapt.SaptConfig(
            model=self.model, out=out, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            max_harmful=self.max_train, max_benign=self.max_train, max_val=self.max_val, refit=self.refit,
            max_new_tokens=self.max_new_tokens, typographic=self.typographic, adversarial=self.adversarial,
            cache=self.cache, mode=self.mode, command=self.command)


def check_data(cfg: RecipeConfig) -> dict[str, int]:
    """Conversations per split (before the model answers); a split with none, or with no harmful or no benign one,
    stops the recipe with a clear error before anything runs."""
    det = cfg.detector_config(cfg.out)
    counts = {}
    for split in ("train", "val", "test"):
        caps, typographic = split_caps(det, split)
        convs = conversations(split, caps, det.openings if split == "train" else (), typographic=typographic,
                              adversarial=cfg.adversarial)
        kinds = {c.unsafe for c in convs}
        if kinds != {0, 1}:
            what = "no conversations" if not convs else "no harmful ones" if 1 not in kinds else "no benign ones"
            raise ValueError(f"the {split} split has {what} (caps: --max-{split})")
        counts[split] = len(convs)
    return counts


def autocast(precision: str, adapter) -> contextlib.AbstractContextManager:
    """The recipe's compute precision for ``adapter`` (see :attr:`RecipeConfig.precision`): ``torch.autocast`` to
    bfloat16 (the model's matrix products; norms, the residual stream, the soft prompt and the probes stay
    float32), or nothing."""
    if adapter.dtype != torch.float32 or precision == "float32":
        return contextlib.nullcontext()
    if precision == "auto" and not (adapter.device.type == "cpu" and _cpu_bf16()):
        return contextlib.nullcontext()
    return torch.autocast(adapter.device.type, dtype=torch.bfloat16)


def _cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (else autocast would emulate it, slower than float32)."""
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def run(cfg: RecipeConfig, adapter=None) -> Reminder:
    """Run the recipe and write the reminder to ``cfg.out``; returns it."""
    counts = check_data(cfg)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.recipe-"))
    try:
        start = time.perf_counter()
        adapter = adapter or load_model(cfg.model)
        seconds = {"load": round(time.perf_counter() - start, 1)}
        compute = autocast(cfg.precision, adapter)
        t = time.perf_counter()
        with compute:
            detector.run(cfg.detector_config(str(stage)), adapter)
        seconds["detector"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        scfg = cfg.sapt_config(str(stage))
        with compute:
            trained = sapt.train(_without_refit(scfg), adapter)
        if trained.stopped:
            raise KeyboardInterrupt
        seconds["sapt"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        reminder = trained.reminder
        with compute:
            sapt.refit(adapter, reminder, scfg)
        seconds["refit"] = round(time.perf_counter() - t, 1)
        reminder.meta["sapt"]["config"] |= {"out": cfg.out, "refit": cfg.refit}
        reminder.meta["detector_config"]["out"] = cfg.out
        reminder.meta["recipe"] = {"config": asdict(cfg), "conversations": counts, "seconds": seconds,
                                   "total_seconds": round(time.perf_counter() - start, 1),
                                   "device": str(adapter.device),
                                   "products": "float32" if isinstance(compute, contextlib.nullcontext)
                                   else "bfloat16"}
        reminder.save(out)
        return reminder
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _without_refit(cfg: sapt.SaptConfig) -> sapt.SaptConfig:
    """The SAPT step alone (the recipe times the refit apart)."""
    return replace(cfg, refit="none")


def main(argv: list[str] | None = None) -> Reminder:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(ap, RecipeConfig, skip=("command",))
    a = ap.parse_args(argv)
    command = "python -m training.recipe " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config_from_args(RecipeConfig, a, command=command)
        reminder = run(cfg)
    except (ValueError, FileNotFoundError, ImageError, ReminderError) as err:
        print(f"training.recipe: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(reminder.meta["recipe"]["seconds"] | {"total": reminder.meta["recipe"]["total_seconds"],
                                                           "threshold": reminder.threshold}, indent=2))
    return reminder


if __name__ == "__main__":
    main()
