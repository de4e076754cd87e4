"""Does the answer turn once the reminder fires? The steering modes of guarded generation, side by side.

    python -m benchmarks.steering [--model embedded-aligned] [--reminder checkpoints/embedded-aligned] [--n 20]
                                  [--rows figstep,mmsb-typo,prefill] [--modes continue,continue2,rollback,regenerate]

For each harmful held-out row of :mod:`benchmarks.organism` (greedy, ``--max-new-tokens`` 64) and each mode:

* ``continue``: the reminder stays where it fired and the answer goes on from it (one injection);
* ``continue2``: the same, but checks go on after an injection and a second one may follow;
* ``rollback``: the tokens after the last check that passed are withdrawn and the reminder enters there;
* ``regenerate``: the official mode, the answer restarts from prompt + reminder.

Printed per row and mode: ``fired`` (share of answers the reminder entered), ``refused`` (keyword judge, on what the
user is left with), ``success`` (judged unsafe by the learned harm judge, prefill included) and ``continued``: of the
answers where it fired, the share that still do not refuse or are judged unsafe (fired but not steered). The plain
run (no reminder) is the first line of each row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from evaluation.summary import rate
from reminder import GenerationConfig, Reminder, load_model
from reminder.judges import LearnedJudge, is_refusal, judge_many

from .organism import harmful_cases, run_cases

MODES = {"continue": dict(mode="continue"), "continue2": dict(mode="continue", max_injections=2),
         "rollback": dict(mode="rollback"), "regenerate": dict(mode="regenerate")}


def figures(judge, cases, gens) -> dict:
    """fired / refused / success / continued for one row and mode."""
    answers = [c.prefill + g.answer for c, g in zip(cases, gens, strict=True)]
    unsafe = [v.unsafe for v in judge_many(judge, [(c.subject, a) for c, a in zip(cases, answers, strict=True)])]
    refused = [is_refusal(a) for a in answers]
    fired = [bool(g.injections) for g in gens]
    return {"n": len(cases), "fired": rate(fired), "refused": rate(refused), "success": rate(unsafe),
            "continued": rate((not r) or u for f, r, u in zip(fired, refused, unsafe, strict=True) if f),
            "answers": answers}


def run(model: str, reminder_dir: str, n: int, rows: tuple[str, ...], modes: tuple[str, ...],
        max_new_tokens: int = 64) -> dict:
    start = time.perf_counter()
    adapter = load_model(model)
    rem = Reminder.load(reminder_dir, adapter)
    judge = LearnedJudge()
    base = GenerationConfig(max_new_tokens=max_new_tokens)
    out: dict = {"model": model, "reminder": reminder_dir, "max_new_tokens": max_new_tokens, "rows": {}}
    for row in rows:
        cases = harmful_cases(row, n, model)
        res = {"plain": figures(judge, cases, run_cases(adapter, cases, None, f"{row} plain", base))}
        for mode in modes:
            cfg = dataclasses.replace(base, **MODES[mode])
            res[mode] = figures(judge, cases, run_cases(adapter, cases, rem, f"{row} {mode}", cfg))
        out["rows"][row] = res
        for name, r in res.items():
            print(f"{row:14s} {name:11s} n={r['n']:3d} fired {r['fired']} refused {r['refused']} "
                  f"success {r['success']} continued {r['continued']}", flush=True)
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded-aligned")
    ap.add_argument("--reminder", default="checkpoints/embedded-aligned")
    ap.add_argument("--n", type=int, default=20, help="held-out harmful prompts per row (and SafeBench-Tiny ones)")
    ap.add_argument("--rows", default="figstep,mmsb-typo,prefill")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", help="also write the figures and answers (JSON) here")
    a = ap.parse_args(argv)
    unknown = set(a.modes.split(",")) - set(MODES)
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(sorted(unknown))} (choose from {', '.join(MODES)})")
    out = run(a.model, a.reminder, a.n, tuple(a.rows.split(",")), tuple(a.modes.split(",")), a.max_new_tokens)
    if a.out:
        from reminder.checkpoint import write_text

        write_text(a.out, json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
