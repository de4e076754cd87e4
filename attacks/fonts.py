"""Locate TrueType fonts on Debian-like systems, reporting any fallback."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

FONT_DIRS = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
)


@cache
def _locate(name: str) -> Path | None:
    """Return the path of font file ``name`` (a file name or absolute path), if present."""
    path = Path(name)
    if path.is_absolute():
        return path if path.is_file() else None
    for root in FONT_DIRS:
        if root.is_dir():
            hit = next(iter(sorted(root.rglob(name))), None)
            if hit is not None:
                return hit
    return None


def _fc_match(pattern: str) -> Path | None:
    """Ask fontconfig for the font file closest to ``pattern``."""
    if shutil.which("fc-match") is None:
        return None
    result = subprocess.run(
        ["fc-match", "-f", "%{file}", pattern],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    path = Path(result.stdout.strip())
    return (
        path
        if result.returncode == 0 and path.suffix.lower() in {".ttf", ".otf"}
        else None
    )


def find_font(
    candidates: list[str], fallback_note: str, generic: str = "sans-serif"
) -> tuple[str, str | None]:
    """Return ``(font path, note)`` for the first candidate found.

    ``candidates[0]`` is the wanted font; later ones are acceptable fallbacks and,
    if none exists, fontconfig's best match for ``generic`` is used. ``note`` is
    None for the wanted font, otherwise a warning ending with ``fallback_note``.
    """
    if not candidates:
        raise ValueError("find_font needs at least one candidate font")
    wanted = candidates[0]
    found = (p for p in map(_locate, candidates) if p is not None)
    path = next(found, None) or _fc_match(generic)
    if path is None:
        raise FileNotFoundError(
            f"none of the fonts {candidates} found (searched {[str(d) for d in FONT_DIRS]}"
            f" and fontconfig for {generic!r})"
        )
    if path.name == Path(wanted).name:
        return str(path), None
    note = f"{Path(wanted).name} not found; using {path} instead. {fallback_note}"
    return str(path), note
