"""How the threshold trades benign for harmful firing: a reminder's checks over whole validation generations.

    python -m benchmarks.calibration --model embedded --reminder checkpoints/embedded [--allow 3]

Reads every validation response at each check point and combines the checks as the reminder's gate does (as
:func:`training.calibration.calibrate` does), then prints the highest benign peak scores and, for 0..``allow`` benign
generations allowed to fire, the lowest such threshold and the share of each kind of generation that fires at it.
"""

from __future__ import annotations

import argparse

import numpy as np

from reminder import Reminder, load_model
from training.calibration import generation_peaks
from training.detector import DetectorConfig
from training.features import generation_checks


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--reminder", default="checkpoints/embedded")
    ap.add_argument("--allow", type=int, default=3, help="most benign validation generations allowed to fire")
    a = ap.parse_args(argv)
    adapter = load_model(a.model)
    rem = Reminder.load(a.reminder, adapter)
    cfg = DetectorConfig.of(rem)
    cfg.max_per_split = {}
    checks = generation_checks(adapter, rem.soft_prompt(adapter.dtype, adapter.device), cfg, rem.interval, rem.layer)
    peak, kind = generation_peaks(checks, rem.detector.cpu(), rem.aggregate), checks.kind
    benign = np.sort(peak[kind == "benign"])[::-1]
    print("highest benign peaks:", np.round(benign[:a.allow + 2], 5).tolist())
    for k in range(a.allow + 1):
        t = float(np.nextafter(benign[k], 1.0))  # just above the (k+1)-th highest benign peak: k benign fire
        fired = {str(name): round(float(np.mean(peak[kind == name] >= t)), 3) for name in dict.fromkeys(kind)}
        print(f"{k} benign allowed: threshold {t:.5f}, fired {fired}")


if __name__ == "__main__":
    main()
