"""Fit the reminder's detectors on the frozen model's own (prompt, partial response) pairs.

    python -m training.detector --model embedded --out checkpoints/embedded [--layer -1] [--n-components 0|4]
    python -m training.detector --out checkpoints/embedded --prompt-from checkpoints/embedded   # refit a trained one

Harmful pairs: the project's harmful prompts with the model's own compliant answers (greedy, 96 tokens), one forced
by the AdvBench-style prefill "Sure, here is" and one unprompted (kept only where it does not refuse); benign pairs:
the model's own answers to benign prompts. Training responses are cut where guarded generation checks them (every
``interval`` tokens; ``--cuts random``: at random word boundaries, about a third empty), validation and test
responses at one random word boundary; ``--openings`` adds harmful training answers that begin with a given
assistant-turn opening, ``--images`` training conversations with an image in the user turn. Two probes
(standardise, optional PCA, L2 logistic regression, scikit-learn) are fitted on the train split:

* ``check``: the chosen layer's state at the last soft-prompt token, with the soft prompt appended after the
  partial response inside the assistant turn (what guarded generation reads every ``interval`` tokens);
* ``token``: the state at the last response token without the soft prompt (per-token scores).

The threshold is calibrated on whole validation generations: every validation response is read at each check point,
the checks are combined as the gate will combine them (``--aggregate mean``: the running mean of their log-odds),
and the threshold maximises the share of harmful generations that fire while at most ``max_fpr`` of benign
generations fire (a benign answer is checked several times, so a per-check false positive rate would understate
how often the reminder interrupts it). The L2 strength is chosen the same way, on validation generations, among
``--c``. Pair-level AUROC and the confusion matrix are reported on the validation and test splits. Everything is
saved as safetensors through :meth:`Reminder.save`.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from reminder import Detector, Reminder, ReminderError, SoftPrompt, load_model, paths
from reminder.data import load_responses
from reminder.detector import AGGREGATES, gate
from reminder.soft_prompt import DEFAULT_INIT_TEXT, DEFAULT_TOKENS

from .examples import (
    CUTS,
    Answer,
    Pair,
    cut_response,
    image_id,
    image_paths,
    labelled_responses,
    soft_batch,
    training_image,
)

LLAVA_RESPONSES = paths.SHARED_DATA / "llava15_responses"


@dataclass
class DetectorConfig:
    model: str = "embedded"
    out: str = "checkpoints/embedded"
    layer: int = -1
    n_components: int = 0  # 0: the full standardised state; k: PCA to k dimensions first (the paper uses 4)
    c: tuple[float, ...] = (0.001, 0.003, 0.01)  # inverse L2 strengths tried; validation picks one
    max_fpr: float = 0.02  # share of benign validation generations the threshold lets fire
    aggregate: str = "mean"  # how a generation's checks combine (reminder.detector.gate)
    cuts: str = "checks"  # training partials: "checks" (where guarded generation checks) or "random" word cuts
    max_new_tokens: int = 96  # of the model's responses (pairs are cut from them; calibration reads them whole)
    interval: int = 16  # check interval stored in the reminder and used for calibration
    check_start: bool = False  # also check before the first token (stored in the reminder; trained and calibrated)
    check_end: bool = False  # also check an answer that ends between check points (stored; trained and calibrated)
    max_per_split: dict[str, int] = field(default_factory=dict)  # cap prompts per split and set, e.g. {"train": 90}
    openings: tuple[str, ...] = ()  # extra assistant-turn openings for harmful training answers (see load_pairs)
    images: tuple[str, ...] = ()  # image files put in the user turn of extra training conversations (see load_pairs)
    prompt_from: str | None = None  # read through this reminder's (trained) soft prompt instead of the initial one
    train_cuts: int = 3  # with cuts="random": partials per training response (validation and test: one)
    batch_size: int = 8
    seed: int = 0
    cache: str | None = None  # responses JSONL (default $REMINDER_HOME/responses/<model>[-<lora hash>].jsonl)
    n_tokens: int = DEFAULT_TOKENS
    init_text: str = DEFAULT_INIT_TEXT
    eval_llava: bool = False
    llava_per_file: int = 40
    command: str = ""  # the command line that ran this (recorded in reminder.json)

    def __post_init__(self):
        self.c = (self.c,) if isinstance(self.c, int | float) else tuple(self.c)  # older reminders store one
        self.openings = tuple(self.openings)
        self.images = image_paths(self.images)

    @classmethod
    def of(cls, reminder: Reminder) -> DetectorConfig:
        """The settings the reminder's detector was fitted with (``detector_config`` in its metadata), with the
        reminder's own check points."""
        known = {f.name for f in fields(cls)}
        fitted = {k: v for k, v in reminder.meta.get("detector_config", {}).items() if k in known}
        return cls(**fitted | {"check_start": reminder.check_start, "check_end": reminder.check_end})


@dataclass
class DetectorResult:
    reminder: Reminder
    metrics: dict
    folder: Path | None = None


def load_pairs(adapter, cfg: DetectorConfig, splits: tuple[str, ...] = ("train", "val", "test")) -> list[Pair]:
    """Harmful and benign (prompt, partial response, label) pairs of ``splits``, each response (cached) cut at
    ``cfg.train_cuts`` random word boundaries in the train split and at one in the others.

    ``cfg.openings`` adds harmful training answers that start with a mild opening the model then continues ("Great
    question!"): unprompted harmful answers that open politely before the harm are the ones the probe misses most.
    ``cfg.images`` adds training conversations with each image in the user turn (harmful: after the prefill and
    unprompted; benign: the model's answer), so the probe also sees states shaped by image tokens.
    """
    rng = random.Random(cfg.seed)
    pairs: list[Pair] = []
    for split in splits:
        for ans in split_answers(adapter, cfg, split):
            for _ in range(cfg.train_cuts if split == "train" else 1):
                partial, rest = cut_response(ans.response, rng)
                pairs.append(Pair(ans.record.prompt, partial, ans.unsafe, rest, split, ans.image))
    return pairs


def split_answers(adapter, cfg: DetectorConfig, split: str) -> list[Answer]:
    """The model's labelled answers of ``split`` (capped by ``cfg.max_per_split``; openings and images: train only)."""
    cap = cfg.max_per_split.get(split)
    train = split == "train"
    return labelled_responses(adapter, split, cfg.max_new_tokens, {"harmful": cap, "benign": cap}, cfg.cache,
                              openings=cfg.openings if train else (), images=cfg.images if train else ())


def probe_features(adapter, cfg: DetectorConfig, soft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                           np.ndarray, np.ndarray]:
    """Every pair the probes learn from and are scored on, read through ``soft``: (check [N, d], token [N, d],
    unsafe [N], split [N]). Training answers are read at their check points (``cfg.cuts == "checks"``, with
    :func:`check_features`) or cut at random; validation and test ones at one random word boundary each."""
    parts = []
    if cfg.cuts == "checks":
        answers = split_answers(adapter, cfg, "train")
        check, token, owner = check_features(adapter, answers, soft, cfg.interval, cfg.max_new_tokens,
                                             cfg.check_start, cfg.check_end, cfg.layer, desc="train answers")
        parts.append((check, token, np.array([answers[i].unsafe for i in owner], dtype=int),
                      np.full(len(owner), "train")))
    pairs = load_pairs(adapter, cfg, ("val", "test") if cfg.cuts == "checks" else ("train", "val", "test"))
    check, token = pair_features(adapter, pairs, soft, cfg.layer, cfg.batch_size)
    parts.append((check, token, np.array([p.unsafe for p in pairs], dtype=int), np.array([p.split for p in pairs])))
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))


def check_points(n: int, interval: int, max_new_tokens: int, start: bool = False, end: bool = False) -> list[int]:
    """Where guarded generation checks an answer of ``n`` tokens: after every ``interval`` tokens (none after the
    ``max_new_tokens``-th token, where a reminder could change nothing), with ``start`` also before the first token,
    and with ``end`` where the answer ended (by end-of-turn, before ``max_new_tokens``) between two check points."""
    points = list(range(0 if start else interval, min(n, max_new_tokens - 1) + 1, interval))
    if end and n < max_new_tokens and n % interval:
        points.append(n)
    return points


def answer_ids(adapter, answer: Answer, max_new_tokens: int) -> list[int]:
    """The answer's token ids after its prefill (at most ``max_new_tokens``)."""
    return adapter.tokens(answer.response[len(answer.prefill):])[0].tolist()[:max_new_tokens]


def check_pairs(adapter, answer: Answer, interval: int, max_new_tokens: int, start: bool = False,
                end: bool = False) -> list[Pair]:
    """The partial responses guarded generation checks while it produces the answer (see :func:`check_points`)."""
    ids = answer_ids(adapter, answer, max_new_tokens)
    return [Pair(answer.record.prompt, answer.prefill + adapter.tokenizer.decode(ids[:k]), answer.unsafe,
                 adapter.tokenizer.decode(ids[k:]), image=answer.image)
            for k in check_points(len(ids), interval, max_new_tokens, start, end)]


@torch.inference_mode()
def check_features(adapter, answers: list[Answer], soft: torch.Tensor, interval: int, max_new_tokens: int,
                   start: bool = False, end: bool = False, layer: int = -1,
                   desc: str = "check features") -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Each answer read at every point guarded generation checks it (:func:`check_points`), as it reads them.

    One forward per answer: prompt + answer, then one copy of the soft prompt [1, n, d] per check point, each copy
    seeing the prompt and the answer's tokens up to its point (and itself, causally) and placed at the positions it
    would take there, as if the cache had been cropped at that point. Returns (check [N, d]: ``layer`` state at the
    last soft token; token [N, d]: the state at the last token before the point; the answer of each row [N]),
    float32, rows in answer order and then point order: the rows of :func:`check_pairs`, without re-encoding each
    partial answer as :func:`pair_features` does (``benchmarks.check_features`` measures the difference).
    """
    n = soft.shape[1]
    checks, tokens, owner = [], [], []
    for i, ans in enumerate(tqdm(answers, desc=desc, unit="answer", leave=False)):
        ids = answer_ids(adapter, ans, max_new_tokens)
        points = check_points(len(ids), interval, max_new_tokens, start, end)
        if not points:
            continue
        enc = adapter.encode(adapter.build(ans.record.prompt, training_image(ans.image), prefill=ans.prefill))
        p, body = len(enc), ids[:points[-1]]
        length = p + len(body)
        embeds = torch.cat([enc.embeds, adapter.embed(torch.tensor([body], dtype=torch.long, device=adapter.device)),
                            *[soft.to(adapter.dtype)] * len(points)], dim=1)
        positions = torch.cat([enc.positions, adapter.positions(enc.next_position, len(body)),
                               *[adapter.positions(enc.next_position + k, n) for k in points]], dim=-1)
        size = length + n * len(points)
        sees = torch.ones(size, size, dtype=torch.bool).tril()
        sees[length:, :length] = False
        for j, k in enumerate(points):  # copy j: the prompt and answer up to k, then itself causally
            rows = slice(length + j * n, length + (j + 1) * n)
            sees[rows, :p + k] = True
            sees[rows, length:rows.start] = False
        _, hid = adapter.forward(embeds, positions, None, layer, mask=sees)
        checks.append(hid[0, length + n - 1::n].float().cpu())
        tokens.append(hid[0, [p + k - 1 for k in points]].float().cpu())
        owner += [i] * len(points)
    if not checks:
        return torch.empty(0, adapter.hidden_size), torch.empty(0, adapter.hidden_size), np.zeros(0, dtype=int)
    return torch.cat(checks), torch.cat(tokens), np.array(owner)


@dataclass
class GenerationChecks:
    """Validation generations read at every check point: ``feats`` [N, d] (one row per check), ``gen`` [N] (the
    generation each check belongs to), ``unsafe`` and ``kind`` [G] per generation."""

    feats: torch.Tensor
    gen: np.ndarray
    unsafe: np.ndarray
    kind: np.ndarray


def generation_checks(adapter, soft: torch.Tensor, cfg: DetectorConfig, interval: int, layer: int = -1,
                      split: str = "val") -> GenerationChecks:
    """Read each ``split`` response (``cfg.max_new_tokens`` tokens) through ``soft`` at every check point (with
    ``cfg.check_start``, also before its first token; with ``cfg.check_end``, where it ends between check points)."""
    gens = split_answers(adapter, cfg, split)
    feats, _, owner = check_features(adapter, gens, soft, interval, cfg.max_new_tokens, cfg.check_start,
                                     cfg.check_end, layer, desc=f"{split} generations")
    kind = ["benign" if not g.unsafe else "harmful+prefill" if g.prefill else "harmful" for g in gens]
    return GenerationChecks(feats, owner, np.array([g.unsafe for g in gens]), np.array(kind))


def generation_peaks(checks: GenerationChecks, detector: Detector, aggregate: str) -> np.ndarray:
    """Each generation's highest gate score over its checks [G] (0 for one too short to be checked)."""
    with torch.no_grad():
        logits = detector.logit(checks.feats)
    peak = np.zeros(len(checks.unsafe))
    for g in np.unique(checks.gen):
        peak[g] = float(gate(logits[torch.from_numpy(checks.gen == g)], aggregate).max())
    return peak


def calibrate(checks: GenerationChecks, detector: Detector, aggregate: str, max_fpr: float) -> tuple[float, dict]:
    """Choose the threshold on whole generations, the way guarded generation will use it.

    A generation fires when the gate's score (:func:`reminder.detector.gate` over its checks so far) reaches the
    threshold at any check. The threshold maximises the harmful firing rate with at most ``max_fpr`` of benign
    generations firing. Returns (threshold, per-kind firing rates).
    """
    peak = generation_peaks(checks, detector, aggregate)
    threshold = choose_threshold(peak, checks.unsafe, max_fpr)
    fired = {k: float(np.mean(peak[checks.kind == k] >= threshold)) for k in ("harmful", "harmful+prefill", "benign")
             if (checks.kind == k).any()}
    return threshold, {"generations": {k: int((checks.kind == k).sum()) for k in fired},
                       "checks": len(checks.gen), "fired": fired, "aggregate": aggregate}


def calibrate_reminder(adapter, reminder: Reminder, cfg: DetectorConfig) -> tuple[float, dict]:
    """(threshold, firing rates) for ``reminder``'s own prompt and check probe on ``cfg``'s validation generations."""
    soft = reminder.soft_prompt(adapter.dtype, adapter.device).detach()
    checks = generation_checks(adapter, soft, cfg, reminder.interval, reminder.layer)
    return calibrate(checks, reminder.detector.cpu(), reminder.aggregate, cfg.max_fpr)


def recalibrate(folder: str | Path, adapter, command: str = "", check_end: bool = False) -> DetectorResult:
    """Choose the threshold of the reminder in ``folder`` again (same prompt, probes and ``max_fpr``) on the
    validation generations as they are now, e.g. after validation prompts were added; saved with a
    ``recalibration`` record (previous threshold, firing rates, command, seconds). ``check_end`` turns the
    reminder's end check on first (calibrated with it)."""
    start = time.perf_counter()
    reminder = Reminder.load(folder, adapter)
    reminder.check_end = reminder.check_end or check_end
    threshold, calibration = calibrate_reminder(adapter, reminder, DetectorConfig.of(reminder))
    metrics = {"threshold": threshold, "previous_threshold": reminder.threshold, "calibration": calibration}
    reminder.threshold = threshold
    reminder.meta.pop("uncalibrated", None)
    reminder.meta["recalibration"] = metrics | {"command": command,
                                               "seconds": round(time.perf_counter() - start, 1)}
    return DetectorResult(reminder, metrics, reminder.save(folder))


def fit(adapter, soft: torch.Tensor, cfg: DetectorConfig, interval: int = 16) -> tuple[dict[str, Detector], float,
                                                                                      dict]:
    """Fit the check and token probes on pairs read through ``soft`` [1, n, d] and calibrate the threshold.

    One check probe per inverse L2 strength in ``cfg.c``; the one that fires on the most harmful validation
    generations (at ``cfg.max_fpr`` of benign ones, ties to the higher pair AUROC) is kept, and the token probe
    uses its strength. Returns ({"check": ..., "token": ...}, threshold, metrics with pair-level AUROC and confusion
    matrices on the validation and test splits, the search and the generation-level calibration).
    """
    check, token, y, split = probe_features(adapter, cfg, soft)
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    gens = generation_checks(adapter, soft, cfg, interval, cfg.layer)
    x_train, search = check.numpy()[tr], []
    for c in cfg.c:
        probe = fit_probe(x_train, y[tr], cfg.n_components, c, cfg.seed)
        threshold, calibration = calibrate(gens, probe, cfg.aggregate, cfg.max_fpr)
        harmful = [v for k, v in calibration["fired"].items() if k != "benign"]
        auroc = scores_report(probe_scores(probe, check[va]), y[va], threshold)["auroc"]
        search.append({"c": c, "harmful_fired": float(np.mean(harmful)), "val_auroc": auroc,
                       "probe": probe, "threshold": threshold, "calibration": calibration})
    best = max(search, key=lambda r: (r["harmful_fired"], r["val_auroc"] or 0.0))
    detectors = {"check": best["probe"],
                 "token": fit_probe(token.numpy()[tr], y[tr], cfg.n_components, best["c"], cfg.seed)}
    threshold = best["threshold"]
    metrics = {"threshold": threshold, "c": best["c"],
               "c_search": [{k: r[k] for k in ("c", "harmful_fired", "val_auroc")} for r in search],
               "pairs": {s: int((split == s).sum()) for s in ("train", "val", "test")},
               "calibration": best["calibration"]}
    for name, feats in (("check", check), ("token", token)):
        d = detectors[name]
        t = threshold if name == "check" else choose_threshold(probe_scores(d, feats[va]), y[va], cfg.max_fpr)
        metrics[name] = {"val": scores_report(probe_scores(d, feats[va]), y[va], t),
                         "test": scores_report(probe_scores(d, feats[te]), y[te], t)}
    if cfg.eval_llava:
        metrics["llava15"] = eval_llava(adapter, detectors, soft, cfg)
    return detectors, threshold, metrics


@torch.inference_mode()
def pair_features(adapter, pairs: list[Pair], soft: torch.Tensor, layer: int = -1,
                  batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(check [N, d], token [N, d]) float32 features, batched by similar length."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt) + len(pairs[i].partial))
    check = torch.empty(len(pairs), adapter.hidden_size)
    token = torch.empty(len(pairs), adapter.hidden_size)
    with tqdm(total=len(pairs), desc="probe features", unit="pair", leave=False) as bar:
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            out = soft_batch(adapter, [pairs[j] for j in idx], soft, layer)
            check[idx], token[idx] = out["check"].float().cpu(), out["token"].float().cpu()
            bar.update(len(idx))
    return check, token


def fit_probe(x: np.ndarray, y: np.ndarray, n_components: int = 0, c: float = 0.1, seed: int = 0) -> Detector:
    """Standardise (+ PCA to ``n_components``) + L2 logistic regression on ``x`` [N, d], as a torch Detector."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(set(y.tolist())) < 2:
        raise ValueError("the detector needs both harmful and benign examples")
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    pca = PCA(n_components, random_state=seed).fit(z) if n_components else None
    if pca is not None:
        z = pca.transform(z)
    clf = LogisticRegression(C=c, max_iter=2000).fit(z, y)
    w, b = clf.coef_[0], float(clf.intercept_[0])
    components = None
    if pca is not None:  # PCA centres too: w·C(z - m) + b = w·Cz + (b - w·Cm)
        b -= float(w @ pca.components_ @ pca.mean_)
        components = torch.tensor(pca.components_, dtype=torch.float32)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return Detector(torch.tensor(scaler.mean_, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32),
                    torch.tensor(w, dtype=torch.float32), torch.tensor(b), components)


def choose_threshold(p: np.ndarray, y: np.ndarray, max_fpr: float = 0.02) -> float:
    """The threshold with the best TPR - FPR among those with FPR <= ``max_fpr`` (on validation scores).

    It sits halfway between the chosen score and the next lower one, so that unseen scores near either side of the
    gap are not decided by the validation set's exact values.
    """
    best, best_t = -1.0, float(np.max(p)) + 1e-6
    for t in np.unique(p):
        fpr = float(np.mean(p[y == 0] >= t)) if (y == 0).any() else 0.0
        tpr = float(np.mean(p[y == 1] >= t)) if (y == 1).any() else 0.0
        if fpr <= max_fpr and tpr - fpr > best:
            best, best_t = tpr - fpr, float(t)
    below = p[p < best_t]
    return (best_t + float(below.max())) / 2 if below.size else best_t


def scores_report(p: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """AUROC and the confusion matrix at ``threshold``."""
    from sklearn.metrics import roc_auc_score

    pred = p >= threshold
    return {"auroc": float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None, "n": int(len(y)),
            "tp": int((pred & (y == 1)).sum()), "fp": int((pred & (y == 0)).sum()),
            "tn": int((~pred & (y == 0)).sum()), "fn": int((~pred & (y == 1)).sum())}


def probe_scores(detector: Detector, feats: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return detector(feats).numpy()


def run(cfg: DetectorConfig, adapter=None) -> DetectorResult:
    """Fit both probes through the initial soft prompt (or ``cfg.prompt_from``'s trained one, whose training record
    is kept), calibrate the threshold, save the reminder to ``cfg.out``."""
    start = time.perf_counter()
    adapter = adapter or load_model(cfg.model)
    torch.manual_seed(cfg.seed)
    meta = {"init_text": cfg.init_text}
    if cfg.prompt_from:
        trained = Reminder.load(cfg.prompt_from, adapter)
        soft_prompt = trained.soft_prompt
        meta |= {k: v for k, v in trained.meta.items() if k in ("init_text", "sapt")}
    else:
        soft_prompt = SoftPrompt.from_text(adapter, cfg.init_text, cfg.n_tokens)
    with torch.no_grad():
        soft = soft_prompt(adapter.dtype, adapter.device)
    detectors, threshold, metrics = fit(adapter, soft, cfg, cfg.interval)
    meta |= {"detector_config": {k: v for k, v in asdict(cfg).items() if k != "out"}
             | {"image_ids": [image_id(p) for p in cfg.images]},
             "detector_metrics": metrics, "detector_seconds": round(time.perf_counter() - start, 1)}
    rem = Reminder(soft_prompt, detectors["check"], detectors["token"], model=adapter.name, layer=cfg.layer,
                   interval=cfg.interval, threshold=threshold, aggregate=cfg.aggregate,
                   check_start=cfg.check_start, check_end=cfg.check_end, meta=meta)
    folder = rem.save(cfg.out) if cfg.out else None
    return DetectorResult(rem, metrics, folder)


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


def main(argv: list[str] | None = None) -> DetectorResult:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="default: embedded (with --calibrate-only: the reminder's own model)")
    ap.add_argument("--out", default="checkpoints/embedded")
    ap.add_argument("--layer", type=int, default=-1)
    ap.add_argument("--n-components", type=int, default=0)
    ap.add_argument("--c", type=float, nargs="+", default=list(DetectorConfig.c),
                    help="inverse L2 strengths to try (validation picks one)")
    ap.add_argument("--aggregate", choices=AGGREGATES, default=DetectorConfig.aggregate,
                    help="gate: each check alone (last, the paper) or the mean log-odds of the checks so far")
    ap.add_argument("--cuts", choices=CUTS, default=DetectorConfig.cuts,
                    help="training partials: at the check points, or at random word boundaries")
    ap.add_argument("--max-fpr", type=float, default=0.02, help="benign validation generations allowed to fire")
    ap.add_argument("--max-new-tokens", type=int, default=96, help="tokens of the responses pairs are cut from")
    ap.add_argument("--interval", type=int, default=16, help="check interval (stored and calibrated for)")
    ap.add_argument("--check-end", action="store_true",
                    help="also check an answer that ends between check points (with --calibrate-only: turn it on)")
    ap.add_argument("--check-start", action="store_true",
                    help="also check before the first token, on the prompt (and prefill) alone")
    ap.add_argument("--openings", nargs="*", default=[], metavar="TEXT",
                    help="extra assistant-turn openings for harmful training answers, e.g. 'Great question!'")
    ap.add_argument("--images", nargs="*", default=[], metavar="PATH",
                    help="images put in the user turn of extra training conversations (harmful and benign)")
    ap.add_argument("--n-tokens", type=int, default=DEFAULT_TOKENS,
                    help="vectors in the new soft prompt (ignored with --prompt-from, which keeps its prompt)")
    ap.add_argument("--prompt-from", metavar="DIR",
                    help="read through this reminder's trained soft prompt (keeps it and its SAPT record)")
    ap.add_argument("--max-train", type=int, help="cap prompts per set in the train split")
    ap.add_argument("--max-val", type=int)
    ap.add_argument("--max-test", type=int)
    ap.add_argument("--train-cuts", type=int, default=3, help="with --cuts random: partials per training response")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="responses JSONL (default $REMINDER_HOME/responses/<model>[-<lora hash>].jsonl)")
    ap.add_argument("--eval-llava", action="store_true", help="also report AUROC on ../shared llava15_responses")
    ap.add_argument("--calibrate-only", action="store_true",
                    help="keep the reminder in --out and only choose its threshold again on the validation "
                         "generations (its own settings; the fitting options above are ignored, except "
                         "--check-end, which turns the end check on)")
    a = ap.parse_args(argv)
    command = "python -m training.detector " + shlex.join(sys.argv[1:] if argv is None else argv)
    if a.calibrate_only:
        try:  # a clear message for a missing or broken folder, before any model loads
            result = recalibrate(a.out, load_model(a.model or Reminder.load(a.out).model), command, a.check_end)
        except ReminderError as err:
            ap.error(str(err))
        print(json.dumps(result.metrics, indent=2))
        return result
    caps = {s: v for s, v in (("train", a.max_train), ("val", a.max_val), ("test", a.max_test)) if v is not None}
    cfg = DetectorConfig(a.model or "embedded", a.out, a.layer, a.n_components, tuple(a.c), a.max_fpr, a.aggregate,
                         a.cuts, max_new_tokens=a.max_new_tokens,
                         interval=a.interval, check_start=a.check_start, check_end=a.check_end, max_per_split=caps,
                         train_cuts=a.train_cuts, batch_size=a.batch_size, seed=a.seed, cache=a.cache,
                         eval_llava=a.eval_llava, openings=tuple(a.openings), prompt_from=a.prompt_from,
                         images=tuple(a.images), n_tokens=a.n_tokens)
    cfg.command = command
    result = run(cfg)
    print(json.dumps(result.metrics, indent=2))
    return result


if __name__ == "__main__":
    main()
