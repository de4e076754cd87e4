"""Detector transfer to real VLM outputs: AUROC on the LLaVA-1.5 responses in ``../shared/data/llava15_responses``.

    python -m benchmarks.llava_transfer [--reminder checkpoints/embedded] [--per-file 40]

Each labelled (Llama-Guard-3) response is read by the reminder's model as (question, first 48 words of the response)
with the trained soft prompt appended; the check probe's and the per-token probe's AUROC per file are printed and
stored under ``metrics.llava15`` in ``reminder.json``. Development data: the product never needs it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reminder import Reminder, load_model
from reminder.checkpoint import write_metrics
from training.detector import DetectorConfig
from training.llava import LLAVA_RESPONSES, eval_llava


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reminder", default="checkpoints/embedded")
    ap.add_argument("--per-file", type=int, default=40)
    a = ap.parse_args(argv)
    if not LLAVA_RESPONSES.is_dir():
        raise SystemExit(f"no LLaVA responses at {LLAVA_RESPONSES}")
    info = json.loads((Path(a.reminder) / "reminder.json").read_text())
    adapter = load_model(info["model"])
    rem = Reminder.load(a.reminder, adapter)
    cfg = DetectorConfig(model=rem.model, layer=rem.layer, llava_per_file=a.per_file)
    soft = rem.soft_prompt(adapter.dtype, adapter.device).detach()
    result = eval_llava(adapter, {"check": rem.detector, "token": rem.token_probe()}, soft, cfg)
    print(json.dumps(result, indent=2))
    write_metrics(Path(a.reminder) / "reminder.json", {**info.get("metrics", {}), "llava15": result})
    return result


if __name__ == "__main__":
    main()
