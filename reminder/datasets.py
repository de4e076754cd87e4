"""Evaluation datasets as records (id, category, text prompt, optional image builder), so any attack composes with any
dataset. A small registry of names; ``name:arg`` passes a split (prompt sets) or a CSV path (AdvBench, HarmBench,
StrongREJECT).

Data folders follow the official layouts under ``data_dir`` (``--data-dir``, else ``$REMINDER_DATA``, else ``data/``):
``FigStep/questions/*.csv`` + ``FigStep/images/SafeBench[-Tiny]/*.png``; ``MM-SafetyBench/processed_questions/*.json``
+ ``MM-SafetyBench/imgs/<scenario>/SD_TYPO/<id>.jpg`` (or ``mmsb:<folder>``); ``advbench/harmful_behaviors.csv``;
``harmbench/harmbench_behaviors_text_val.csv``; ``strongreject/strongreject_dataset.csv``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "assets" / "prompts"


@dataclass(frozen=True)
class Record:
    """One evaluation item. ``image``: builds the dataset's own image (None: text only); ``harmful``: False for
    benign sets (over-refusal); ``meta``: extras attacks may use (``instruction``, ``key_phrase``, ``target``,
    ``figstep_image``, ``typo_image``)."""

    id: str
    category: str
    prompt: str
    image: Callable[[], Image.Image] | None = None
    harmful: bool = True
    meta: dict[str, str] = field(default_factory=dict)


class DatasetError(ValueError):
    """A dataset name that is unknown, or whose files are missing or malformed (one clear line)."""


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data folder: ``path``, else ``$REMINDER_DATA``, else ``data/``."""
    return Path(path or os.environ.get("REMINDER_DATA") or "data").expanduser()


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load an image file fully as RGB."""
    with Image.open(path) as im:
        return im.convert("RGB")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    return path


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(_require(path, "CSV file"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def prompt_set(kind: str, split: str | None = None, folder: Path = PROMPTS) -> list[Record]:
    """The project's prompt sets: ``{folder}/{kind}.jsonl`` lines ``{"id", "prompt", "category", "split"}``."""
    path = _require(folder / f"{kind}.jsonl", "prompt set")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rec = Record(str(row["id"]), row.get("category", ""), row["prompt"], harmful=kind != "benign")
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DatasetError(f"{path}:{n}: not a prompt record ({err})") from err
        if split is None or row.get("split") == split:
            records.append(rec)
    return records


def figstep(root: Path, tiny: bool = True) -> list[Record]:
    """SafeBench(-Tiny) questions; ``meta['figstep_image']`` is the official image where present."""
    name = "SafeBench-Tiny" if tiny else "safebench"
    rows = _csv_rows(root / "FigStep" / "questions" / f"{name}.csv")
    images = root / "FigStep" / "images" / ("SafeBench-Tiny" if tiny else "SafeBench")
    records = []
    for r in rows:
        key = f"{r['dataset']}_{r['category_id']}_{r['task_id']}"
        meta = {"instruction": r["instruction"]}
        img = images / f"query_{key}_6.png"
        if img.is_file():
            meta["figstep_image"] = str(img)
        records.append(Record(key, r["category_name"], r["question"], meta=meta))
    return records


def mm_safetybench(base: Path) -> list[Record]:
    """MM-SafetyBench from its folder: the question, with the official SD+TYPO image and rephrased prompt."""
    _require(base, "MM-SafetyBench folder")
    records = []
    for path in sorted((base / "processed_questions").glob("*.json")):
        scenario = path.stem
        for qid, q in json.loads(path.read_text(encoding="utf-8")).items():
            meta = {"key_phrase": q.get("Key Phrase", ""), "rephrased": q.get("Rephrased Question", "")}
            for kind, key in (("SD_TYPO", "image_path"), ("TYPO", "typo_image")):
                img = base / "imgs" / scenario / kind / f"{qid}.jpg"
                if img.is_file():
                    meta[key] = str(img)
            image = partial(load_image, meta["image_path"]) if "image_path" in meta else None
            records.append(Record(f"{scenario}/{qid}", scenario, q["Question"], image, meta=meta))
    if not records:
        raise DatasetError(f"no questions in {base / 'processed_questions'}")
    return records


def behaviours(path: Path, text: str, category: str | None, id_col: str | None, target: str | None) -> list[Record]:
    """Harmful behaviours from a CSV: ``text`` column, optional category / id / affirmative-target columns."""
    rows = _csv_rows(path)
    if rows and text not in rows[0]:
        raise DatasetError(f"{path}: no '{text}' column (columns: {', '.join(rows[0])})")
    return [Record(r[id_col] if id_col else str(i), r.get(category, "") if category else "", r[text],
                   meta={"target": r[target]} if target and r.get(target) else {})
            for i, r in enumerate(rows)]


CSV_SETS = {  # name: (default path under data_dir, text column, category column, id column, target column)
    "advbench": ("advbench/harmful_behaviors.csv", "goal", None, None, "target"),
    "harmbench": ("harmbench/harmbench_behaviors_text_val.csv", "Behavior", "SemanticCategory", "BehaviorID", None),
    "strongreject": ("strongreject/strongreject_dataset.csv", "forbidden_prompt", "category", None, None),
}
DATASETS = ("harmful", "benign", "figstep-tiny", "figstep", "mmsb", *CSV_SETS)


def load_dataset(spec: str, data: str | os.PathLike | None = None, limit: int | None = None) -> list[Record]:
    """Records of ``spec`` (``name`` or ``name:arg``), the first ``limit`` of them."""
    name, _, arg = spec.partition(":")
    root = data_dir(data)
    if name in ("harmful", "benign"):
        records = prompt_set(name, arg or None)
    elif name in ("figstep-tiny", "figstep"):
        records = figstep(root, tiny=name == "figstep-tiny")
    elif name == "mmsb":
        records = mm_safetybench(Path(arg) if arg else root / "MM-SafetyBench")
    elif name in CSV_SETS:
        default, *cols = CSV_SETS[name]
        records = behaviours(Path(arg) if arg else root / default, *cols)
    else:
        raise DatasetError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    return records[:limit] if limit else records
