"""The app's Benchmark tab: a small evaluation grid (:mod:`evaluation.grid`) with live progress, summarised as the
attack success rate (keyword judge) per attack and defence."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator

from attacks.compose import ATTACKS
from evaluation import grid, plots
from evaluation.datasets import DATASETS
from evaluation.defenses import DEFENSES

from .jobs import Finished, in_thread

DATASET, LIMIT, MAX_NEW_TOKENS = "harmful", 4, 32  # the tab's starting values
METRIC = "asr_keyword"


def grid_attacks(names: Iterable[str]) -> list[str]:
    """The attacks among ``names`` that the evaluation grid runs (today :data:`attacks.compose.ATTACKS`)."""
    return [n for n in names if n.partition(":")[0] in ATTACKS]


def datasets() -> list[str]:
    return list(DATASETS)


def defenses() -> tuple[list[str], list[str]]:
    """(every defence, the ones the tab starts with)."""
    return list(DEFENSES), [d for d in ("none", "reminder") if d in DEFENSES]


def asr_table(groups: list[dict]) -> dict[str, dict[str, float]]:
    """{attack: {defence: attack success rate}} of the summary's groups."""
    table: dict[str, dict[str, float]] = {}
    for g in groups:
        table.setdefault(g["attack"], {})[g["defense"]] = g.get(METRIC)
    return table


def run(model: str, dataset: str, attacks: list[str], defenses: list[str], limit: float, max_new_tokens: float,
        reminder: str | None) -> Iterator[tuple[str, object, list[dict] | None]]:
    """Run the grid (into a fresh temporary folder); yield (status, None, None) after each generation and finally
    (status, bar chart, the summary's groups over all categories)."""
    cfg = grid.EvalConfig(out=tempfile.mkdtemp(prefix="bench-"), model=model, datasets=[dataset],
                        attacks=list(attacks), defenses=list(defenses), reminder=reminder,
                        limit=int(limit), max_new_tokens=int(max_new_tokens))
    n = 0
    for item in in_thread(lambda cb: grid.run_grid(cfg, callback=cb)):
        if not isinstance(item, Finished):
            n += 1
            yield f"{n} generations done…", None, None
            continue
        groups = [g for g in item.result.groups if g["category"] == "all"]
        yield (f"done: {n} generations", plots.benchmark_bars(asr_table(groups), "attack success rate (keyword judge)"),
               groups)
