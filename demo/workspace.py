"""Where the app keeps the reminders its visitors make: shipped folders are read-only, a visitor's own go under
``$REMINDER_HOME/reminders`` (on a shared Space, under one subfolder per browser session).

The policy in one place, for the app and its tests:

* a reminder name is one plain folder name (letters, digits, ``-``, ``_``, ``.``; no path tricks);
* Train writes only into the visitor's own folder: a new name starts from a copy of a reminder the visitor can see,
  an existing name of theirs is refused unless they ask to continue training it, a shipped name is always refused;
* a visitor loads only reminders under the shipped roots or their own folder (never another session's);
* a reminder whose prompt changed after its threshold was chosen is marked ``uncalibrated`` in its manifest
  (:attr:`reminder.checkpoint.Reminder.calibrated`), and its label says so.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from reminder.bundle import checkpoint_roots, find_reminders
from reminder.checkpoint import Reminder, ReminderError
from reminder.paths import reminder_home

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
UNCALIBRATED = "uncalibrated"


class WorkspaceError(ReminderError):
    """A refused name, folder or ownership (one clear line)."""


def on_space() -> bool:
    """True on a Hugging Face Space (it sets ``SPACE_ID``): a shared app with many visitors."""
    return bool(os.environ.get("SPACE_ID"))


def session_folder(session: str) -> str:
    """The folder name of a browser session: 16 hex of sha256(id) (the id comes from the client: never a path)."""
    if not session:
        raise WorkspaceError("no browser session: reload the page")
    return hashlib.sha256(session.encode()).hexdigest()[:16]


def check_name(name: str) -> str:
    """``name`` if it is one plain folder name, else WorkspaceError."""
    if not NAME.fullmatch(name or "") or ".." in name:
        raise WorkspaceError(f"reminder name {name!r} refused: use 1-64 letters, digits, '-', '_' and '.', "
                             "starting with a letter or digit")
    return name


def label(name: str, reminder: Reminder) -> str:
    """The dropdown label of a reminder: its name, with "(uncalibrated)" when its threshold predates its prompt."""
    return name if reminder.calibrated else f"{name} ({UNCALIBRATED})"


@dataclass(frozen=True)
class TrainPlan:
    """Where a Train click writes and what it starts from: ``base`` copied into the new ``folder`` (``continued``:
    the visitor's existing folder is trained further; ``base`` None and not continued: fit a detector first)."""

    folder: Path
    base: Path | None = None
    continued: bool = False


@dataclass(frozen=True)
class Workspace:
    """One visitor's view: read-only ``shipped`` roots and their own writable ``root`` (None: no session known, so
    nothing of their own; only the shipped reminders)."""

    root: Path | None
    shipped: tuple[Path, ...]

    @classmethod
    def open(cls, session: str | None = None, per_session: bool | None = None, home: Path | None = None,
             shipped: list[Path] | None = None) -> Workspace:
        """The workspace of ``session``: ``$REMINDER_HOME/reminders`` or, ``per_session`` (default: on a Space),
        ``$REMINDER_HOME/reminders/sessions/<sha256 of the session id>``. Shipped: ``checkpoint_roots()``."""
        base = Path(home or reminder_home()) / "reminders"
        per_session = on_space() if per_session is None else per_session
        root = base if not per_session else base / "sessions" / session_folder(session) if session else None
        shipped = shipped if shipped is not None else checkpoint_roots()
        return cls(root, tuple(Path(p) for p in shipped))

    def roots(self) -> list[Path]:
        return [*self.shipped, *([self.root] if self.root else [])]

    def own_root(self) -> Path:
        """The visitor's writable folder (WorkspaceError without a session)."""
        if self.root is None:
            raise WorkspaceError("no browser session: reload the page")
        return self.root

    def is_shipped(self, path: str | os.PathLike) -> bool:
        real = Path(path).resolve()
        return any(real.is_relative_to(r.resolve()) for r in self.shipped)

    def owns(self, path: str | os.PathLike) -> bool:
        """True for a folder directly in this visitor's root that is not also shipped."""
        real = Path(path).resolve()
        return self.root is not None and real.parent == self.root.resolve() and not self.is_shipped(real)

    def choices(self, model: str) -> list[tuple[str, str]]:
        """(label, folder) of every reminder this visitor can use with ``model``: shipped first, then their own."""
        out = []
        for name, folder in find_reminders(model, self.roots()).items():
            try:
                out.append((label(name, Reminder.load(folder)), str(folder)))
            except ReminderError:
                continue
        return out

    def resolve(self, choice: str, model: str | None = None) -> Path:
        """The folder of a dropdown value (a folder path or a label) that this visitor may read, else
        WorkspaceError; with ``model``, a label is looked up among that model's reminders."""
        path = Path(choice)
        if path.is_absolute() or os.sep in choice or "/" in choice:
            if (path.resolve().parent in {r.resolve() for r in self.roots()}) and path.is_dir():
                return path
            raise WorkspaceError(f"reminder {choice!r} is not one of yours or a shipped one")
        for lab, folder in self.choices(model) if model else []:
            if choice in (lab, Path(folder).name):
                return Path(folder)
        raise WorkspaceError(f"no reminder named {choice!r}" + (f" for model '{model}'" if model else ""))

    def pick(self, model: str, choice: str | None = None, adapter=None) -> Reminder:
        """The chosen reminder (one this visitor may read), or the first one found for ``model``."""
        if not choice:
            found = self.choices(model)
            if not found:
                raise WorkspaceError(f"no reminder for model '{model}' in {', '.join(map(str, self.roots()))}: "
                                     "train one (Train tab) or upload a reminder zip")
            choice = found[0][1]
        return Reminder.load(self.resolve(choice, model), adapter)

    def peek(self, choice: str | None) -> Reminder | None:
        """The chosen reminder without a model (its manifest and gate), or None: none chosen, or not readable."""
        try:
            return Reminder.load(self.resolve(choice)) if choice else None
        except ReminderError:
            return None

    def plan_training(self, name: str, base: str | os.PathLike | None, continue_training: bool) -> TrainPlan:
        """Decide where a Train click writes (see the module docstring); refuse with a WorkspaceError."""
        name = check_name(name)
        folder = self.own_root() / name
        if any((r / name).exists() for r in self.shipped):
            raise WorkspaceError(f"'{name}' is a shipped reminder: shipped reminders are read-only; choose another "
                                 "name (training starts from a copy of the reminder picked in Compare)")
        if folder.exists():
            if not continue_training:
                raise WorkspaceError(f"you already have a reminder named '{name}': tick 'continue training' to "
                                     "train it further, or choose another name")
            if not self.owns(folder):
                raise WorkspaceError(f"'{name}' is not your reminder: it cannot be trained here")
            return TrainPlan(folder, continued=True)
        if continue_training:
            raise WorkspaceError(f"you have no reminder named '{name}' to continue: untick 'continue training' to "
                                 "start a new one")
        if base is not None and not (self.is_shipped(base) or self.owns(base)):
            raise WorkspaceError(f"reminder {str(base)!r} is not one of yours or a shipped one")
        return TrainPlan(folder, Path(base) if base else None)

    def free_name(self, stem: str) -> str:
        """``stem``, or ``stem-2``, ``stem-3``... : the first name neither shipped nor already this visitor's."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip(".-") or "reminder"
        n, name = 1, stem
        while (self.own_root() / name).exists() or any((r / name).exists() for r in self.shipped):
            n += 1
            name = f"{stem}-{n}"
        return name


def start_copy(base: str | os.PathLike, folder: str | os.PathLike, adapter=None) -> Reminder:
    """Write a copy of the reminder in ``base`` into the new ``folder`` (its metrics measured on the old prompt
    dropped, its origin recorded); ``base`` is only read."""
    rem = Reminder.load(base, adapter)
    rem.meta.pop("metrics", None)
    rem.meta["copied_from"] = Path(base).name
    rem.save(folder)
    return rem
