"""Attacks as functions of a dataset record -> model inputs (prompt, image, assistant prefill), so any attack composes
with any dataset. ``name:arg`` picks a variant (``template:fiction``, ``prefill:<text>``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from attacks import figstep, mmsb
from attacks.prefill import PREFILLS, TEMPLATES, apply_template
from reminder import paths

PGD_IMAGE = paths.ATTACKS / "pgd" / "embedded" / "image.png"


@dataclass
class AttackInputs:
    """What the model is given: user ``prompt``, optional ``image``, forced assistant ``prefill``."""

    prompt: str
    image: Image.Image | None = None
    prefill: str = ""


def _image(record) -> Image.Image | None:
    return record.image() if record.image is not None else None


def _load(path: str) -> Image.Image:
    from reminder.images import open_image

    return open_image(path)[0]


def none(record, arg: str = "") -> AttackInputs:
    """The record as it is (its own image, if any)."""
    return AttackInputs(record.prompt, _image(record))


def figstep_attack(record, arg: str = "") -> AttackInputs:
    """FigStep: the instruction typeset in an image (the official one where the dataset has it) + the FigStep prompt."""
    path = record.meta.get("figstep_image")
    image = _load(path) if path else figstep.render(record.meta.get("instruction") or record.prompt)
    return AttackInputs(figstep.PROMPT, image)


def mmsb_typo(record, arg: str = "") -> AttackInputs:
    """MM-SafetyBench TYPO: the request (or its ``key_phrase``) typeset in an image + the TYPO instruction."""
    image = mmsb.typo_image(record.meta.get("key_phrase") or record.prompt)
    return AttackInputs(mmsb.PROMPTS["TYPO"], image)


def mmsb_sd_typo(record, arg: str = "") -> AttackInputs:
    """MM-SafetyBench SD+TYPO: the record's own image (else a drawn stand-in picture, :mod:`attacks.examples`) stacked
    above the request typeset as a phrase + the official SD+TYPO instruction."""
    from attacks.examples import placeholder_picture

    picture = _image(record) or placeholder_picture()
    image = mmsb.sd_typo_image(picture, record.meta.get("key_phrase") or record.prompt)
    return AttackInputs(mmsb.PROMPTS["SD+TYPO"], image)


def prefill(record, arg: str = "") -> AttackInputs:
    """Forced assistant prefix: ``arg``, else the record's affirmative target (AdvBench), else "Sure, here is"."""
    return AttackInputs(record.prompt, _image(record), arg or record.meta.get("target") or PREFILLS[0])


def template(record, arg: str = "") -> AttackInputs:
    """A text jailbreak template (``template:<name>``, default dev-mode) around the prompt."""
    return AttackInputs(apply_template(arg or "dev-mode", record.prompt), _image(record))


def pgd(record, arg: str = "") -> AttackInputs:
    """A precomputed adversarial image in place of the record's (``pgd:<png>``; default: the embedded model's
    universal PGD image in ``assets/attacks/pgd/embedded/``)."""
    path = Path(arg) if arg else PGD_IMAGE
    if not path.is_file():
        raise ValueError(f"no PGD image at {path}: make one with `python -m attacks.pgd ... --out {path}`")
    return AttackInputs(record.prompt, _load(str(path)))


ATTACKS: dict[str, Callable[..., AttackInputs]] = {
    "none": none, "figstep": figstep_attack, "mmsb-typo": mmsb_typo, "mmsb-sd-typo": mmsb_sd_typo, "prefill": prefill,
    "template": template, "pgd": pgd,
}


def attack_inputs(spec: str, record) -> AttackInputs:
    """Apply attack ``spec`` (``name`` or ``name:arg``) to a dataset record."""
    name, _, arg = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack '{name}' (choose from {', '.join(ATTACKS)})")
    if name == "template" and arg and arg not in TEMPLATES:
        raise ValueError(f"unknown template '{arg}' (choose from {', '.join(TEMPLATES)})")
    return ATTACKS[name](record, arg)
