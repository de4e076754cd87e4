"""Short model names -> hub ids, and the one loader every entry point uses."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import VLMAdapter
from .families import FAMILIES

REGISTRY: dict[str, str] = {
    "embedded": "embedded",
    "smolvlm-256m": "HuggingFaceTB/SmolVLM-256M-Instruct",
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",
    "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
}


class ModelNotFound(RuntimeError):
    """A model that is neither a local folder nor in the local Hugging Face cache (one clear line)."""


def resolve(name: str) -> tuple[str, str]:
    """(display name, local folder or hub id) for a short name, hub id or folder."""
    if name in REGISTRY:
        if name == "embedded":
            from .embedded import ensure_embedded

            return name, str(ensure_embedded())
        return name, REGISTRY[name]
    return name, name


def _local_folder(target: str) -> Path:
    path = Path(target).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} has no config.json: not a saved model folder")
        return path
    if path.exists():
        raise ModelNotFound(f"{path} is a file; pass a model folder, a hub id or one of {', '.join(REGISTRY)}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(target, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - any miss becomes one clear line
        raise ModelNotFound(
            f"model '{target}' is not a local folder and not in the local Hugging Face cache "
            f"(download it where the hub is reachable: `hf download {target}`, or pass a folder; "
            f"known names: {', '.join(REGISTRY)})"
        ) from err


def load_model(name_or_path: str = "embedded", dtype: torch.dtype | None = None,
               device: str | torch.device | None = None) -> VLMAdapter:
    """Load a VLM by short name, hub id (from the local cache) or folder, wrapped in its family adapter."""
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    display, target = resolve(name_or_path)
    folder = _local_folder(target)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
    if model_type not in FAMILIES:
        raise ModelNotFound(f"{folder}: model type '{model_type}' is not supported "
                            f"(supported: {', '.join(sorted(set(FAMILIES)))})")
    if dtype is None:
        dtype = torch.float32 if (device is None or str(device) == "cpu") else torch.bfloat16
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
    if device is not None:
        model = model.to(device)
    adapter_cls = FAMILIES[model_type]
    model.requires_grad_(False)
    return adapter_cls(model, adapter_cls.load_processor(folder), display)
