"""Font lookup and fallback notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from attacks.fonts import find_font

DEJAVU = "DejaVuSans.ttf"


def test_wanted_font_found_without_note() -> None:
    path, note = find_font([DEJAVU], "unused")
    assert Path(path).name == DEJAVU and Path(path).is_file()
    assert note is None


def test_fallback_candidate_gives_note() -> None:
    path, note = find_font(["NoSuchFont-Bold.ttf", DEJAVU], "Images will differ.")
    assert Path(path).name == DEJAVU
    assert note is not None
    assert note.startswith("NoSuchFont-Bold.ttf not found") and note.endswith(
        "Images will differ."
    )


def test_absolute_path_candidate(tmp_path: Path) -> None:
    path, _ = find_font([str(tmp_path / "missing.ttf"), DEJAVU], "x")
    assert Path(path).name == DEJAVU


def test_empty_candidates_rejected() -> None:
    with pytest.raises(ValueError):
        find_font([], "x")
