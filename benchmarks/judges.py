"""Judges against Llama Guard 3 on real LLaVA-1.5 answers, on degenerate outputs of the embedded models, and timed.

    python -m benchmarks.judges --judges keyword,learned [--data ../shared/data/llava15_responses] [--timing 744]

* Agreement with the Llama-Guard-3 ``safe`` labels (``unknown`` skipped) on the validation split the learned judge
  never trained on (the split of ``training.judge``, with the settings recorded in the judge's manifest; ``--split
  all`` reads every labelled answer instead, training ones included): accuracy and Cohen's kappa of ``unsafe``,
  AUROC of ``harmful``, per file and over all. Judges that cannot run here (weights not cached) are reported and
  skipped; invalid (unparsable) verdicts are counted and left out.
* ``assets/judge/degenerate.jsonl``: answers of the embedded models that echo the request, loop or list nothing
  (none is harmful): how many each judge calls unsafe.
* ``--timing N``: seconds to judge N labelled answers (their order seeded), with the machine's load average (the
  CPU may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, roc_auc_score

from reminder import paths
from reminder.judges import LEARNED_JUDGE, JudgeUnavailable, Verdict, get_judge, judge_many
from training.judge import SHARED, Example, shared_examples

DEGENERATE = paths.ASSETS / "judge" / "degenerate.jsonl"


def labelled(folder: Path, split: str) -> list[Example]:
    """The labelled answers: the learned judge's validation split (its manifest's settings), or all of them."""
    if split == "all":
        return shared_examples(folder, 0.0, 0)
    cfg = json.loads((LEARNED_JUDGE / "judge.json").read_text())["config"]
    out = shared_examples(folder, cfg["val_fraction"], cfg["seed"], cfg["max_train_per_label"],
                          cfg["max_val_per_label"])
    return [e for e in out if e.split == "val"]


def agreement(truth: list[bool], verdicts: list[Verdict]) -> dict:
    """Accuracy and Cohen's kappa of ``unsafe`` and AUROC of ``harmful`` against the labels (1 = unsafe)."""
    pairs = [(t, v) for t, v in zip(truth, verdicts, strict=True) if v.valid]
    out = {"n": len(pairs), "invalid": len(truth) - len(pairs)}
    if not pairs:
        return out
    y = np.array([t for t, _ in pairs], int)
    pred = np.array([v.unsafe for _, v in pairs], int)
    score = np.array([v.harmful for _, v in pairs], float)
    varied = len(set(y.tolist()) | set(pred.tolist())) > 1
    return {**out, "labelled_unsafe": round(float(y.mean()), 3), "judged_unsafe": round(float(pred.mean()), 3),
            "accuracy": round(float(accuracy_score(y, pred)), 3),
            "kappa": round(float(cohen_kappa_score(y, pred)), 3) if varied else None,
            "auroc": round(float(roc_auc_score(y, score)), 3) if len(set(y.tolist())) > 1 else None}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--judges", default="keyword,learned", help="comma-separated judge names")
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--split", choices=("val", "all"), default="val")
    p.add_argument("--limit", type=int, default=None, help="random labelled answers per file")
    p.add_argument("--degenerate", type=Path, default=DEGENERATE)
    p.add_argument("--timing", type=int, default=0, help="also time judging this many answers")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not a.data.is_dir():
        p.error(f"no labelled answers at {a.data} (pass --data)")
    items = labelled(a.data, a.split)
    files = sorted({e.source for e in items})
    if a.limit:
        rng = random.Random(a.seed)
        items = [e for f in files for e in rng.sample([x for x in items if x.source == f],
                                                      min(a.limit, sum(x.source == f for x in items)))]
    degenerate = [json.loads(line) for line in a.degenerate.read_text().splitlines()] if a.degenerate.is_file() else []
    out = []
    for name in (n.strip() for n in a.judges.split(",")):
        try:
            judge = get_judge(name)
        except JudgeUnavailable as err:
            print(f"{name}: skipped ({err})")
            continue
        verdicts = judge_many(judge, [(e.question, e.response) for e in items])
        for f in [*files, "all"]:
            keep = [i for i, e in enumerate(items) if f in ("all", e.source)]
            row = {"judge": name, "split": a.split, "file": f,
                   **agreement([bool(items[i].unsafe) for i in keep], [verdicts[i] for i in keep])}
            out.append(row)
            print(json.dumps(row), flush=True)
        if degenerate:
            dv = judge_many(judge, [(d["prompt"], d["response"]) for d in degenerate])
            kinds = sorted({d["kind"] for d in degenerate})
            row = {"judge": name, "degenerate": len(dv), "unsafe": sum(v.unsafe for v in dv),
                   **{f"unsafe_{k}": f"{sum(v.unsafe for v, d in zip(dv, degenerate, strict=True) if d['kind'] == k)}/"
                                     f"{sum(d['kind'] == k for d in degenerate)}" for k in kinds},
                   "max_harmful": round(max(v.harmful for v in dv), 3)}
            out.append(row)
            print(json.dumps(row), flush=True)
        if a.timing:
            pool = shared_examples(a.data, 0.0, 0)
            random.Random(a.seed).shuffle(pool)
            pairs = [(e.question, e.response) for e in (pool * (a.timing // max(len(pool), 1) + 1))[:a.timing]]
            load = os.getloadavg()[0]
            start = time.perf_counter()
            judge_many(judge, pairs)
            seconds = time.perf_counter() - start
            row = {"judge": name, "timed_answers": len(pairs), "seconds": round(seconds, 1),
                   "seconds_per_answer": round(seconds / len(pairs), 4), "load_before": round(load, 2),
                   "load_after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


if __name__ == "__main__":
    main()
