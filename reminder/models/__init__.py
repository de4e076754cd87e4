"""Model adapters: the embedded offline VLM and real hub VLM families behind one interface."""

from .base import Encoded, Prompt, VLMAdapter
from .registry import DEFAULT_MODEL, REGISTRY, ModelNotFound, load_model

__all__ = ["DEFAULT_MODEL", "REGISTRY", "Encoded", "ModelNotFound", "Prompt", "VLMAdapter", "load_model"]
