"""Evaluation datasets as :class:`reminder.data.Record` lists, so any attack composes with any dataset. File parsing
lives in :mod:`reminder.data`; this module maps registry names to its loaders. ``name:arg`` passes a split (prompt
sets, also any ``*.jsonl`` path) or a path (AdvBench, HarmBench, StrongREJECT CSVs; the MM-SafetyBench folder).

Data folders follow the official layouts under ``data_dir`` (``--data-dir``, else ``$REMINDER_DATA``, else ``data/``):
``FigStep/questions/*.csv`` + ``FigStep/images/SafeBench[-Tiny]/*.png``; ``MM-SafetyBench/processed_questions/*.json``
+ ``MM-SafetyBench/imgs/<scenario>/SD_TYPO/<id>.jpg`` (or ``mmsb:<folder>``); ``advbench/harmful_behaviors.csv``;
``harmbench/harmbench_behaviors_text_val.csv``; ``strongreject/strongreject_dataset.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

from reminder import data
from reminder.data import Record


class DatasetError(ValueError):
    """A dataset name that is unknown, or whose files are missing or malformed (one clear line)."""


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data folder: ``path``, else ``$REMINDER_DATA``, else ``data/``."""
    return Path(path or os.environ.get("REMINDER_DATA") or "data").expanduser()


def _from_data(rows: list[Record], **meta_of) -> list[Record]:
    """Loaded records with ``meta`` filled from their fields (``meta_of``: meta key -> field name, where set)."""
    return [dataclasses.replace(r, meta={k: getattr(r, v) for k, v in meta_of.items() if getattr(r, v)}) for r in rows]


def figstep(root: Path, tiny: bool = True) -> list[Record]:
    """SafeBench(-Tiny) questions as text; ``meta['figstep_image']`` is the official image where present (the
    ``figstep`` attack uses it, else renders ``meta['instruction']``)."""
    name, folder = ("SafeBench-Tiny", "SafeBench-Tiny") if tiny else ("safebench", "SafeBench")
    csv_path = root / "FigStep" / "questions" / f"{name}.csv"
    records = []
    for r in data.load_figstep(csv_path):
        meta = dict(r.meta)
        img = root / "FigStep" / "images" / folder / f"query_{r.id}_6.png"
        if img.is_file():
            meta["figstep_image"] = str(img)
        records.append(Record(r.id, r.category, r.prompt, meta=meta))
    return records


def strongreject(path: Path) -> list[Record]:
    """StrongREJECT's ``strongreject_dataset.csv`` (``category``, ``source``, ``forbidden_prompt``)."""
    if not path.is_file():
        raise DatasetError(f"StrongREJECT CSV not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "forbidden_prompt" not in rows[0]:
        raise DatasetError(f"{path}: no 'forbidden_prompt' column")
    return [Record(f"strongreject-{i}", r.get("category", ""), r["forbidden_prompt"]) for i, r in enumerate(rows)]


DEFAULT_PATHS = {
    "advbench": "advbench/harmful_behaviors.csv",
    "harmbench": "harmbench/harmbench_behaviors_text_val.csv",
    "strongreject": "strongreject/strongreject_dataset.csv",
    "mmsb": "MM-SafetyBench",
}
DATASETS = ("harmful", "benign", "figstep-tiny", "figstep", *DEFAULT_PATHS)


def load_dataset(spec: str, data_folder: str | os.PathLike | None = None, limit: int | None = None) -> list[Record]:
    """Records of ``spec`` (``name`` or ``name:arg``), the first ``limit`` of them."""
    name, _, arg = spec.partition(":")
    root = data_dir(data_folder)
    path = Path(arg) if arg else root / DEFAULT_PATHS.get(name, "")
    try:
        if name in ("harmful", "benign"):
            records = _from_data(data.load_prompt_set(name, arg or None))
        elif name.endswith(".jsonl"):
            records = _from_data(data.load_prompt_set(Path(name).stem, arg or None, Path(name).parent))
        elif name in ("figstep-tiny", "figstep"):
            records = figstep(root, tiny=name == "figstep-tiny")
        elif name == "mmsb":
            records = _from_data(data.load_mmsafetybench(path))
        elif name == "advbench":
            records = _from_data(data.load_advbench(path), target="response")
        elif name == "harmbench":
            records = _from_data(data.load_harmbench(path))
        elif name == "strongreject":
            records = strongreject(path)
        else:
            raise DatasetError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    except data.DataError as err:
        raise DatasetError(str(err)) from err
    return records[:limit] if limit else records
