"""Speed of the evaluation grid with batched plain decoding against one row at a time (``evaluation.grid``).

    python -m benchmarks.eval_batching [--model embedded] [--limit N] [--max-new-tokens 48] [--batch-size 8]

Runs one grid (the project's harmful test prompts, all 39 or the first ``--limit``; no attack; defences ``none`` and
``self-reminder``) with ``--batch-size 1`` and with ``--batch-size N`` in one process, after a one-row warm-up, into
fresh folders. Reports each run's generation time (the sum of its rows' ``seconds``: prompt building, encoding and
decoding, without model loading or judging) and wall time, their ratios, the batches formed, and whether both runs
gave the same rows. Only prompts of one token length share a batch: of the first 8 test prompts just two pairs do,
so small grids gain little.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from evaluation.grid import EvalConfig, row_key, run_grid

SAME = ("text", "answer", "n_tokens", "prompt_tokens", "judge")


def timed_grid(cfg: EvalConfig) -> tuple[dict, float, float]:
    """(rows by key, generation seconds, wall seconds) of a fresh run of ``cfg``."""
    start = time.perf_counter()
    rows = run_grid(cfg).rows
    wall = time.perf_counter() - start
    return {row_key(r): r for r in rows}, sum(r["seconds"] for r in rows), wall


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded", help="short name or model folder (a tiny one for a smoke run)")
    ap.add_argument("--limit", type=int, default=None, help="first N harmful test prompts (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eval-batching-") as tmp:
        grid = dict(model=args.model, datasets=["harmful:test"], defenses=["none", "self-reminder"])
        run_grid(EvalConfig(out=str(Path(tmp) / "warm"), limit=1, max_new_tokens=4, batch_size=1, **grid))
        runs = {b: timed_grid(EvalConfig(out=str(Path(tmp) / f"b{b}"), limit=args.limit, batch_size=b,
                                         max_new_tokens=args.max_new_tokens, **grid))
                for b in (1, args.batch_size)}
    (one, gen1, wall1), (many, gen_n, wall_n) = runs[1], runs[args.batch_size]
    differ = [k for k in one if any(one[k][f] != many[k][f] for f in SAME)]
    for b, (rows, gen, wall) in runs.items():
        sizes = Counter(r["batch_size"] for r in rows.values())
        formed = ", ".join(f"{n // size} of {size}" for size, n in sorted(sizes.items(), reverse=True))
        print(f"batch size {b}: {len(rows)} rows, {sum(r['n_tokens'] for r in rows.values())} tokens, "
              f"generation {gen:.2f} s, wall {wall:.2f} s; batches: {formed}", flush=True)
    result = {"speedup_generation": gen1 / gen_n, "speedup_wall": wall1 / wall_n, "rows_differ": len(differ)}
    print(f"batch size {args.batch_size} vs 1: generation {result['speedup_generation']:.2f}x faster, "
          f"wall {result['speedup_wall']:.2f}x; rows that differ: {len(differ)} of {len(one)}")
    return result


if __name__ == "__main__":
    main()
