"""Decode-time overhead of guarded generation on the embedded model, as ratios to plain decoding.

    python -m benchmarks.overhead [--lengths 128 512] [--repeats 3]

Checks every 16 tokens with a detector that never fires (threshold above 1), so every variant emits the same
tokens and only the check's cost differs: ``fused`` (soft prompt in the same forward as the next token, ours),
``separate`` (a few-token forward on top of the cache, then a crop) and ``reencode`` (the official code: the whole
sequence again without cache). Runs are interleaved in one process and the median of per-round ratios is reported,
since these machines are noisy.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from reminder import Detector, Reminder, SoftPrompt, generate, load_model

CHECKS = ("fused", "separate", "reencode")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interval", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    adapter = load_model(args.model)
    d = adapter.hidden_size
    never = Reminder(SoftPrompt.from_text(adapter), Detector(torch.zeros(d), torch.ones(d), torch.zeros(d),
                                                               torch.tensor(0.0)), model=adapter.name)
    prompt = adapter.build("Write a long, detailed essay about the history of the printing press.")
    generate(adapter, prompt, max_new_tokens=8)  # warm-up
    results = {}
    for n in args.lengths:
        ratios: dict[str, list[float]] = {c: [] for c in CHECKS}
        base_ms = []
        for _ in range(args.repeats):
            base = generate(adapter, prompt, max_new_tokens=n, ignore_eos=True)
            base_ms.append(base.generate_seconds / n * 1000)
            for check in CHECKS:
                g = generate(adapter, prompt, reminder=never, max_new_tokens=n, ignore_eos=True, threshold=1.01,
                             interval=args.interval, check=check)
                assert g.token_ids == base.token_ids, "a never-firing guard must not change the tokens"
                ratios[check].append(g.generate_seconds / base.generate_seconds)
        results[n] = {c: statistics.median(r) for c, r in ratios.items()}
        line = "  ".join(f"{c} {results[n][c]:.3f}x" for c in CHECKS)
        print(f"{n:4d} new tokens: baseline {statistics.median(base_ms):.1f} ms/token | guarded/baseline: {line}",
              flush=True)
    return results


if __name__ == "__main__":
    main()
