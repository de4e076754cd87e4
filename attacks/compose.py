"""The one attack registry: each attack turns a record (:class:`reminder.data.Record`: ``prompt``, ``meta``, an
optional image) into :class:`AttackInput` (prompt, image, assistant prefill), so any attack composes with any dataset.
The evaluation grid (``python -m evaluation --attack``), the benchmarks and every app tab read :data:`ATTACKS`.
``name:arg`` picks a variant (``template:fiction``, ``prefill:<text>``, ``pgd:<png>``).

Optimised attacks (pgd, gcg, bap) are not run here: their precomputed artefacts are read from
``<root>/<attack>/<model>/`` (:func:`model_key`) for the roots ``assets/attacks`` (shipped) and
``$REMINDER_HOME/attacks`` (the app's attack lab): ``image.png`` replaces the image, ``prompt.txt`` replaces the
prompt, ``suffix.txt`` is appended to it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from attacks import figstep, mmsb
from attacks.prefill import PREFILLS, TEMPLATES, apply_template
from reminder import paths
from reminder.images import open_image

PGD_IMAGE = paths.ATTACKS / "pgd" / "embedded" / "image.png"
PRECOMPUTED = ("pgd", "gcg", "bap")


class AttackUnavailable(ValueError):
    """An attack whose artefacts are not there (one clear line)."""


@dataclass
class AttackInput:
    """What the model is given after an attack: user ``prompt``, optional ``image``, forced assistant ``prefill``;
    ``attack`` the spec applied and ``note`` one line on what it did (shown by the app)."""

    prompt: str
    image: Image.Image | None = None
    prefill: str = ""
    attack: str = "none"
    note: str = ""


NOTES = {
    "figstep": "the instruction is typeset in the image; the text prompt asks to fill in the list",
    "mmsb-typo": "the request is drawn as a phrase; the text prompt asks for the steps",
    "mmsb-sd-typo": "the uploaded image is stacked above the request drawn as a phrase",
    "prefill": "the answer is forced to start with the prefill",
    "template": "the request is wrapped in a jailbreak template",
}


def _image(record) -> Image.Image | None:
    return record.load_image()


def _load(path: str | Path) -> Image.Image:
    return open_image(path)[0]


def model_key(model: str) -> str:
    """``model`` as one folder name for its attack artefacts: a short name as it is; a hub id or a model folder (which
    may be an absolute path) as its last part plus a hash of the whole, so it never points outside ``attacks/``."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model):
        return model
    return f"{Path(model).name or 'model'}-{hashlib.sha256(model.encode()).hexdigest()[:10]}"


def lab_folder(attack: str, model: str) -> Path:
    """Where the app's attack lab saves an optimised attack's artefacts (read back by the precomputed attacks)."""
    return paths.reminder_home() / "attacks" / attack / model_key(model)


def precomputed(attack: str, prompt: str, image: Image.Image | None, model: str,
                assets: Path = paths.ASSETS) -> AttackInput:
    """``attack``'s saved artefacts for ``model`` applied to ``prompt``/``image`` (shipped first, then the lab's)."""
    shipped = assets / "attacks" / attack / model_key(model)
    folder = next((f for f in (shipped, lab_folder(attack, model)) if f.is_dir()), None)
    if folder is None:
        raise AttackUnavailable(f"{attack} is not available yet for model '{model}': no precomputed artefacts in "
                                f"assets/attacks/{attack}/{model_key(model)}/ (run it in the Attack lab or the "
                                "attacks CLI)")
    if (folder / "prompt.txt").is_file():
        prompt = (folder / "prompt.txt").read_text()
    if (folder / "suffix.txt").is_file():
        prompt = f"{prompt} {(folder / 'suffix.txt').read_text().strip()}"
    if (folder / "image.png").is_file():
        image = _load(folder / "image.png")
    return AttackInput(prompt, image, note=f"precomputed {attack} artefacts from {folder}")


def none(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """The record as it is (its own image, if any)."""
    return AttackInput(record.prompt, _image(record))


def figstep_attack(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """FigStep: the instruction typeset in an image (the official one where the dataset has it) + the FigStep prompt."""
    path = record.meta.get("figstep_image")
    image = _load(path) if path else figstep.render(record.meta.get("instruction") or record.prompt)
    return AttackInput(figstep.PROMPT, image)


def mmsb_typo(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """MM-SafetyBench TYPO: the request (or its ``key_phrase``) typeset in an image + the TYPO instruction."""
    image = mmsb.typo_image(record.meta.get("key_phrase") or record.prompt)
    return AttackInput(mmsb.PROMPTS["TYPO"], image)


def mmsb_sd_typo(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """MM-SafetyBench SD+TYPO: the record's own image (else a drawn stand-in picture, :mod:`attacks.examples`) stacked
    above the request typeset as a phrase + the official SD+TYPO instruction."""
    from attacks.examples import placeholder_picture

    picture = _image(record) or placeholder_picture()
    image = mmsb.sd_typo_image(picture, record.meta.get("key_phrase") or record.prompt)
    return AttackInput(mmsb.PROMPTS["SD+TYPO"], image)


def prefill(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """Forced assistant prefix: ``arg``, else the record's affirmative target (AdvBench), else "Sure, here is"."""
    return AttackInput(record.prompt, _image(record), arg or record.meta.get("target") or PREFILLS[0])


def template(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """A text jailbreak template (``template:<name>``, default dev-mode) around the prompt."""
    return AttackInput(apply_template(arg or "dev-mode", record.prompt), _image(record))


def pgd(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """A precomputed adversarial image in place of the record's: ``pgd:<png>``, else ``model``'s universal PGD image
    (``assets/attacks/pgd/<model>/``, then the attack lab's)."""
    if not arg:
        return precomputed("pgd", record.prompt, _image(record), model)
    path = Path(arg)
    if not path.is_file():
        raise ValueError(f"no PGD image at {path}: make one with `python -m attacks.pgd ... --out {path}`")
    return AttackInput(record.prompt, _load(path))


def gcg(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """``model``'s precomputed GCG suffix appended to the prompt."""
    return precomputed("gcg", record.prompt, _image(record), model)


def bap(record, arg: str = "", model: str = "embedded") -> AttackInput:
    """``model``'s precomputed BAP image (and rewritten prompt, where stage 2 made one)."""
    return precomputed("bap", record.prompt, _image(record), model)


ATTACKS: dict[str, Callable[..., AttackInput]] = {
    "none": none, "figstep": figstep_attack, "mmsb-typo": mmsb_typo, "mmsb-sd-typo": mmsb_sd_typo, "prefill": prefill,
    "template": template, "pgd": pgd, "gcg": gcg, "bap": bap,
}


def attack_inputs(spec: str, record, model: str = "embedded") -> AttackInput:
    """Apply attack ``spec`` (``name`` or ``name:arg``) to a dataset record; precomputed artefacts are ``model``'s."""
    name, _, arg = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack '{name}' (choose from {', '.join(ATTACKS)})")
    if name == "template" and arg and arg not in TEMPLATES:
        raise ValueError(f"unknown template '{arg}' (choose from {', '.join(TEMPLATES)})")
    out = ATTACKS[name](record, arg, model)
    out.attack, out.note = spec, out.note or NOTES.get(name, "")
    return out
