"""The settings of a detector fit (:mod:`training.detector`), in a module of their own so that the modules the fit
uses (features, calibration, the LLaVA-1.5 check) can name them without importing the fit."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from reminder import Reminder
from reminder.detector import Aggregate
from reminder.soft_prompt import DEFAULT_INIT_TEXT, DEFAULT_TOKENS

from .examples import Cut, image_paths


@dataclass
class DetectorConfig:
    model: str = "embedded"
    out: str = "checkpoints/embedded"
    layer: int = -1
    n_components: int = 0  # 0: the full standardised state; k: PCA to k dimensions first (the paper uses 4)
    c: tuple[float, ...] = (0.001, 0.003, 0.01)  # inverse L2 strengths tried; validation picks one
    max_fpr: float = 0.02  # share of benign validation generations the threshold lets fire
    aggregate: Aggregate = "mean"  # how a generation's checks combine (reminder.detector.gate)
    cuts: Cut = "checks"  # training partials: "checks" (where guarded generation checks) or "random" word cuts
    max_new_tokens: int = 96  # of the model's responses (pairs are cut from them; calibration reads them whole)
    interval: int = 16  # check interval stored in the reminder and used for calibration
    check_start: bool = False  # also check before the first token (stored in the reminder; trained and calibrated)
    check_end: bool = False  # also check an answer that ends between check points (stored; trained and calibrated)
    max_per_split: dict[str, int] = field(default_factory=dict)  # cap prompts per split and set, e.g. {"train": 90}
    openings: tuple[str, ...] = ()  # extra assistant-turn openings for harmful training answers (see load_pairs)
    images: tuple[str, ...] = ()  # image files put in the user turn of extra training conversations (see load_pairs)
    typographic: int = 0  # image conversations per kind and split (training.examples.image_conversations; -1: all)
    adversarial: tuple[str, ...] = ()  # adversarial images (files or folders) among the image conversations
    prompt_from: str | None = None  # read through this reminder's (trained) soft prompt instead of the initial one
    train_cuts: int = 3  # with cuts="random": partials per training response (validation and test: one)
    batch_size: int = 8
    seed: int = 0
    cache: str | None = None  # responses JSONL (default $REMINDER_HOME/responses/<model>[-<lora hash>].jsonl)
    n_tokens: int = DEFAULT_TOKENS
    init_text: str = DEFAULT_INIT_TEXT
    eval_llava: bool = False
    llava_per_file: int = 40
    command: str = ""  # the command line that ran this (recorded in reminder.json)

    def __post_init__(self):
        self.c = (self.c,) if isinstance(self.c, int | float) else tuple(self.c)  # older reminders store one
        self.openings = tuple(self.openings)
        self.images = image_paths(self.images)
        self.adversarial = image_paths(self.adversarial)

    @classmethod
    def of(cls, reminder: Reminder) -> DetectorConfig:
        """The settings the reminder's detector was fitted with (``detector_config`` in its metadata), with the
        reminder's own check points."""
        known = {f.name for f in fields(cls)}
        fitted = {k: v for k, v in reminder.meta.get("detector_config", {}).items() if k in known}
        return cls(**fitted | {"check_start": reminder.check_start, "check_end": reminder.check_end})
