"""Development check: the probes' AUROC on the released LLaVA-1.5 responses (labelled), read by this model. They sit in
``../shared`` beside a checkout (absent elsewhere: the check reports nothing)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from reminder import Detector, paths
from reminder.data import load_responses

from .examples import Pair
from .features import pair_features
from .probe import probe_scores, scores_report

if TYPE_CHECKING:
    from .detector_config import DetectorConfig

LLAVA_RESPONSES = paths.SHARED_DATA / "llava15_responses"


def eval_llava(adapter, detectors: dict[str, Detector], soft: torch.Tensor, cfg: DetectorConfig,
               folder: Path = LLAVA_RESPONSES) -> dict:
    """Development check: AUROC on real LLaVA-1.5 responses (labelled), read by this model; {} if absent."""
    if not folder.is_dir():
        return {}
    rng = random.Random(cfg.seed)
    out = {}
    for path in sorted(folder.glob("*.json")):
        recs = [r for r in load_responses(path) if r.safe is not None]
        recs = rng.sample(recs, min(cfg.llava_per_file, len(recs)))
        words = lambda s: " ".join(s.split()[:48])  # noqa: E731 - keep the forward short
        pairs = [Pair(r.prompt, words(r.response), int(not r.safe)) for r in recs]
        check, token = pair_features(adapter, pairs, soft, cfg.layer, cfg.batch_size)
        y = np.array([p.unsafe for p in pairs])
        out[path.stem] = {name: scores_report(probe_scores(detectors[name], f), y, 0.5)["auroc"]
                          for name, f in (("check", check), ("token", token))} | {"n": len(pairs),
                                                                               "unsafe": int(y.sum())}
    return out
