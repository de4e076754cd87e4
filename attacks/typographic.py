"""The project's harmful prompts as typographic attacks: the words to print in the image (a FigStep list title or an
MM-SafetyBench key phrase, ``assets/prompts/typographic_harmful.jsonl``) with that attack's official prompt."""

from __future__ import annotations

import os
from pathlib import Path

from attacks import figstep, mmsb
from reminder.data import (
    PROMPTS_DIR,
    DataError,
    Record,
    check_split,
    data_file,
    json_rows,
    load_prompt_set,
    require_fields,
)

# the official prompt sent with each kind of typographic image
TYPO_PROMPTS = {"figstep": figstep.PROMPT, "mmsb": mmsb.PROMPTS["TYPO"]}


def load_typographic_harmful(kind: str = "figstep", split: str | None = None,
                             folder: str | os.PathLike = PROMPTS_DIR) -> list[Record]:
    """The project's harmful prompts in typographic form (``typographic_harmful.jsonl``, joined to ``harmful.jsonl``
    by id): ``text`` is the FigStep list title (``kind`` "figstep") or MM-SafetyBench key phrase ("mmsb"), ``prompt``
    that attack's official prompt; id, category and split are the source prompt's."""
    if kind not in TYPO_PROMPTS:
        raise DataError(f"unknown typographic attack kind '{kind}' (choose from {', '.join(TYPO_PROMPTS)})")
    check_split(split)
    source = {r.id: r for r in load_prompt_set("harmful", folder=folder)}
    path = data_file(Path(folder) / "typographic_harmful.jsonl", "typographic harmful set")
    rows = json_rows(path)
    column = {"figstep": "figstep", "mmsb": "phrase"}[kind]
    require_fields(rows, path, ("id", column))
    unknown = [r["id"] for r in rows if r["id"] not in source]
    if unknown:
        raise DataError(f"{path}: ids not in harmful.jsonl: {', '.join(unknown[:5])}")
    return [Record(r["id"], source[r["id"]].category, TYPO_PROMPTS[kind], safe=False, split=source[r["id"]].split,
                   text=r[column])
            for r in rows if split is None or source[r["id"]].split == split]
