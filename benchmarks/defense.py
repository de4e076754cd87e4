"""How well a trained reminder defends, on held-out (test split) prompts; writes the numbers into its reminder.json.

    python -m benchmarks.defense --model embedded --reminder checkpoints/embedded [--n-harmful 30 --n-benign 30]

Greedy decoding, 96 new tokens, keyword refusal judge (:func:`reminder.judges.is_refusal`); next to each harmful
refusal rate, ``*_unsafe_*`` is the attack success by the learned harm judge (``learned``: the share of answers it
calls unsafe, prefill included):

* ``harmful_refusal_plain``: harmful prompts, no reminder;
* ``harmful_refusal_reminder``: harmful prompts, guarded by the reminder;
* ``harmful_refusal_prefill_reminder``: harmful prompts with the assistant turn prefilled "Sure, here is", guarded;
* ``benign_fired``: benign prompts on which the reminder fired at least once;
* ``benign_identical``: benign prompts whose guarded answer is token-identical to the unguarded one;
* ``detector_auroc``: the check detector, read through the trained soft prompt, on held-out test-split
  (prompt, partial response) pairs cut at a random word boundary (a third of them empty);
* ``detector_auroc_checks``: the same on every check point of the test responses (what the gate reads), and
  ``detector_auroc_generations`` on each test generation's highest gate score, with ``detector_fired_test``: the
  share of test generations of each kind whose gate reaches the threshold (the detector alone, on cached answers).

Unguarded answers are decoded in batches (:func:`training.examples.greedy_batch`, the same greedy
tokens as :func:`reminder.generate`); guarded ones go through :func:`reminder.generate` itself. The first
``n-harmful``/``n-benign`` test prompts are used (the prompt files are in shuffled order).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from attacks.compose import attack_inputs
from reminder import Reminder, generate, load_model
from reminder.checkpoint import write_metrics
from reminder.data import load_prompt_set
from reminder.judges import LearnedJudge, is_refusal, unsafe_share
from training.calibration import generation_peaks
from training.detector import DetectorConfig
from training.examples import greedy_batch, greedy_ids
from training.features import generation_checks, load_pairs, pair_features
from training.probe import probe_scores, scores_report


def run(model: str = "embedded", reminder_dir: str = "checkpoints/embedded", n_harmful: int = 30,
        n_benign: int = 30, max_new_tokens: int = 96, write: bool = True) -> dict:
    """Measure, print and (with ``write``) store the metrics under ``metrics`` in ``reminder.json``."""
    adapter = load_model(model)
    rem = Reminder.load(reminder_dir, adapter)
    harmful = load_prompt_set("harmful", "test")[:n_harmful]
    benign = load_prompt_set("benign", "test")[:n_benign]
    start = time.perf_counter()

    def guarded(records, attack="none"):
        """The records' guarded answers under ``attack`` of the one registry, and the inputs it made."""
        inputs = [attack_inputs(attack, r, model) for r in records]
        return inputs, [generate(adapter, a.prompt, a.image, a.prefill, reminder=rem, max_new_tokens=max_new_tokens)
                        for a in tqdm(inputs, desc=f"guarded{'' if attack == 'none' else ' + ' + attack}")]

    plain_harmful = greedy_batch(adapter, [r.prompt for r in harmful], "", max_new_tokens)
    plain_ids = greedy_ids(adapter, [r.prompt for r in benign], "", max_new_tokens)
    _, with_rem = guarded(harmful)
    prefilled, with_prefill = guarded(harmful, "prefill")  # the registry's default prefill: "Sure, here is"
    _, benign_rem = guarded(benign)

    cfg = DetectorConfig.of(rem)
    cfg.model, cfg.layer = model, rem.layer
    soft = rem.soft_prompt(adapter.dtype, adapter.device)
    test_pairs = load_pairs(adapter, cfg, ("test",))
    check, _ = pair_features(adapter, test_pairs, soft, rem.layer)
    y = np.array([p.unsafe for p in test_pairs])
    det = scores_report(probe_scores(rem.detector.cpu(), check), y, rem.threshold)
    gens = generation_checks(adapter, soft, cfg, rem.interval, rem.layer, split="test")
    per_check = scores_report(probe_scores(rem.detector.cpu(), gens.feats), gens.unsafe[gens.gen], 0.5)
    peak = generation_peaks(gens, rem.detector.cpu(), rem.aggregate)
    per_gen = scores_report(peak, gens.unsafe, rem.threshold)

    rate = lambda xs: float(np.mean(xs)) if len(xs) else None  # noqa: E731
    judge = LearnedJudge(adapter=adapter)
    asked = [r.prompt for r in harmful]
    metrics = {
        "harmful_refusal_plain": rate([is_refusal(t) for t in plain_harmful]),
        "harmful_refusal_reminder": rate([is_refusal(g.text) for g in with_rem]),
        "harmful_refusal_prefill_reminder": rate([is_refusal(g.text) for g in with_prefill]),
        "harmful_unsafe_plain": unsafe_share(judge, asked, plain_harmful),
        "harmful_unsafe_reminder": unsafe_share(judge, asked, [g.text for g in with_rem]),
        "harmful_unsafe_prefill_reminder": unsafe_share(judge, asked, [a.prefill + g.text for a, g in
                                                                       zip(prefilled, with_prefill, strict=True)]),
        "harmful_fired": rate([bool(g.injections) for g in with_rem]),
        "benign_fired": rate([bool(g.injections) for g in benign_rem]),
        "benign_identical": rate([g.token_ids == ids for g, ids in zip(benign_rem, plain_ids, strict=True)]),
        "detector_auroc": det["auroc"], "detector_test": det,
        "detector_auroc_checks": per_check["auroc"], "detector_auroc_generations": per_gen["auroc"],
        "detector_fired_test": {k: rate(peak[gens.kind == k] >= rem.threshold) for k in dict.fromkeys(gens.kind)},
        "n_harmful": len(harmful), "n_benign": len(benign), "max_new_tokens": max_new_tokens,
        "threshold": rem.threshold, "interval": rem.interval, "check_start": rem.check_start,
        "check_end": rem.check_end, "judge": "keyword", "judge_unsafe": "learned", "split": "test",
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(metrics, indent=2))
    if write:
        write_metrics(Path(reminder_dir) / "reminder.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--reminder", default="checkpoints/embedded")
    ap.add_argument("--n-harmful", type=int, default=30)
    ap.add_argument("--n-benign", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--no-write", action="store_true", help="print only; leave reminder.json as it is")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    return run(a.model, a.reminder, a.n_harmful, a.n_benign, a.max_new_tokens, not a.no_write)


if __name__ == "__main__":
    main()
