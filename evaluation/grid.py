"""The evaluation grid: datasets x attacks x defences -> results.jsonl (a row per generation), summary.csv, report.html.

    python -m evaluation --model embedded --dataset figstep-tiny --attack figstep \\
        --defense none,reminder,self-reminder --limit 50 --out results/run1 --reminder checkpoints/embedded

Unguarded defences (``none``, ``self-reminder``, ``prompt-tuning``) are decoded in batches of up to ``--batch-size``
prompts, padded on the left (:mod:`reminder.batching`; the same tokens as one at a time, greedy); guarded ones run
one row at a time. A batched row's ``seconds`` and ``generate_seconds`` are its batch's shared evenly among its
rows (``batch_size`` says how many): compare latencies with ``--batch-size 1``.

Resumable: rows already in ``results*.jsonl`` are skipped, each new row is appended and flushed. Under
``accelerate launch -m evaluation`` with several processes, process i runs every n-th grid item into
``results.rank{i}.jsonl`` and the main process writes the summary and report once all are done.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from attacks.compose import AttackInput, attack_inputs
from reminder.batching import batches, generate_batch
from reminder.checkpoint import Reminder
from reminder.data import Record
from reminder.generation import Generation, GenerationConfig
from reminder.judges import JudgeUnavailable, get_judge
from reminder.models import DEFAULT_MODEL, ModelNotFound, Prompt, VLMAdapter, load_model
from reminder.paths import reminder_arg, shipped
from reminder.progress import Callback, Progress, stopped

from .datasets import load_dataset
from .defenses import get_defense
from .summary import Summary, summarise

Cell = tuple[str, Record, str, str]  # (dataset, record, attack, defence): one grid item


@dataclass
class EvalConfig:
    """One evaluation grid. ``datasets``/``attacks``/``defenses``/``judges``: registry names (``name:arg`` allowed)."""

    out: str
    model: str = DEFAULT_MODEL
    datasets: list[str] = field(default_factory=lambda: ["figstep-tiny"])
    attacks: list[str] = field(default_factory=lambda: ["none"])
    defenses: list[str] = field(default_factory=lambda: ["none"])
    judges: list[str] = field(default_factory=lambda: ["keyword", "learned"])
    reminder: str | None = None
    limit: int | None = None
    data_dir: str | None = None
    max_new_tokens: int = 96
    interval: int | None = None
    threshold: float | None = None
    seed: int = 0
    batch_size: int = 8  # unguarded rows decoded together (1: one at a time)


def row_key(row: dict) -> tuple[str, str, str, str]:
    return row["dataset"], row["id"], row["attack"], row["defense"]


def grid(cfg: EvalConfig) -> Iterator[Cell]:
    """(dataset, record, attack, defence) in a fixed order."""
    for ds in cfg.datasets:
        for rec in load_dataset(ds, cfg.data_dir, cfg.limit):
            for attack in cfg.attacks:
                for defense in cfg.defenses:
                    yield ds, rec, attack, defense


def read_rows(out: Path) -> list[dict]:
    """All rows written so far (every process's file); a torn last line (killed mid-write) is ignored."""
    rows = []
    for path in sorted(out.glob("results*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _verdict(judge, prompt: str, text: str | None) -> dict | None:
    if text is None:
        return None
    v = judge(prompt, text)
    return {"refused": v.refused, "harmful": None if math.isnan(v.harmful) else v.harmful, "unsafe": v.unsafe,
            "valid": v.valid, "detail": v.detail}


def run_row(adapter, ds: str, rec: Record, attack: str, defense: str, reminder: Reminder | None,
            gen_cfg: GenerationConfig, judges: dict) -> dict:
    """Generate one grid cell and judge it: the full answer (prefill included) and the text after the reminder."""
    inputs = attack_inputs(attack, rec, adapter.name)
    start = time.perf_counter()
    gen = get_defense(defense).apply(adapter, rec, inputs, reminder, gen_cfg)
    return _row((ds, rec, attack, defense), inputs, gen, time.perf_counter() - start, judges)


def plain_prompt(adapter: VLMAdapter, cell: Cell, reminder: Reminder | None) -> tuple[AttackInput, VLMAdapter, Prompt]:
    """An unguarded cell's attacked inputs and what its defence decodes: the adapter (or a view) and the prompt."""
    _, rec, attack, defense = cell
    d = get_defense(defense)
    d.require(reminder)
    inputs = attack_inputs(attack, rec, adapter.name)
    return (inputs, *d.decoding(adapter, d.prompt(adapter, inputs), reminder))


def plan(adapter: VLMAdapter, cells: list[Cell], reminder: Reminder | None, batch_size: int) -> list[list[int]]:
    """Units of work over ``cells`` (indices), in grid order: a guarded cell alone, unguarded ones in batches of up to
    ``batch_size`` (:func:`reminder.batching.generate_batch` pads prompts of different lengths)."""
    keys = [("row", i) if batch_size == 1 or get_defense(cell[3]).guarded else ("plain",)
            for i, cell in enumerate(cells)]
    return batches(keys, batch_size)


def run_batch(adapter: VLMAdapter, cells: list[Cell], reminder: Reminder | None, gen_cfg: GenerationConfig,
              judges: dict) -> Iterator[dict]:
    """Unguarded cells decoded together; yields the rows :func:`run_row` gives (each
    judged as it is yielded), timings aside: the batch's, shared evenly among its rows."""
    start = time.perf_counter()
    built = [plain_prompt(adapter, cell, reminder) for cell in cells]
    with torch.inference_mode():
        encoded = [view.encode(prompt) for _, view, prompt in built]
    gens = generate_batch(adapter, encoded, reminder, replace(gen_cfg, guard=False), len(cells))
    seconds = (time.perf_counter() - start) / len(cells)
    for cell, (inputs, _, _), gen in zip(cells, built, gens, strict=True):
        yield _row(cell, inputs, gen, seconds, judges, len(cells))


def _row(cell: Cell, inputs: AttackInput, gen: Generation, seconds: float, judges: dict, batch_size: int = 1) -> dict:
    """The result row of one generated cell, judged."""
    ds, rec, attack, defense = cell
    full = inputs.prefill + gen.answer
    first = gen.injections[0] if gen.injections else None
    after = "".join(gen.tokens[first:]) if first is not None else None
    return {
        "dataset": ds, "id": rec.id, "category": rec.category, "harmful_request": rec.harmful, "attack": attack,
        "defense": defense, "prompt": inputs.prompt, "prefill": inputs.prefill, "has_image": inputs.image is not None,
        "text": gen.text, "answer": full, "n_tokens": len(gen.token_ids), "prompt_tokens": gen.prompt_tokens,
        **gen.to_json(("harm_scores", "checks", "injections")),
        "tokens_before_reminder": first,
        "judge": {name: _verdict(j, rec.prompt, full) for name, j in judges.items()},
        "judge_after": {name: _verdict(j, rec.prompt, after) for name, j in judges.items()},
        "generate_seconds": gen.generate_seconds, "seconds": seconds,
        "seconds_per_token": gen.generate_seconds / max(len(gen.token_ids), 1), "batch_size": batch_size,
    }


def _process() -> tuple[int, int, Callable[[], None]]:
    """(index, count, barrier) of this process under accelerate; (0, 1, no-op) otherwise."""
    try:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        # like Accelerator: without cpu=True (what `accelerate launch --cpu` asks for), PartialState never sees a
        # multi-CPU launch, and every process would run the whole grid into one file
        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        if state.num_processes > 1:
            return state.process_index, state.num_processes, state.wait_for_everyone
    except (ImportError, RuntimeError, ValueError):
        pass
    return 0, 1, lambda: None


def run_grid(cfg: EvalConfig, callback: Callback | None = None, stop: threading.Event | None = None) -> Summary:
    """Run (or resume) the grid; ``callback`` (:mod:`reminder.progress`: ``on_row(row)``, or a ``(row)`` function)
    after each new row; ``stop``, looked at before each unit of work and after each row, once set ends it early
    (resumable; rows of a batch not yet written are made again on resume)."""
    progress = Progress.of(callback)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world, barrier = _process()
    done = {row_key(r) for r in read_rows(out)}
    todo = [cell for i, cell in enumerate(grid(cfg)) if i % world == rank
            and (cell[0], cell[1].id, cell[2], cell[3]) not in done]
    if todo:
        adapter = load_model(cfg.model)
        reminder = Reminder.load(shipped(cfg.reminder), adapter) if cfg.reminder else None
        judges = {name: get_judge(name) for name in cfg.judges}
        gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, interval=cfg.interval,
                                   threshold=cfg.threshold, seed=cfg.seed)
        name = "results.jsonl" if world == 1 else f"results.rank{rank}.jsonl"
        with open(out / name, "a", encoding="utf-8") as f:
            for unit in plan(adapter, todo, reminder, cfg.batch_size):
                if stopped(stop):
                    break
                cells = [todo[i] for i in unit]
                rows = (run_batch(adapter, cells, reminder, gen_cfg, judges) if len(cells) > 1
                        else [run_row(adapter, *cells[0], reminder, gen_cfg, judges)])
                for row in rows:
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    progress.on_row(row)
                    if stopped(stop):
                        break
    barrier()
    summary = summarise(read_rows(out))
    if rank == 0:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        summary.to_csv(out / "summary.csv")
        from .report import write_report

        write_report(summary, out / "report.html", title=f"{cfg.model}: {', '.join(cfg.datasets)}")
    return summary


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--dataset", default="figstep-tiny", help="comma-separated dataset names (name:arg allowed)")
    p.add_argument("--attack", default="none",
                   help="comma-separated: none, figstep, mmsb-typo, mmsb-sd-typo, prefill[:text], template[:name], "
                        "pgd[:png]")
    p.add_argument("--defense", default="none", help="comma-separated defences (see evaluation.defenses)")
    p.add_argument("--judge", default="keyword,learned",
                   help="comma-separated judges (see reminder.judges); ASR = share the judge calls unsafe")
    p.add_argument("--reminder", default=None, help="trained reminder folder (for reminder defences and scores), or "
                   "'none' (default: the model's shipped reminder, if any)")
    p.add_argument("--limit", type=int, default=None, help="first N records of each dataset")
    p.add_argument("--out", required=True, help="output folder (resumed if it holds results)")
    p.add_argument("--data-dir", default=None, help="data folder (default $REMINDER_DATA or data/)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--interval", type=int, default=None)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8,
                   help="unguarded rows (none, self-reminder, prompt-tuning) decoded together; 1: one at a time")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        p.error("--batch-size must be at least 1")
    cfg = EvalConfig(out=a.out, model=a.model, datasets=_names(a.dataset), attacks=_names(a.attack),
                     defenses=_names(a.defense), judges=_names(a.judge), limit=a.limit,
                     reminder=str(r) if (r := reminder_arg(a.reminder, a.model)) else None,
                     data_dir=a.data_dir, max_new_tokens=a.max_new_tokens, interval=a.interval,
                     threshold=a.threshold, seed=a.seed, batch_size=a.batch_size)
    for d in cfg.defenses:
        if get_defense(d).needs_reminder and not cfg.reminder:
            p.error(f"defence '{d}' needs --reminder FOLDER")
    try:
        summary = run_grid(cfg, callback=lambda r: print(f"{r['dataset']} {r['id']} {r['attack']} {r['defense']}: "
                                                         f"{r['n_tokens']} tokens, injections {r['injections']}",
                                                         flush=True))
    except (ValueError, ModelNotFound, JudgeUnavailable) as err:  # bad names, missing files or weights: one line
        p.error(str(err))
    rank, world, _ = _process()
    if rank:  # the main process reports for all
        return
    cols = ["attack", "defense", *[k for k in summary.groups[0] if k.startswith(("asr_", "over_"))],
            "fire_rate", "tokens_before_reminder", "seconds_per_token"] if summary.groups else []
    for g in summary.groups:
        if g["category"] == "all":
            print("  ".join(f"{c}={g[c]}" for c in cols))
    rows = "results.jsonl" if world == 1 else f"results.rank{{0..{world - 1}}}.jsonl"
    print(f"wrote {Path(cfg.out) / rows}, summary.csv, report.html")


if __name__ == "__main__":
    main()
