"""Safety Reminder: SAPT soft-prompt reminders with guarded, KV-cached generation for VLMs.

    >>> from reminder import load_model, Reminder, generate
    >>> model = load_model("embedded")
    >>> out = generate(model, "What is the capital of France?", max_new_tokens=16)
"""

from .checkpoint import Reminder, ReminderError
from .detector import Detector
from .generation import CheckEvent, Generation, GenerationConfig, TokenEvent, generate, stream
from .models import DEFAULT_MODEL, REGISTRY, ModelNotFound, Prompt, VLMAdapter, load_model
from .soft_prompt import SoftPrompt

__all__ = [
    "DEFAULT_MODEL", "REGISTRY", "CheckEvent", "Detector", "Generation", "GenerationConfig", "ModelNotFound", "Prompt",
    "Reminder", "ReminderError", "SoftPrompt", "TokenEvent", "VLMAdapter", "generate", "load_model", "stream",
]
