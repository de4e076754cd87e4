"""Shared pieces of the optimisation attacks (GCG, PGD, BAP): results, the target loss, CLI. Progress and cancellation
are the one protocol of :mod:`reminder.progress` (``callback``: a Progress or a ``(step, loss)`` function; ``stop``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from reminder.checkpoint import write_text
from reminder.models.base import Prompt, VLMAdapter


@dataclass
class AttackResult:
    """What every attack returns. ``losses``: one per step; ``stopped``: cancelled through ``stop`` before the end.

    Fields declared with ``metadata={"json": False}`` (images, tensors) are left out of :meth:`to_dict`.
    """

    config: dict
    losses: list[float] = field(default_factory=list)
    best_loss: float = float("inf")
    seconds_per_step: float = 0.0
    seed: int = 0
    artefact: str | None = None
    stopped: bool = False
    command: str | None = None  # the CLI command that made it (seeded: it remakes the result)

    def to_dict(self) -> dict:
        keep = {f.name for f in fields(self) if f.metadata.get("json", True)}
        return {k: v for k, v in asdict(self).items() if k in keep}

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomically)."""
        return save_json(self.to_dict(), path)


def save_json(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON through a temporary file and an atomic rename."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def save_image_result(result: AttackResult, out: str | Path) -> Path:
    """Write ``result.image`` as a lossless PNG at ``out`` and the result JSON beside it (``.json``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.image.save(out, format="PNG")
    result.artefact = str(out)
    result.save(out.with_suffix(".json"))
    return out


def batch_positions(positions: torch.Tensor, batch: int) -> torch.Tensor:
    """Positions for one sequence ([1, T] or M-RoPE [3, 1, T]) broadcast to ``batch`` rows ([B, T] / [3, B, T])."""
    return positions.expand(*positions.shape[:-2], batch, positions.shape[-1])


def target_ce(adapter: VLMAdapter, hidden: torch.Tensor, target_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced target loss from the final hidden states that predict the target tokens.

    ``hidden``: [B, T, d], row t predicts target token t; ``target_ids``: [1, T] or [B, T].
    Returns (mean cross-entropy per row [B], exact greedy match per row [B] bool).
    """
    logits = adapter.logits(hidden)  # [B, T, V]
    target = target_ids.expand(hidden.shape[0], -1)
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(-1)
    return ce, (logits.argmax(-1) == target).all(-1)


def target_loss(adapter: VLMAdapter, prompt: Prompt, target: str,
                pixels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean CE of ``target`` appended after the prompt's assistant turn (teacher-forced); differentiable in ``pixels``.

    The prompt must end with the assistant turn (``adapter.build`` does); ``pixels`` overrides the prompt's image.
    """
    ids = adapter.tokens(target)
    if ids.shape[1] == 0:
        raise ValueError("target must be non-empty text")
    enc = adapter.encode(prompt, pixels)
    hidden, _ = adapter.forward(*adapter.extend(enc, ids))
    n = enc.embeds.shape[1]
    return target_ce(adapter, hidden[:, n - 1: -1], ids)[0][0]


def parse_fraction(text: str) -> float:
    """'16/255' or '0.0627' -> float (for ``--eps`` / ``--alpha``)."""
    try:
        num, _, den = text.partition("/")
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


def add_common_args(parser: argparse.ArgumentParser, target: bool = True) -> argparse.ArgumentParser:
    """``--model --prompt [--target] --out --json`` (``--prompt``/``--target`` may repeat); each attack adds its
    config's flags (:func:`reminder.config_cli.add_config_args`: ``--steps``, ``--seed``, ...)."""
    parser.add_argument("--model", default="embedded", help="model name, hub id or folder")
    parser.add_argument("--prompt", action="append", required=True, help="user request (repeatable where supported)")
    if target:
        parser.add_argument("--target", action="append", required=True, help="wanted start of the answer")
    parser.add_argument("--out", help="where to write the artefact / result JSON")
    parser.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    return parser


def cli_command(module: str, argv: list[str] | None) -> str:
    """The shell command line of a CLI run, e.g. ``python -m attacks.gcg --model embedded ...``."""
    import shlex
    import sys

    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def print_progress(step: int, loss: float) -> None:
    """The CLI's progress callback (stderr, so stdout stays JSON)."""
    import sys

    print(f"step {step}: loss {loss:.4f}", file=sys.stderr, flush=True)


def emit(result: AttackResult, as_json: bool) -> None:
    """Print the result: JSON on stdout with ``--json``, else a one-line summary."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        first = result.losses[0] if result.losses else float("nan")
        print(f"loss {first:.4f} -> best {result.best_loss:.4f} in {len(result.losses)} steps "
              f"({result.seconds_per_step:.2f} s/step){'; artefact ' + result.artefact if result.artefact else ''}")
