"""Resumable training state without pickles: parameters, AdamW moments and the RNG in safetensors, the rest in JSON.

Both files are written atomically next to the checkpoint they belong to, so an interrupted run either sees the
previous complete state or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reminder.checkpoint import write_file, write_text

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def save_state(folder: str | os.PathLike, params: dict[str, torch.Tensor], optimizer, info: dict[str, Any]) -> None:
    """Save trainable ``params``, the optimizer's state and torch's RNG into ``folder``."""
    folder = Path(folder)
    opt = optimizer.state_dict()
    tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    tensors["rng"] = torch.get_rng_state()
    scalars: dict[str, dict[str, float]] = {}
    for pid, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.ndim > 0:
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = float(v)
    meta = {**info, "param_groups": opt["param_groups"], "scalars": scalars}
    write_file(folder / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
    write_text(folder / STATE_JSON, json.dumps(meta, indent=1, default=str))


def load_state(folder: str | os.PathLike, optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore the optimizer and torch's RNG from ``folder``; return (params, info)."""
    folder = Path(folder)
    if not (folder / STATE_TENSORS).is_file() or not (folder / STATE_JSON).is_file():
        raise FileNotFoundError(f"--resume: no training state in {folder} (start without --resume)")
    tensors = load_file(folder / STATE_TENSORS)
    info = json.loads((folder / STATE_JSON).read_text())
    per: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            per.setdefault(int(pid), {})[name] = v
    for pid, scalars in info.pop("scalars").items():
        per.setdefault(int(pid), {}).update({k: torch.tensor(v) for k, v in scalars.items()})
    optimizer.load_state_dict({"state": per, "param_groups": info.pop("param_groups")})
    torch.set_rng_state(tensors["rng"])
    return {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}, info
