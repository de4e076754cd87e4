"""Safety Reminder: SAPT soft-prompt reminders with guarded, KV-cached generation for VLMs.

    >>> from reminder import load_model, Reminder, generate
    >>> model = load_model("embedded")
    >>> out = generate(model, "What is the capital of France?", max_new_tokens=16)

Layers: a module imports only from its own layer and the layers listed before it (``tests/test_layers.py`` parses
every import and checks this list; a module is named by its dotted path or by a package holding it):

    base: reminder.paths reminder.images reminder.config_cli
    builders: attacks.fonts attacks.figstep attacks.mmsb attacks.prefill attacks.examples attacks.compose
    core: reminder reminder.models reminder.checkpoint reminder.detector reminder.soft_prompt reminder.generation
        reminder.batching reminder.reading reminder.scoring reminder.bundle reminder.workspace reminder.placement
        reminder.progress reminder.jobs
    harness: reminder.data reminder.datasets reminder.judges reminder.harm_probe reminder.defenses reminder.eval
        reminder.compare reminder.compare_view reminder.model_pool reminder.quick_bench reminder.plots reminder.report
        reminder.ontopic reminder.cli reminder.__main__
    optimisers: attacks attacks.common attacks.gcg attacks.pgd attacks.bap
    training: training

The base holds where files live, how an image is opened and how a CLI's flags follow its config; the builders turn
a request into attacked inputs (pure functions of text and images; :data:`attacks.compose.ATTACKS` is the one attack
registry); the core loads models, generates with the reminder, and saves and loads it; the harness evaluates it
(datasets, judges, defences, the benchmark grid, the app's comparison, plots, the CLI); the optimisers (GCG, PGD,
BAP) run on the models; training fits the detector, the soft prompt, the LoRA alignment and the learned judge.
``app.py`` and ``benchmarks/`` sit above all of them.
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
