"""Short model names -> hub ids, and the one loader every entry point uses."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .. import paths
from .base import VLMAdapter
from .families import FAMILIES

CHECKPOINTS = paths.CHECKPOINTS

DEFAULT_MODEL = "embedded-aligned"  # what the app, the CLI and the evaluation grid load when no model is named

REGISTRY: dict[str, str] = {
    "embedded": "embedded",
    "embedded-aligned": "embedded + LoRA checkpoints/embedded-aligned/lora",
    "smolvlm-256m": "HuggingFaceTB/SmolVLM-256M-Instruct",
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",
    "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
}


class ModelNotFound(RuntimeError):
    """A model that is neither a local folder nor in the local Hugging Face cache (one clear line)."""


def resolve(name: str) -> tuple[str, str, Path | None]:
    """(display name, local folder or hub id, LoRA folder to merge or None) for a short name, hub id or folder."""
    if name in ("embedded", "embedded-aligned"):
        from .embedded import ensure_embedded

        lora = CHECKPOINTS / "embedded-aligned" / "lora" if name == "embedded-aligned" else None
        if lora is not None and not (lora / "adapter_model.safetensors").is_file():
            raise ModelNotFound(f"{lora} has no LoRA adapter: train it with `python -m training.align`")
        return name, str(ensure_embedded()), lora
    return name, REGISTRY.get(name, name), None


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


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype | None = None,
               device: str | torch.device | None = None, lora: str | Path | None = None) -> VLMAdapter:
    """Load a VLM by short name, hub id (from the local cache) or folder, wrapped in its family adapter.

    ``device`` and ``dtype`` default to ``$REMINDER_DEVICE`` (e.g. ``cuda``; else the CPU) and ``$REMINDER_DTYPE``
    (``float32``, ``bfloat16`` or ``float16``; else float32 on the CPU and bfloat16 on an accelerator), so every CLI
    runs on a GPU without a flag of its own. ``lora``: a peft LoRA folder trained on the language model, merged
    into it at load time.
    """
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    from .embedded import EMBEDDED_NAMES, EmbeddedAdapter, embedded_dir

    hf_logging.disable_progress_bar()
    device = device or os.environ.get("REMINDER_DEVICE") or None
    dtype = dtype or _env_dtype()
    display, target, registered_lora = resolve(name_or_path)
    lora = lora or registered_lora
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
    if display in EMBEDDED_NAMES or folder.resolve() == embedded_dir().resolve():
        adapter_cls = EmbeddedAdapter  # the embedded model also reads the words in an image
    adapter = adapter_cls(model, adapter_cls.load_processor(folder), display)
    if lora is not None:
        merge_lora(adapter, lora)
    model.requires_grad_(False)
    return adapter


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _env_dtype() -> torch.dtype | None:
    name = os.environ.get("REMINDER_DTYPE", "").strip()
    if name and name not in DTYPES:
        raise ValueError(f"REMINDER_DTYPE={name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES.get(name)


def merge_lora(adapter: VLMAdapter, folder: str | Path) -> None:
    """Merge a peft LoRA adapter (safetensors) into the adapter's language model, in place."""
    from peft import PeftModel

    weights = Path(folder) / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelNotFound(f"{folder}: no adapter_model.safetensors (a peft LoRA folder is expected)")
    lm = adapter.language_model
    merged = PeftModel.from_pretrained(lm, str(folder)).merge_and_unload()
    parent, attr = adapter.language_model_owner()
    setattr(parent, attr, merged)
    adapter.lora_id = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
