"""A reminder on disk: soft prompt + detector(s) + JSON metadata, in one folder, written atomically.

Layout (the only place that reads or writes it)::

    soft_prompt.safetensors   {"prompt_embeddings": [n, d]}       peft's prompt-tuning layout
    adapter_config.json       peft PromptTuningConfig
    detector.safetensors      {"check.*": probe at the last soft-prompt token, "token.*": per-token probe}
    reminder.json             model, hidden size, layer, interval, check_start, check_end, mode, threshold,
                              training metadata, metrics

Only safetensors are read. The official SAPT code's ``.pth`` soft prompts (one key ``embedding.weight``) can be
imported with :func:`import_official_soft_prompt`, which loads them with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .detector import AGGREGATES, Detector
from .soft_prompt import DEFAULT_INIT_TEXT, SoftPrompt

MODES = ("continue", "rollback", "regenerate")  # what guarded generation does when the reminder fires
FILES = ("soft_prompt.safetensors", "adapter_config.json", "detector.safetensors", "reminder.json")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pkl", ".pickle", ".ckpt")


class ReminderError(ValueError):
    """A reminder folder that is missing, malformed, unsafe or for another model (one clear line)."""


@dataclass
class Reminder:
    """A trained reminder: ``soft_prompt`` [n, d], the check probe, an optional per-token probe, metadata."""

    soft_prompt: SoftPrompt
    detector: Detector
    token_detector: Detector | None = None
    model: str = "embedded"
    layer: int = -1
    interval: int = 16
    threshold: float = 0.5
    aggregate: str = "last"  # how checks combine into the gate's score (reminder.detector.gate)
    check_start: bool = False  # also check before the first generated token (on the prompt and any prefill)
    check_end: bool = False  # also check an answer that ends between check points, before it ends
    mode: str = "continue"  # when it fires: go on from it, roll back to the last check that passed, or regenerate
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return self.soft_prompt.embeddings.shape[1]

    @property
    def calibrated(self) -> bool:
        """False when the soft prompt was trained after the threshold was chosen (``uncalibrated`` in the manifest
        says why; calibrating again removes it)."""
        return "uncalibrated" not in self.meta

    def token_probe(self) -> Detector:
        """The probe for per-token scores (the check probe where no separate one was fitted)."""
        return self.token_detector or self.detector

    def check_model(self, adapter) -> None:
        """Refuse a reminder made for another model (hidden size, model name)."""
        if self.hidden_size != adapter.hidden_size:
            raise ReminderError(f"reminder is for hidden size {self.hidden_size} ({self.model}), "
                                f"model '{adapter.name}' has {adapter.hidden_size}")
        if self.model != adapter.name and not self.meta.get("allow_other_model"):
            raise ReminderError(f"reminder was trained for model '{self.model}', not '{adapter.name}'")

    # -- serialisation ----------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the folder atomically (see :func:`write_folder`)."""
        return write_folder(folder, self._fill)

    def _fill(self, tmp: Path) -> None:
        emb = self.soft_prompt.embeddings.detach().float().cpu().contiguous()
        save_file({"prompt_embeddings": emb}, tmp / "soft_prompt.safetensors")
        (tmp / "adapter_config.json").write_text(json.dumps(_peft_config(self), indent=2))
        probes = self.detector.tensors("check")
        if self.token_detector is not None:
            probes.update(self.token_detector.tensors("token"))
        save_file({k: v.cpu() for k, v in probes.items()}, tmp / "detector.safetensors")
        info = {"model": self.model, "hidden_size": self.hidden_size, "n_tokens": self.soft_prompt.n_tokens,
                "layer": self.layer, "interval": self.interval, "threshold": self.threshold,
                "aggregate": self.aggregate, "check_start": self.check_start,
                "check_end": self.check_end, "mode": self.mode, **self.meta}
        (tmp / "reminder.json").write_text(json.dumps(info, indent=2, default=str))

    @classmethod
    def load(cls, folder: str | os.PathLike, adapter=None) -> Reminder:
        """Load a reminder folder (safetensors only); with ``adapter``, check it belongs to that model."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ReminderError(f"reminder folder not found: {folder}")
        missing = [f for f in ("soft_prompt.safetensors", "detector.safetensors", "reminder.json")
                   if not (folder / f).is_file()]
        if missing:
            pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
            hint = (f"; it holds pickle files ({', '.join(pickles)}), which are never loaded: "
                    "import an official .pth soft prompt with `python -m reminder import-pth`") if pickles else ""
            raise ReminderError(f"{folder} is not a reminder folder (missing {', '.join(missing)}){hint}")
        try:
            info = json.loads((folder / "reminder.json").read_text())
            prompt = load_file(folder / "soft_prompt.safetensors")["prompt_embeddings"]
            probes = load_file(folder / "detector.safetensors")
        except (SafetensorError, json.JSONDecodeError, KeyError, UnicodeDecodeError, OSError) as err:
            raise ReminderError(f"{folder}: corrupt reminder file ({type(err).__name__}: {err})") from err
        detector = Detector.from_tensors(probes, "check")
        if detector is None:
            raise ReminderError(f"{folder}/detector.safetensors has no 'check' probe")
        if detector.hidden_size != prompt.shape[-1]:
            raise ReminderError(f"{folder}: detector and soft prompt disagree on the hidden size")
        core = {k: info.pop(k) for k in ("model", "layer", "interval", "threshold", "aggregate", "check_start",
                                              "check_end", "mode")
                if k in info}
        if core.get("mode", "continue") not in MODES:
            raise ReminderError(f"{folder}: unknown mode {core['mode']!r} (known: {', '.join(MODES)})")
        if core.get("aggregate", "last") not in AGGREGATES:
            raise ReminderError(f"{folder}: unknown gate aggregate {core['aggregate']!r} "
                                f"(known: {', '.join(AGGREGATES)})")
        for k in ("hidden_size", "n_tokens"):
            info.pop(k, None)
        rem = cls(SoftPrompt(prompt), detector, Detector.from_tensors(probes, "token"), meta=info, **core)
        if adapter is not None:
            rem.check_model(adapter)
        return rem


def write_folder(folder: str | os.PathLike, fill: Callable[[Path], None], keep: bool = True) -> Path:
    """Create ``folder`` atomically: ``fill`` writes into a sibling temp folder, which then replaces it.

    With ``keep``, entries of an existing ``folder`` that ``fill`` does not write (a training state, a LoRA subfolder)
    are carried over; without, the old folder goes entirely.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    old = folder.with_name(f".{folder.name}.old")
    try:
        fill(tmp)
        if folder.exists():
            for extra in folder.iterdir() if keep else ():
                if not (tmp / extra.name).exists():
                    (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, tmp / extra.name)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create the file ``path`` atomically: ``write(tmp)`` writes a temporary file beside it, which an atomic rename
    then puts in place. Readers never see a partial file, and a failure leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_file`)."""
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Store ``metrics`` under ``"metrics"`` in the JSON manifest at ``path`` (atomic read-modify-write)."""
    info = json.loads(Path(path).read_text())
    info["metrics"] = metrics
    write_text(path, json.dumps(info, indent=2, default=str))


def _peft_config(rem: Reminder) -> dict[str, Any]:
    """peft's PromptTuningConfig fields for this soft prompt (so peft tooling can read the folder)."""
    return {
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": rem.soft_prompt.n_tokens,
        "token_dim": rem.hidden_size, "num_transformer_submodules": 1, "prompt_tuning_init": "TEXT",
        "prompt_tuning_init_text": rem.meta.get("init_text", DEFAULT_INIT_TEXT),
        "base_model_name_or_path": rem.model, "inference_mode": True,
    }


def import_official_soft_prompt(path: str | os.PathLike) -> torch.Tensor:
    """Read an official SAPT ``.pth`` soft prompt (``{"embedding.weight": [n, d]}``) safely: [n, d]."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refuse anything torch will not load without unpickling code
        raise ReminderError(f"{path}: not a weights-only .pth file ({type(err).__name__})") from err
    if not isinstance(state, dict) or "embedding.weight" not in state:
        raise ReminderError(f"{path}: expected one key 'embedding.weight', found {list(state)[:5]}")
    emb = state["embedding.weight"]
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2:
        raise ReminderError(f"{path}: 'embedding.weight' is not a [n, d] tensor")
    return emb.float()
