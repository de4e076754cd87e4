"""Reminders as zip files (import with safety checks, export) and the reminder folders found on disk."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .checkpoint import FILES, PICKLE_SUFFIXES, Reminder, ReminderError
from .paths import CHECKPOINTS

MAX_UNZIPPED_BYTES = 512 * 2**20  # a reminder is a few soft-prompt vectors and probes: far below this


def checkpoint_roots(default: str = str(CHECKPOINTS)) -> list[Path]:
    """Where reminder folders live: ``$REMINDER_CHECKPOINTS`` (os.pathsep-separated), else ``default``."""
    return [Path(p).expanduser() for p in os.environ.get("REMINDER_CHECKPOINTS", default).split(os.pathsep)]


def find_reminders(model: str, roots: list[Path] | None = None) -> dict[str, Path]:
    """Reminder folders under ``roots`` that load and were made for ``model``: {label: folder}."""
    found: dict[str, Path] = {}
    for root in roots if roots is not None else checkpoint_roots():
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                if Reminder.load(folder).model != model:
                    continue
            except ReminderError:
                continue
            found[folder.name if folder.name not in found else str(folder)] = folder
    return found


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The reminder files in the zip by file name, refusing pickles, links, escaping paths and zip bombs."""
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in zf.infolist():
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if info.is_dir():
            continue
        if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", info.filename):
            raise ReminderError(f"zip entry '{info.filename}' points outside its folder: refused")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise ReminderError(f"zip entry '{info.filename}' is a symbolic link: refused")
        if path.suffix in PICKLE_SUFFIXES:
            raise ReminderError(f"zip holds a pickle file ('{info.filename}'): only safetensors reminders are loaded")
        if len(path.parts) > 2:
            raise ReminderError(f"zip entry '{info.filename}' is nested too deep: expected the reminder files at "
                                "the top or in one folder")
        total += info.file_size
        if total > MAX_UNZIPPED_BYTES:
            raise ReminderError(f"zip unpacks to more than {MAX_UNZIPPED_BYTES >> 20} MiB: not a reminder")
        if path.name in FILES:
            if path.name in members:
                raise ReminderError(f"zip holds '{path.name}' twice")
            members[path.name] = info
    return members


def import_zip(path: str | os.PathLike, dest_root: str | os.PathLike, adapter=None) -> Path:
    """Unpack a reminder zip into a new folder under ``dest_root`` and load-check it (for ``adapter``'s model).

    Raises ReminderError (one line) for a malformed zip, pickles, paths outside the folder, or another model.
    """
    path, dest_root = Path(path), Path(dest_root)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ReminderError(f"{path.name} is not a readable zip file ({err})") from err
    with zf:
        members = _members(zf)
        missing = [f for f in ("soft_prompt.safetensors", "detector.safetensors", "reminder.json") if f not in members]
        if missing:
            raise ReminderError(f"{path.name} is not a reminder zip (missing {', '.join(missing)})")
        dest_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".import-"))
        try:
            for name, info in members.items():
                with zf.open(info) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            Reminder.load(tmp, adapter)  # refuses corrupt files and reminders for another model
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip(".-") or "reminder"
            folder = dest_root / stem
            n = 1
            while folder.exists():
                n += 1
                folder = dest_root / f"{stem}-{n}"
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def export_zip(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Zip a reminder folder's files (flat) to ``out`` (default: a temp file named after the folder)."""
    folder = Path(folder)
    Reminder.load(folder)  # only export what loads
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="reminder-")) / f"{folder.name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in FILES:
            if (folder / name).is_file():
                zf.write(folder / name, name)
    return out
