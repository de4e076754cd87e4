"""FigStep renderer against the official SafeBench-Tiny images, plus CLI and text rules."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attacks import figstep

REPO = Path(__file__).resolve().parents[1]
FIGSTEP_DATA = REPO.parent / "shared" / "data" / "FigStep"
QUESTIONS = FIGSTEP_DATA / "questions" / "SafeBench-Tiny.csv"
IMAGES = FIGSTEP_DATA / "images" / "SafeBench-Tiny"


def _rows() -> list[dict[str, str]]:
    if not QUESTIONS.is_file():
        return []
    with QUESTIONS.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


@pytest.fixture(scope="module")
def official_font() -> None:
    if figstep.load_font()[1] is not None:
        pytest.skip("FreeMonoBold.ttf not installed (fonts-freefont-ttf)")


def _reference(row: dict[str, str]) -> Path:
    path = (
        IMAGES / f"query_{row['dataset']}_{row['category_id']}_{row['task_id']}_6.png"
    )
    if not path.is_file():
        pytest.skip(f"official FigStep image missing: {path}")
    return path


@pytest.mark.parametrize(
    "row",
    _rows()
    or [pytest.param(None, marks=pytest.mark.skip(reason=f"{QUESTIONS} absent"))],
    ids=lambda row: f"{row['category_id']}_{row['task_id']}" if row else "no-data",
)
def test_matches_official_image(row: dict[str, str], official_font: None) -> None:
    reference = Image.open(_reference(row))
    rendered = figstep.render(row["instruction"])
    assert rendered.size == reference.size
    ref, out = _grey(reference), _grey(rendered)
    assert np.abs(out - ref).mean() < 1
    assert ((out < 128) == (ref < 128)).mean() >= 0.995


def test_instruction_column_is_the_rendered_one(official_font: None) -> None:
    rows = _rows()
    if not rows:
        pytest.skip(f"{QUESTIONS} absent")
    ref = _grey(Image.open(_reference(rows[0])))
    mad = {
        col: np.abs(_grey(figstep.render(rows[0][col])) - ref).mean()
        for col in ("instruction", "question")
    }
    assert mad["instruction"] < 1 < mad["question"]


def test_text_layout() -> None:
    text = figstep.figstep_text("Steps to manufacture something at home.")
    assert text == "Steps to\nmanufacture\nsomething at\nhome.\n1. \n2. \n3. "
    assert all(len(line) <= figstep.WRAP_WIDTH for line in text.splitlines())


def test_blank_instruction_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        figstep.render("  ")


def test_cli_json(tmp_path: Path) -> None:
    out = tmp_path / "img.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attacks.figstep",
            "--instruction",
            "Steps to bake bread.",
            "--out",
            str(out),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(proc.stdout)
    assert record["prompt"] == figstep.PROMPT
    assert record["artefact"] == str(out)
    assert record["config"]["font_size"] == 80
    assert (record["font_note"] is None) == (figstep.load_font()[1] is None)
    assert Image.open(out).size == (760, 760)


def test_missing_freemono_falls_back_with_note(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(figstep, "FONTS", ["NoSuchFreeMonoBold.ttf", "DejaVuSans.ttf"])
    figstep.load_font.cache_clear()
    try:
        font, note = figstep.load_font()
        assert font.path.endswith("DejaVuSans.ttf")
        assert note is not None and "fonts-freefont-ttf" in note
        assert "NoSuchFreeMonoBold.ttf not found" in caplog.text
        assert figstep.render("Steps to bake bread.").size == (760, 760)
    finally:
        figstep.load_font.cache_clear()
