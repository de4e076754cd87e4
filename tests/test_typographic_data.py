"""The typographic prompt sets: the benign set (FigStep titles, MM-SafetyBench phrases, questions about signs) and the
typographic forms of the project's harmful prompts: well-formed, split, joined to harmful.jsonl, legible when
rendered, and written apart from SafeBench."""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections import Counter

import pytest
from PIL import Image, ImageDraw

from attacks import figstep, mmsb
from attacks.typographic import load_typographic_harmful
from reminder import data

TITLE = re.compile(r"^(Steps to|Methods to|List of) \S.*\.$")
STOP = set("a an the to of for in on at and or with from by is are be it its their her his your one's oneself "
           "someone someone's steps methods list tips ways".split())


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (data.PROMPTS_DIR / name).read_text().splitlines() if line.strip()]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def _body(text: str) -> str:
    """A title without its FigStep opening ("Steps to ..."), normalised."""
    return re.sub(r"^(steps to|methods to|list of|ways to) ", "", _norm(text))


def test_benign_typographic_rows_are_well_formed() -> None:
    rows = _rows("typographic.jsonl")
    assert [r["id"] for r in rows] == [f"typo-{i:03d}" for i in range(len(rows))]
    kinds = Counter(r["kind"] for r in rows)
    assert set(kinds) == set(data.TYPO_KINDS)
    assert kinds["figstep"] >= 120 and kinds["mmsb"] >= 100 and kinds["question"] >= 75
    for r in rows:
        base = {"id", "kind", "text", "prompt", "topic", "split"}
        assert set(r) == (base | {"answer"} if r["kind"] == "question" else base), r["id"]
        assert all(isinstance(v, str) and v.strip() == v and v for v in r.values()), r["id"]
        words = len(r["text"].split())
        if r["kind"] == "figstep":
            assert TITLE.match(r["text"]) and words <= 12 and r["prompt"] == figstep.PROMPT, r
        elif r["kind"] == "mmsb":
            assert words <= 8 and not r["text"][0].isupper() and not r["text"].endswith(".")
            assert r["prompt"] == mmsb.PROMPTS["TYPO"], r
        else:
            assert words <= 20 and r["prompt"].endswith("?"), r
            answer = re.sub(r"^the ", "", r["answer"].lower())
            assert answer in r["text"].lower(), r  # the answer can be read off the image
    # each kind split about 60/20/20
    for kind, n in kinds.items():
        splits = Counter(r["split"] for r in rows if r["kind"] == kind)
        assert set(splits) == set(data.SPLITS)
        assert 0.55 <= splits["train"] / n <= 0.65 and all(0.15 <= splits[s] / n <= 0.25 for s in ("val", "test"))
    # no duplicates or near-duplicates (within or across kinds)
    texts = [_body(r["text"]) for r in rows]
    assert len(set(texts)) == len(texts)
    words = [set(t.split()) - STOP for t in texts]
    close = [(rows[i]["text"], rows[j]["text"]) for i, j in itertools.combinations(range(len(rows)), 2)
             if len(words[i] & words[j]) / len(words[i] | words[j]) >= 0.6]
    assert not close


def test_benign_typographic_loader() -> None:
    every = data.load_typographic()
    assert len(every) == len(_rows("typographic.jsonl"))
    assert sum(len(data.load_typographic(s)) for s in data.SPLITS) == len(every)
    assert {r.safe for r in every} == {True}
    questions = data.load_typographic("test", "question")
    assert questions and all(r.split == "test" and r.category == "question" and r.response for r in questions)
    titles = data.load_typographic(kind="figstep")
    assert all(r.prompt == figstep.PROMPT and r.text and r.topic and r.response is None for r in titles)
    with pytest.raises(data.DataError, match="unknown split"):
        data.load_typographic("dev")
    with pytest.raises(data.DataError, match="unknown typographic kind"):
        data.load_typographic(kind="poster")


def test_harmful_typographic_forms_cover_every_harmful_prompt(tmp_path) -> None:
    harmful = _rows("harmful.jsonl")
    rows = _rows("typographic_harmful.jsonl")
    assert [r["id"] for r in rows] == [h["id"] for h in harmful]  # every harmful prompt, once, in order
    for r in rows:
        assert set(r) == {"id", "figstep", "phrase"}
        assert TITLE.match(r["figstep"]) and len(r["figstep"].split()) <= 12, r
        assert not r["phrase"][0].isupper() and not r["phrase"].endswith(".") and len(r["phrase"].split()) <= 8, r
    assert len({_norm(r["figstep"]) for r in rows}) == len(rows)

    by_id = {h["id"]: h for h in harmful}
    for kind, prompt, field in (("figstep", figstep.PROMPT, "figstep"), ("mmsb", mmsb.PROMPTS["TYPO"], "phrase")):
        records = load_typographic_harmful(kind)
        assert [r.text for r in records] == [r[field] for r in rows]
        assert all(r.prompt == prompt and r.safe is False for r in records)
        assert all((r.split, r.category) == (by_id[r.id]["split"], by_id[r.id]["category"]) for r in records)
    assert {r.split for r in load_typographic_harmful(split="train")} == {"train"}
    assert len(load_typographic_harmful("mmsb", "test")) == sum(h["split"] == "test" for h in harmful)
    with pytest.raises(data.DataError, match="unknown typographic attack kind"):
        load_typographic_harmful("question")

    # a typographic row whose harmful prompt is gone is reported, not silently dropped
    (tmp_path / "harmful.jsonl").write_text(json.dumps(harmful[0]) + "\n")
    (tmp_path / "typographic_harmful.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    with pytest.raises(data.DataError, match=rows[1]["id"]):
        load_typographic_harmful(folder=tmp_path)


def test_typographic_texts_fit_their_images() -> None:
    """Every FigStep title wraps inside the 760x760 canvas above its empty list; a sample renders."""
    font, _ = figstep.load_font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = [r.text for r in data.load_typographic(kind="figstep") + load_typographic_harmful("figstep")]
    for title in titles:
        box = draw.multiline_textbbox(figstep.ORIGIN, figstep.figstep_text(title), font=font, spacing=figstep.SPACING)
        assert box[2] <= figstep.CANVAS[0] and box[3] <= figstep.CANVAS[1], title
    longest = max(titles, key=len)
    for title in (titles[0], titles[-1], longest):
        image = figstep.render(title)
        assert image.size == figstep.CANVAS and image.getextrema() != ((255, 255),) * 3
    phrases = [r.text for r in data.load_typographic(kind="mmsb") + load_typographic_harmful("mmsb")]
    for phrase in (phrases[0], phrases[-1], max(phrases, key=len)):
        image = mmsb.typo_image(phrase)
        assert image.width == mmsb.WIDTH and image.height <= mmsb.FONT_SIZE * 4  # at most three lines


def test_no_text_comes_from_safebench(shared) -> None:
    """SafeBench is evaluation data: no typographic text equals one of its questions or instructions."""
    folder = shared / "data" / "FigStep" / "questions"
    with open(folder / "safebench.csv", newline="", encoding="utf-8") as f:
        safebench = [t for r in csv.DictReader(f) for t in (r["question"], r["instruction"])]
    banned = {_norm(t) for t in safebench} | {_body(t) for t in safebench}
    texts = [r["text"] for r in _rows("typographic.jsonl")]
    texts += [t for r in _rows("typographic_harmful.jsonl") for t in (r["figstep"], r["phrase"])]
    assert not [t for t in texts if _norm(t) in banned or _body(t) in banned]
