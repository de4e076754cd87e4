"""The app's loaded models: each loaded once, at most two at a time, shared by every visitor's calls.

:meth:`ModelPool.on_gpu` wraps an app call so that, on a ZeroGPU Space (the ``spaces`` package), the model named by
the call's ``model`` argument runs on the GPU for the call (:mod:`demo.placement`).
"""

from __future__ import annotations

import functools
import inspect
import threading

import torch

from reminder.generation import generate
from reminder.models import DEFAULT_MODEL, VLMAdapter, load_model

from .jobs import USER_ERRORS
from .placement import place, placed

try:
    import spaces
except ImportError:
    spaces = None


class ModelPool:
    """Adapters by name, loaded on first use; at most ``size`` in memory (``default`` is never the one dropped)."""

    def __init__(self, default: str = DEFAULT_MODEL, size: int = 2):
        self.default, self.size = default, size
        self.models: dict[str, VLMAdapter] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> VLMAdapter:
        """The adapter for ``name``, loaded on first use and kept."""
        with self._lock:
            if name not in self.models:
                if len(self.models) >= self.size:
                    self.models.pop(next(k for k in self.models if k != self.default))
                self.models[name] = load_model(name)
            return self.models[name]

    def warm_up(self, image=None) -> None:
        """Load the default model and run one token (and read ``image``: a reading model loads its OCR engine), so
        the first click does not pay for lazy initialisation."""
        from .compare import read_image

        with self._lock:  # held throughout: a click waits for the warm model instead of loading a second copy
            if self.default not in self.models:
                self.models[self.default] = load_model(self.default)
            generate(self.models[self.default], "Hi", max_new_tokens=1)
            read_image(self.models[self.default], image)

    def on_gpu(self, fn):
        """``@spaces.GPU`` where the package is there; inside the call the model named by ``fn``'s ``model``
        argument runs on the GPU (moved there for the call and back afterwards). A model that fails to load is left
        for the call itself to report."""
        sig = inspect.signature(fn)

        def placement(args, kwargs):
            try:
                adapter = self.get(sig.bind_partial(*args, **kwargs).arguments.get("model", self.default))
            except USER_ERRORS:  # the call itself reports it
                return placed(None, place("cpu", False, False))
            return placed(adapter, place(adapter.device.type, spaces is not None, torch.cuda.is_available()))

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def call(*args, **kwargs):
                with placement(args, kwargs):
                    yield from fn(*args, **kwargs)
        else:
            @functools.wraps(fn)
            def call(*args, **kwargs):
                with placement(args, kwargs):
                    return fn(*args, **kwargs)
        return spaces.GPU(call) if spaces is not None else call
