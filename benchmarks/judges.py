"""Judge agreement with the Llama-Guard-3 ``safe`` labels of real LLaVA-1.5 responses (``unknown`` skipped).

    python -m benchmarks.judges --judges keyword,rubric --limit 20 [--data ../shared/data/llava15_responses]

Label mapping: a judge calling a response harmful (harmful >= 0.5) <-> ``safe == "false"``. Prints accuracy and
Cohen's kappa per judge and file; judges that cannot run here (weights not cached) are reported and skipped;
invalid (unparsable) verdicts are counted and left out of the agreement.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from sklearn.metrics import accuracy_score, cohen_kappa_score

from reminder import paths
from reminder.judges import JudgeUnavailable, Verdict, get_judge

DEFAULT = paths.SHARED_DATA / "llava15_responses"


def load(folder: Path, limit: int | None, seed: int) -> dict[str, list[dict]]:
    """Labelled items per file (a seeded random ``limit`` of each when given)."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        items = [r for r in json.loads(path.read_text()) if r.get("safe") in ("true", "false")]
        if limit:
            items = random.Random(seed).sample(items, min(limit, len(items)))
        out[path.stem] = items
    if not out:
        raise SystemExit(f"no *.json response files in {folder}")
    return out


def verdicts(judge, items: list[dict]) -> list[tuple[bool, Verdict]]:
    """(labelled unsafe, the judge's verdict) per item."""
    return [(r["safe"] == "false", judge(r["question"], r["response"])) for r in items]


def agreement(pairs: list[tuple[bool, Verdict]]) -> dict:
    """Accuracy and Cohen's kappa against the labels (harmful <-> safe=false); invalid verdicts only counted."""
    valid = [(t, v.harmful >= 0.5) for t, v in pairs if v.valid]
    invalid = len(pairs) - len(valid)
    truth, pred = [t for t, _ in valid], [p for _, p in valid]
    if not truth:
        return {"n": 0, "invalid": invalid}
    kappa = cohen_kappa_score(truth, pred) if len(set(truth) | set(pred)) > 1 else float("nan")
    return {"n": len(truth), "invalid": invalid, "accuracy": round(accuracy_score(truth, pred), 3),
            "kappa": round(float(kappa), 3), "judged_harmful": round(sum(pred) / len(pred), 3),
            "labelled_unsafe": round(sum(truth) / len(truth), 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--judges", default="keyword", help="comma-separated judge names")
    p.add_argument("--data", type=Path, default=DEFAULT)
    p.add_argument("--limit", type=int, default=None, help="random items per file")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    data = load(a.data, a.limit, a.seed)
    for name in a.judges.split(","):
        try:
            judge = get_judge(name.strip())
        except JudgeUnavailable as err:
            print(f"{name}: skipped ({err})")
            continue
        every = []
        for stem, items in data.items():
            pairs = verdicts(judge, items)
            every += pairs
            print(json.dumps({"judge": name, "file": stem, **agreement(pairs)}), flush=True)
        print(json.dumps({"judge": name, "file": "all", **agreement(every)}), flush=True)


if __name__ == "__main__":
    main()
