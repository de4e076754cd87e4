"""Safety Reminder: SAPT soft-prompt reminders with guarded, KV-cached generation for VLMs.

    >>> from reminder import load_model, Reminder, generate
    >>> model = load_model("embedded")
    >>> out = generate(model, "What is the capital of France?", max_new_tokens=16)

The core library: models and their adapters, reading (OCR), guarded generation, the soft prompt, the detector, the
reminder on disk, the judges, the data loaders, the CLI (``python -m reminder``) and the small base they share (paths,
images, progress, config flags). It imports nothing from the layers above it, which build on it in one direction:

    reminder (core) < attacks < training < evaluation < demo (the app's policy) < app.py, benchmarks/

``pyproject.toml`` declares this as import-linter contracts (``lint-imports``; ``tests/test_layers.py`` runs them).
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
