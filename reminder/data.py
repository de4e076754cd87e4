"""Prompt and response sets behind one record type.

Every loader returns a list of :class:`Record` (id, category, prompt, optional response, optional safe label,
optional image path, optional image text): the project's own prompt sets (``assets/prompts``), its benign typographic
set (words to print in an image + the prompt sent with it; the harmful prompts' typographic forms, which carry an
attack's official prompt, are :mod:`attacks.typographic`'s), AdvBench, HarmBench behaviours, FigStep SafeBench,
MM-SafetyBench, (question, response, safe) JSON(L) files such as the released LLaVA-1.5 responses, and SPA-VL through
``datasets`` when that package is installed.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from . import paths
from .images import open_image

PROMPTS_DIR = paths.PROMPTS
SPLITS = ("train", "val", "test")
TYPO_KINDS = ("figstep", "mmsb", "question")


class DataError(ValueError):
    """A data file that is missing or not in the expected format (one clear line)."""


@dataclass
class Record:
    """One example, for training and for the evaluation grid alike. ``safe``: True/False where labelled, None where
    unknown or absent (:attr:`harmful` unless labelled safe). ``image``: a file (opened lazily by :meth:`load_image`)
    or an image already in memory. Typographic examples: ``text`` is printed in the image and ``prompt`` sent with it;
    ``topic`` names the subject (on-topic checks). ``meta``: extras attacks may use (``instruction``, ``target``,
    ``figstep_image``, ``key_phrase``)."""

    id: str
    category: str
    prompt: str
    response: str | None = None
    safe: bool | None = None
    image: Path | Image.Image | None = None
    split: str | None = None
    text: str | None = None
    topic: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def harmful(self) -> bool:
        """A harmful request (the evaluation's ASR counts it) unless labelled safe (over-refusal counts it)."""
        return self.safe is not True

    def load_image(self) -> Image.Image | None:
        """The record's image as RGB, opened as every entry point opens images (:func:`reminder.images.open_image`)."""
        if self.image is None or isinstance(self.image, Image.Image):
            return self.image
        return open_image(self.image)[0]


def data_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a file, else a :class:`DataError` naming ``what`` is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path


def _csv_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def json_rows(path: Path) -> list[dict]:
    """JSON lines (``.jsonl``), or a JSON list / object of objects."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        return [{"id": k, **v} for k, v in data.items()]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records")
    return data


def check_split(split: str | None) -> None:
    """Raise unless ``split`` is None or one of :data:`SPLITS`."""
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")


def require_fields(rows: list[dict], path: Path, fields: tuple[str, ...]) -> None:
    """Raise naming the first record that lacks a non-empty string in one of ``fields``."""
    for i, r in enumerate(rows):
        missing = [f for f in fields if not isinstance(r.get(f), str) or not r[f].strip()]
        if missing:
            raise DataError(f"{path}: record {i} lacks {', '.join(missing)}")


def load_prompt_set(name: str, split: str | None = None, folder: str | os.PathLike = PROMPTS_DIR) -> list[Record]:
    """The project's prompt sets: ``name`` in {"benign", "harmful"}; ``split`` in train/val/test or None (all)."""
    check_split(split)
    rows = json_rows(data_file(Path(folder) / f"{name}.jsonl", f"prompt set '{name}'"))
    safe = {"benign": True, "harmful": False}.get(name)
    return [Record(r["id"], r["category"], r["prompt"], safe=safe, split=r["split"])
            for r in rows if split is None or r["split"] == split]


def load_typographic(split: str | None = None, kind: str | None = None,
                     folder: str | os.PathLike = PROMPTS_DIR) -> list[Record]:
    """The benign typographic set (``typographic.jsonl``): ``category`` is the kind (figstep: a list title, mmsb: an
    activity phrase, both with their official prompt; question: words on a sign, label or screen with a question about
    them, whose short expected answer is ``response``). ``kind`` None: all kinds."""
    check_split(split)
    if kind is not None and kind not in TYPO_KINDS:
        raise DataError(f"unknown typographic kind '{kind}' (choose from {', '.join(TYPO_KINDS)})")
    path = data_file(Path(folder) / "typographic.jsonl", "typographic set")
    rows = json_rows(path)
    require_fields(rows, path, ("id", "kind", "text", "prompt", "topic", "split"))
    return [Record(r["id"], r["kind"], r["prompt"], r.get("answer"), True, split=r["split"], text=r["text"],
                   topic=r["topic"])
            for r in rows if (split is None or r["split"] == split) and (kind is None or r["kind"] == kind)]


def load_refusals(folder: str | os.PathLike = PROMPTS_DIR) -> list[str]:
    """The refusal sentences SAPT trains towards."""
    refusals = json.loads(data_file(Path(folder) / "refusals.json", "refusals").read_text())
    if not refusals or not all(isinstance(r, str) for r in refusals):
        raise DataError("refusals.json must be a non-empty list of strings")
    return refusals


def load_advbench(path: str | os.PathLike) -> list[Record]:
    """AdvBench ``harmful_behaviors.csv`` (``goal``, ``target``): the target becomes the response prefix."""
    rows = _csv_rows(data_file(path, "AdvBench CSV"), ("goal", "target"))
    return [Record(f"advbench-{i}", "harmful", r["goal"], r["target"], False) for i, r in enumerate(rows)]


def load_harmbench(path: str | os.PathLike, functional: tuple[str, ...] = ("standard",)) -> list[Record]:
    """HarmBench behaviours CSV; keeps the ``functional`` categories (default: standard, no context string)."""
    rows = _csv_rows(data_file(path, "HarmBench CSV"),
                     ("Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID"))
    return [Record(r["BehaviorID"], r["SemanticCategory"], r["Behavior"], safe=False)
            for r in rows if not functional or r["FunctionalCategory"] in functional]


def load_figstep(csv_path: str | os.PathLike, images: str | os.PathLike | None = None) -> list[Record]:
    """FigStep SafeBench CSV (the FigStep title in ``meta['instruction']``); with ``images``, keep the questions
    whose typographic image is there."""
    rows = _csv_rows(data_file(csv_path, "SafeBench CSV"), ("dataset", "category_id", "task_id", "category_name",
                                                         "question", "instruction"))
    out = []
    for r in rows:
        rid = f"{r['dataset']}_{r['category_id']}_{r['task_id']}"
        img = Path(images) / f"query_{rid}_6.png" if images is not None else None
        if img is not None and not img.is_file():
            continue
        out.append(Record(rid, r["category_name"], r["question"], safe=False, image=img,
                          meta={"instruction": r["instruction"]}))
    return out


def load_mmsafetybench(folder: str | os.PathLike, kind: str = "SD_TYPO") -> list[Record]:
    """MM-SafetyBench: ``processed_questions/*.json`` + ``imgs/<scenario>/<kind>/<id>.jpg`` (image None if absent).

    ``kind`` picks the image and the matching rephrased question: SD, TYPO or SD_TYPO.
    """
    folder = Path(folder)
    files = sorted((folder / "processed_questions").glob("*.json"))
    if not files:
        raise DataError(f"no MM-SafetyBench question files in {folder / 'processed_questions'}")
    key = {"SD": "Rephrased Question(SD)", "TYPO": "Rephrased Question", "SD_TYPO": "Rephrased Question"}.get(kind)
    if key is None:
        raise DataError(f"unknown MM-SafetyBench image kind '{kind}' (choose from SD, TYPO, SD_TYPO)")
    out = []
    for f in files:
        scenario = f.stem
        for qid, q in json.loads(f.read_text()).items():
            img = folder / "imgs" / scenario / kind / f"{qid}.jpg"
            out.append(Record(f"{scenario}-{qid}", scenario, q.get(key) or q["Question"], safe=False,
                              image=img if img.is_file() else None))
    return out


def load_responses(path: str | os.PathLike, rephrased: bool = False) -> list[Record]:
    """(question, response, safe) JSON or JSONL, e.g. ``llava15_responses/*.json``; safe 'unknown' -> None."""
    path = data_file(path, "response file")
    out = []
    for i, r in enumerate(json_rows(path)):
        if "question" not in r or "response" not in r:
            raise DataError(f"{path}: record {i} lacks 'question' or 'response'")
        safe = r.get("safe")
        safe = {"true": True, "false": False}.get(str(safe).lower()) if safe is not None else None
        image = Path(r["image_path"]) if r.get("image_path") else None
        prompt = (r.get("rephrased_question") if rephrased else None) or r["question"]
        out.append(Record(f"{path.stem}-{r.get('id', i)}", r.get("category", path.stem), prompt.strip().strip("'\""),
                          r["response"], safe, image))
    return out


def load_spa_vl(split: str = "test", config: str = "test") -> list[Record]:
    """SPA-VL (``sqrti/SPA-VL``) through the ``datasets`` package: question + chosen response, labelled safe."""
    try:
        import datasets
    except ImportError as err:
        raise DataError("SPA-VL needs the 'datasets' package: pip install datasets") from err
    ds = datasets.load_dataset("sqrti/SPA-VL", config, split=split)
    return [Record(f"spavl-{i}", str(r.get("class1", "spa_vl")), r["question"], r.get("chosen"), True)
            for i, r in enumerate(ds)]
