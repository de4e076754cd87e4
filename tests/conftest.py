"""Shared fixtures: the embedded model (built once into REMINDER_HOME) and tiny random models of each family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reminder import DEFAULT_MODEL, Detector, Reminder, SoftPrompt, load_model
from reminder.models.tiny import FAMILIES, build_tiny

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def embedded():
    return load_model("embedded")


@pytest.fixture(scope="session")
def default_model(embedded):
    """The model the app and the CLI load when none is named (DEFAULT_MODEL), loaded once."""
    return embedded if DEFAULT_MODEL == "embedded" else load_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {fam: build_tiny(fam, root / fam) for fam in FAMILIES}


@pytest.fixture(scope="session")
def tiny_models(tiny_folders):
    return {fam: load_model(str(folder)) for fam, folder in tiny_folders.items()}


def random_reminder(adapter, seed: int = 0, threshold: float = 0.5, interval: int = 4) -> Reminder:
    """A reminder with the default soft prompt and a random probe (for mechanics, not for safety)."""
    g = torch.Generator().manual_seed(seed)
    d = adapter.hidden_size
    det = Detector(torch.zeros(d), torch.ones(d), torch.randn(d, generator=g) * 0.05, torch.tensor(0.0))
    return Reminder(SoftPrompt.from_text(adapter), det, model=adapter.name, threshold=threshold, interval=interval)
