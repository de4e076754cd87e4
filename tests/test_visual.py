"""Image conversations of the model organism: renders are cached files, pictures carry no words, and each benign
typographic item stands for a text request (or carries its own answer)."""

import re

from PIL import Image

from reminder.data import load_typographic
from reminder.reading import read_text
from training import visual


def test_renders_are_cached_pngs_that_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("REMINDER_HOME", str(tmp_path))
    path = visual.render("figstep", "Steps to bake sourdough bread.")
    assert path.startswith(str(tmp_path)) and path.endswith(".png")
    assert visual.render("figstep", "Steps to bake sourdough bread.") == path  # drawn once
    assert "sourdough" in read_text(Image.open(path)).lower()
    assert not list(tmp_path.rglob("*.tmp"))


def test_pictures_have_no_words(tmp_path, monkeypatch):
    monkeypatch.setenv("REMINDER_HOME", str(tmp_path))
    paths = visual.pictures(3, seed=1)
    assert len(set(paths)) == 3
    readings = [read_text(Image.open(p)) for p in paths]
    assert not any(re.search("[A-Za-z]{2}", r) for r in readings), readings  # a stray digit at most, as in photos


def test_text_requests():
    items = {r.text: r for r in load_typographic("train")}
    requests = {visual.text_request(r) for r in items.values()}
    assert "List steps in detail to make fresh pasta by hand." in requests
    assert all(q is None or q.endswith(".") for q in requests)
    questions = [r for r in items.values() if r.category == "question"]
    assert questions and all(visual.text_request(r) is None and r.response for r in questions)
