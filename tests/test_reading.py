"""The embedded model's reading channel: what it reads, where the words go, caching, bad images, and every entry point
(CLI JSON, guarded decoding, PGD, the app's note) using it the same way."""

from __future__ import annotations

import io
import json
import time

import torch
from conftest import random_reminder
from PIL import Image, ImageDraw, ImageFont

from attacks import figstep, mmsb, pgd
from attacks.fonts import find_font
from demo.compare import read_image, reading_note
from reminder import generate
from reminder.cli import main
from reminder.images import open_image
from reminder.reading import Reader, ReadingConfig, reader, word_recall, words

INSTRUCTION = "Steps to bake sourdough bread at home."  # a benign sentence of our own
PHRASE = "repair a bicycle chain"


def read_span(adapter, prompt) -> torch.Tensor:
    """The token ids between the last patch token and the closing image marker."""
    ids = prompt.input_ids[0]
    last = int((ids == adapter.image_token_id).nonzero()[-1])
    close = adapter.tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
    end = last + 1 + int((ids[last + 1:] == close).nonzero()[0])
    return ids[last + 1:end]


def test_words_are_read_into_the_image_span(embedded):
    image = figstep.render(INSTRUCTION)
    prompt = embedded.build(figstep.PROMPT, image)
    assert word_recall(INSTRUCTION, prompt.image_text) >= 0.9
    span = read_span(embedded, prompt)
    assert len(span) > 0 and embedded.tokenizer.decode(span) == prompt.image_text
    assert int((prompt.input_ids == embedded.image_token_id).sum()) == 64  # the patches stay beside the words
    plain = embedded.build(figstep.PROMPT)
    assert prompt.image_text is not None and plain.image_text is None
    assert mmsb.PROMPTS["TYPO"] not in prompt.image_text  # the text prompt stays in the user turn, not the image


def test_same_image_same_tokens_read_once(embedded):
    r = reader()
    image = mmsb.typo_image(PHRASE)
    first = embedded.build(mmsb.PROMPTS["TYPO"], image)
    reads = r.reads
    again = embedded.build("Another question.", mmsb.typo_image(PHRASE))  # a new object with the same pixels
    assert r.reads == reads and r.cached(image)
    assert torch.equal(read_span(embedded, first), read_span(embedded, again))
    assert word_recall(PHRASE, first.image_text) == 1.0


def test_image_without_text_reads_nothing(embedded):
    image = pgd.base_image()
    prompt = embedded.build("Describe the image.", image)
    assert prompt.image_text == "" and len(read_span(embedded, prompt)) == 0
    assert reading_note("") .endswith("no words in this image.") and reading_note(None) == ""


def test_real_families_read_with_their_own_tower(tiny_models):
    for adapter in tiny_models.values():
        prompt = adapter.build(figstep.PROMPT, figstep.render(INSTRUCTION))
        assert prompt.image_text is None and adapter.reading is None and read_image(adapter, None) is None


def test_never_firing_guard_is_token_identical_with_a_reading_image(embedded):
    prompt = embedded.build(figstep.PROMPT, figstep.render(INSTRUCTION))
    plain = generate(embedded, prompt, max_new_tokens=24)
    rem = random_reminder(embedded, interval=8)
    for check in ("fused", "separate"):
        guarded = generate(embedded, prompt, reminder=rem, threshold=1.01, max_new_tokens=24, check=check)
        assert guarded.token_ids == plain.token_ids and len(guarded.checks) == 2 and not guarded.injections


def test_palette_and_alpha_pngs_read_on_white(embedded, tmp_path):
    font = ImageFont.truetype(find_font(mmsb.FONTS, "")[0], 90)
    rgba = Image.new("RGBA", (1024, 200), (0, 0, 0, 0))  # transparent black: dropping alpha would hide the text
    ImageDraw.Draw(rgba).text((10, 40), "bicycle chain", fill=(0, 0, 0, 255), font=font)
    rgba.save(tmp_path / "alpha.png")
    palette = Image.new("P", rgba.size, 0)  # index 0: transparent black paper, index 1: black ink
    palette.putpalette([0, 0, 0, 0, 0, 0])
    ImageDraw.Draw(palette).text((10, 40), "bicycle chain", fill=1, font=font)
    palette.save(tmp_path / "palette.png", transparency=0)
    la = rgba.convert("LA")
    la.save(tmp_path / "la.png")
    for name in ("alpha.png", "palette.png", "la.png"):
        image, _ = open_image(tmp_path / name)
        assert image.mode == "RGB"
        assert words(embedded.build("What does it say?", image).image_text) == ["bicycle", "chain"], name
    assert words(read_image(embedded, rgba)) == ["bicycle", "chain"]  # a PIL image with alpha, not via a file


def test_huge_image_is_scaled_down_before_ocr(tmp_path):
    big = Image.new("RGB", (8000, 6250), "white")  # 50 megapixels
    font = ImageFont.truetype(find_font(mmsb.FONTS, "")[0], 600)
    ImageDraw.Draw(big).text((300, 2500), "open the door", fill="black", font=font)
    r = Reader()
    r.engine()
    start = time.perf_counter()
    text = r.read(big)  # straight to the reader (no open_image downscaling first)
    assert time.perf_counter() - start < 60  # about 1 s alone: bounded by ReadingConfig.max_side, not by the input
    assert words(text) == ["open", "the", "door"]
    buf = io.BytesIO()
    big.save(buf, format="PNG", compress_level=1)
    buf.seek(0)
    opened, note = open_image(buf)
    assert "downscaled" in note and words(r.read(opened)) == ["open", "the", "door"]


def test_two_thousand_words_are_capped(embedded):
    cfg = ReadingConfig()
    font = ImageFont.truetype(find_font(mmsb.FONTS, "")[0], 18)
    lines = [" ".join(f"word{i * 20 + j}" for j in range(20)) for i in range(100)]  # 2,000 words
    image = Image.new("RGB", (int(max(font.getlength(line) for line in lines)) + 20, 100 * 24 + 20), "white")
    ImageDraw.Draw(image).multiline_text((10, 10), "\n".join(lines), fill="black", font=font, spacing=6)
    start = time.perf_counter()
    prompt = embedded.build("Read this.", image)
    assert time.perf_counter() - start < 90  # about 1.5 s alone: recognition stops at ReadingConfig.max_line_px
    span = read_span(embedded, prompt)
    assert len(span) == cfg.max_tokens and prompt.image_text == embedded.tokenizer.decode(span)
    assert {"word1", "word2", "word3"} <= set(words(prompt.image_text)[:8])  # reading order: the first line first


def test_cli_json_carries_image_text(tmp_path, capsys):
    figstep.render(INSTRUCTION).save(tmp_path / "fig.png")
    pgd.base_image().save(tmp_path / "plain.png")
    rows = [{"id": "fig", "prompt": figstep.PROMPT, "image": "fig.png"},
            {"id": "plain", "prompt": "Describe the image.", "image": "plain.png"},
            {"id": "text", "prompt": "Hello"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["generate", "--model", "embedded", "--max-new-tokens", "2", "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert word_recall(INSTRUCTION, out["fig"]["image_text"]) >= 0.9
    assert out["plain"]["image_text"] == "" and out["text"]["image_text"] is None
    capsys.readouterr()
    assert main(["generate", "--prompt", "Describe the image.", "--image", str(tmp_path / "plain.png"),
                 "--max-new-tokens", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image_text"] == ""


def test_pgd_holds_the_reading_and_reads_the_png_again(embedded):
    start = figstep.render(INSTRUCTION)
    result = pgd.run(embedded, ["Answer the question in the image."], ["Sure, here is"], start,
                     pgd.PGDConfig(steps=1))
    assert word_recall(INSTRUCTION, result.image_text) >= 0.9  # read from the starting image, held fixed
    assert result.image_text_saved == embedded.build("x", result.image).image_text  # the saved 256 px PNG, read again
    assert result.reading_changed == (result.image_text != result.image_text_saved)
    assert torch.isfinite(torch.tensor(result.loss_after_png))
    assert set(result.to_dict()) >= {"image_text", "image_text_saved", "reading_changed", "loss_after_png"}


def test_typographic_attacks_send_the_official_prompt_and_the_words_through_the_image():
    from attacks.compose import attack_inputs
    from attacks.examples import EXAMPLES
    from reminder.data import Record

    record = Record("x", "", "Steps to pick a lock.")
    official = {"figstep": figstep.PROMPT, "mmsb-typo": mmsb.PROMPTS["TYPO"], "mmsb-sd-typo": mmsb.PROMPTS["SD+TYPO"]}
    for spec, prompt in official.items():
        out = attack_inputs(spec, record)
        assert out.prompt == prompt and "lock" not in out.prompt.lower() and out.image is not None
    for example in EXAMPLES:
        if example.image:
            assert example.prompt in official.values() and example.attack == "none"
