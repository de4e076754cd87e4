"""How fast the detector's check features are read: one encoding per answer vs one forward per check point.

    python -m benchmarks.check_features --model embedded --reminder checkpoints/embedded [--n 40]

The detector's training pairs, its calibration and ``benchmarks.defense`` read every answer at each point guarded
generation checks it. :func:`training.features.check_features` encodes the answer once and runs only the soft
prompt on the KV cache cropped at each point; the earlier way (:func:`training.features.check_pairs` +
:func:`training.features.pair_features`) re-encodes prompt + partial answer + soft prompt for every point, in padded
batches. Both run in this process on the first ``--n`` validation answers of each kind (cached model answers) through
the reminder's prompt; printed: seconds each, the ratio, and how far their probe scores are apart (the earlier way
re-tokenises the decoded partial answer, so a few points can differ by a token at the seam).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reminder import Reminder, load_model
from training.detector import DetectorConfig
from training.features import check_features, check_pairs, pair_features, split_answers
from training.probe import probe_scores


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--reminder", default="checkpoints/embedded")
    ap.add_argument("--n", type=int, default=40, help="validation prompts per set (harmful answers: two each)")
    a = ap.parse_args(argv)
    adapter = load_model(a.model)
    rem = Reminder.load(a.reminder, adapter)
    cfg = DetectorConfig.of(rem)
    cfg.max_per_split = {"val": a.n}
    answers = split_answers(adapter, cfg, "val")
    soft = rem.soft_prompt(adapter.dtype, adapter.device).detach()
    points = (rem.interval, cfg.max_new_tokens, rem.check_start, rem.check_end)

    start = time.perf_counter()
    pairs = [p for ans in answers for p in check_pairs(adapter, ans, *points)]
    old, _ = pair_features(adapter, pairs, soft, rem.layer, cfg.batch_size)
    old_s = time.perf_counter() - start
    start = time.perf_counter()
    new, _, _ = check_features(adapter, answers, soft, *points, rem.layer)
    new_s = time.perf_counter() - start

    det = rem.detector.cpu()
    p_old, p_new = probe_scores(det, old), probe_scores(det, new)
    gap = np.abs(p_old - p_new)
    out = {"answers": len(answers), "checks": len(pairs), "per_point_s": round(old_s, 1),
           "one_encoding_s": round(new_s, 1), "speedup": round(old_s / new_s, 2),
           "median_score_gap": float(np.median(gap)), "max_score_gap": float(gap.max()),
           "checks_deciding_differently": int(((p_old >= rem.threshold) != (p_new >= rem.threshold)).sum())}
    for k, v in out.items():
        print(f"{k}: {v}")
    return out


if __name__ == "__main__":
    main()
