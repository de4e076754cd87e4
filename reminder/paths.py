"""Where the project's files live: the shipped data (``assets/``, ``checkpoints/``), the user cache and dev data.

In a checkout the shipped data sits at the repository root; an installed (non-editable) package carries the same
folders under ``reminder/_data/`` (see ``[tool.setuptools]`` in pyproject.toml). Code reads them through
:data:`ASSETS` and :data:`CHECKPOINTS` only, so both layouts work unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent  # the checkout root (site-packages in an installed package: nothing shipped there)


def _shipped(name: str) -> Path:
    """``reminder/_data/<name>`` when installed, else ``<checkout>/<name>``."""
    installed = PACKAGE / "_data" / name
    return installed if installed.is_dir() else REPO / name


ASSETS = _shipped("assets")  # prompts/, examples/, attacks/ (precomputed GCG suffixes and PGD/BAP images)
CHECKPOINTS = _shipped("checkpoints")  # the shipped reminders (embedded, embedded-aligned + its LoRA)
PROMPTS = ASSETS / "prompts"
EXAMPLES = ASSETS / "examples"
ATTACKS = ASSETS / "attacks"
SHARED_DATA = REPO.parent / "shared" / "data"  # development/test data beside a checkout; may be absent


def reminder_home() -> Path:
    """The cache folder: ``$REMINDER_HOME`` or ``~/.cache/safety-reminder``."""
    return Path(os.environ.get("REMINDER_HOME", Path.home() / ".cache" / "safety-reminder")).expanduser()


def shipped(path: str | os.PathLike) -> Path:
    """``path`` when it exists; else a checkout-relative ``checkpoints/...`` or ``assets/...`` path mapped to the
    shipped data, so the README's commands (``--reminder checkpoints/embedded``) work from any directory."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute() or not p.parts:
        return p
    root = {"checkpoints": CHECKPOINTS, "assets": ASSETS}.get(p.parts[0])
    return root.joinpath(*p.parts[1:]) if root is not None else p


def default_reminder(model: str) -> Path | None:
    """The reminder shipped for the model named ``model`` (``checkpoints/<model>``), or None: what the CLI and the
    evaluation grid use when no ``--reminder`` is given (``--reminder none`` turns it off)."""
    folder = CHECKPOINTS / model
    return folder if model and "/" not in model and (folder / "reminder.json").is_file() else None


def reminder_arg(arg: str | None, model: str) -> Path | None:
    """A ``--reminder`` value: None (not given) -> the model's shipped reminder; "none" -> None; else the folder."""
    if arg is None:
        return default_reminder(model)
    return None if arg.strip().lower() == "none" else shipped(arg)
