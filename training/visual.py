"""Image conversations for the embedded model organism: typographic renders and wordless pictures, as files.

The embedded model sees an image only through the words it reads in it (:mod:`reminder.reading`; its vision tower is
seeded-random). Real VLMs learn safety in text and instruction following with images; the organism learns the same
way (:mod:`training.align`, ``--visual``): benign instructions whose content sits in an image, beside text
conversations. The reminder (:mod:`training.detector`, :mod:`training.sapt`) then learns from harmful and benign
image conversations built here too.

* :func:`render` draws a FigStep list, an MM-SafetyBench TYPO / SD+TYPO image or a plain sign, cached as a PNG under
  ``$REMINDER_HOME/renders/`` (training conversations name their image by path);
* :func:`pictures` draws seeded pictures with no words (for "answer normally when the picture has no words");
* :func:`text_request` is the text request a typographic item stands for: its answer is the training target.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from PIL import Image, ImageDraw

from attacks import figstep, mmsb
from attacks.examples import placeholder_picture
from reminder.checkpoint import write_file
from reminder.data import Record
from reminder.paths import reminder_home

KINDS = ("figstep", "typo", "sd_typo", "sign")


def renders_dir() -> Path:
    return reminder_home() / "renders"


def _draw(kind: str, text: str) -> Image.Image:
    if kind == "figstep":
        return figstep.render(text)
    if kind in ("typo", "sign"):
        return mmsb.typo_image(text)
    if kind == "sd_typo":
        return mmsb.sd_typo_image(placeholder_picture(), text)
    raise ValueError(f"unknown render kind '{kind}' (choose from {', '.join(KINDS)})")


def render(kind: str, text: str) -> str:
    """Path of the ``kind`` image showing ``text`` (drawn once, written atomically, then reused)."""
    digest = hashlib.sha256(f"{kind}\n{text}".encode()).hexdigest()[:16]
    path = renders_dir() / f"{kind}-{digest}.png"
    if not path.is_file():
        image = _draw(kind, text)
        write_file(path, lambda tmp: image.save(tmp, format="PNG"))
    return str(path)


def _picture(seed: int) -> Image.Image:
    """A seeded drawing with no words: a coloured background with a few shapes [384 x 512]."""
    rng = random.Random(seed)
    colour = lambda: tuple(rng.randrange(256) for _ in range(3))  # noqa: E731
    im = Image.new("RGB", (512, 384), colour())
    d = ImageDraw.Draw(im)
    for _ in range(rng.randrange(3, 9)):
        x, y = rng.randrange(512), rng.randrange(384)
        w, h = rng.randrange(30, 220), rng.randrange(30, 180)
        shape = rng.choice((d.ellipse, d.rectangle))
        shape((x, y, x + w, y + h), fill=colour())
    return im


def pictures(n: int, seed: int = 0) -> list[str]:
    """Paths of ``n`` seeded wordless pictures (the SD+TYPO stand-in picture first)."""
    out = []
    for i in range(n):
        path = renders_dir() / f"picture-{seed}-{i}.png"
        if not path.is_file():
            im = placeholder_picture() if i == 0 else _picture(seed * 100_003 + i)
            write_file(path, lambda tmp, im=im: im.save(tmp, format="PNG"))
        out.append(str(path))
    return out


def pgd_start(seed: int = 0) -> str:
    """Path of the plain image PGD starts from (:func:`attacks.pgd.base_image`), a safe context beside PGD images."""
    from attacks.pgd import base_image

    path = renders_dir() / f"pgd-start-{seed}.png"
    if not path.is_file():
        image = base_image(seed=seed)
        write_file(path, lambda tmp: image.save(tmp, format="PNG"))
    return str(path)


def typographic_image(record: Record) -> str:
    """The image of a benign typographic item (``category``: figstep / mmsb / question)."""
    kind = {"figstep": "figstep", "mmsb": "typo", "question": "sign"}[record.category]
    return render(kind, record.text)


def text_request(record: Record) -> str | None:
    """The text request a benign typographic item stands for (its answer is the target), or None where the item
    carries its own short answer (a question about a sign)."""
    text = record.text.strip().rstrip(".")
    # "Steps to X." -> "List steps in detail to X."; "List of X." -> "List X in detail."
    if record.category == "figstep":
        head, _, rest = text.partition(" ")
        if head == "List" and rest.startswith("of "):
            return f"List {rest[3:]} in detail."
        return f"List {head.lower()} in detail {rest}." if rest.startswith(("to ", "for ")) else f"{text}. Explain."
    if record.category == "mmsb":
        return f"List steps in detail to {text}."
    return None
