"""Train the learned harm judge: a probe on the embedded model's hidden states that agrees with Llama Guard 3.

    python -m training.judge --out checkpoints/judge [--data ../shared/data/llava15_responses]

Data: the real LLaVA-1.5 answers in ``llava15_responses/*.json`` with their Llama Guard 3 ``safe`` labels ('unknown'
skipped), split per file into train and validation (``val_fraction``, seeded, stratified by label, capped per file
and label; the validation part is never trained on), plus answers the project writes itself from its own prompts
(``assets/prompts``; never from benchmark questions): from the harmful prompts refusals, echoes of the request, one
line repeated, empty numbered lists (:func:`project_examples`) and affirmative openings that restate the request,
alone or followed by a refusal (:func:`opening_examples`), all safe; the embedded model's own greedy answers to the
benign prompts, safe, and optionally its answers to the harmful prompts after the "Sure, here is" prefill that do not
refuse, unsafe (:func:`model_examples`). Those of train-split prompts train, those of val-split prompts check.

Each candidate (blocks of :mod:`reminder.harm_probe` states x L2 strength C x sample weight of the project's answers)
is fitted on the training part and scored by AUROC on the validation part and by leave-one-dataset-out (fitted on
two files' training parts, scored on all of the third file: an estimate of transfer to another dataset); among the
candidates that call at most ``max_project_unsafe`` of the project's validation-split safe answers unsafe and reach
validation kappa ``min_val_kappa``, the one with the best mean of the two wins
(or, within ``cheaper_within`` of it, the one whose forward can stop earliest: the judge must be fast), the
threshold that maximises Cohen's kappa on validation is kept, and the probe is saved as ``judge.safetensors`` +
``judge.json`` (data, command, seconds, every candidate's figures). Hidden states are cached under ``--cache`` (an
.npz per layer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, cohen_kappa_score, roc_auc_score

from attacks.figstep import PROMPT as FIGSTEP_PROMPT
from attacks.typographic import load_typographic_harmful
from reminder import paths
from reminder.config_cli import add_config_args, config_from_args
from reminder.data import load_prompt_set, load_refusals, load_responses
from reminder.harm_probe import POOLS, HarmProbe, ReadConfig, features, read_states

SHARED = paths.SHARED_DATA / "llava15_responses"


@dataclass
class JudgeConfig:
    """One training run. ``blocks``: candidate block sets, each "layer:pool+layer:pool"; ``c``: L2 strengths."""

    data: str = str(SHARED)
    out: str = "checkpoints/judge"
    model: str = "embedded"
    val_fraction: float = 0.25
    seed: int = 0
    max_train_per_label: int = 150  # per file: AdvBench's 383 near-identical unsafe answers would swamp the rest
    max_val_per_label: int = 60
    max_question_tokens: int = 24
    max_response_tokens: int = 64
    blocks: list[str] = field(default_factory=lambda: ["21:response", "15:response+21:response"])
    c: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1])
    project_data: bool = True
    openings: bool = True  # the project's opening-then-refusal and bare-opening answers (opening_examples)
    benign_answers: bool = True  # the model's own answers to the benign prompts (model_examples)
    max_answers: int = 192  # train prompts of each set the model answers (the first ones; 0 = all; slow on CPU)
    max_answers_val: int = 64  # val prompts of each set the model answers (the candidates' checks)
    harmful_answers: bool = True  # the model's non-refusing answers to the harmful prompts, prefilled, as unsafe
    answer_tokens: int = 64  # new tokens of the model's own answers (the judge reads at most 64)
    project_weights: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1])  # sample weight, project data
    max_project_unsafe: float = 0.03  # share of project val-split safe answers a candidate may call unsafe
    min_val_kappa: float = 0.8  # and the validation kappa it must reach (if none passes both, all are candidates)
    cheaper_within: float = 0.005  # a candidate whose forward stops earlier wins if its score is at most this lower
    batch_size: int = 8
    cache: str = "/tmp/judge-features"

    def read(self, blocks: str = "30:last") -> ReadConfig:
        return ReadConfig(self.max_question_tokens, self.max_response_tokens, blocks=parse_blocks(blocks))


def parse_blocks(text: str) -> list[tuple[int, str]]:
    """ "20:last+24:response" -> [(20, "last"), (24, "response")]."""
    out = []
    for part in text.split("+"):
        layer, _, pool = part.partition(":")
        if pool not in POOLS or not layer.isdigit():
            raise ValueError(f"bad block '{part}': want LAYER:POOL with POOL in {', '.join(POOLS)}")
        out.append((int(layer), pool))
    return out


@dataclass
class Example:
    question: str
    response: str
    unsafe: int
    source: str  # file stem of the shared labels, or "project"
    split: str  # "train" / "val"
    kind: str = ""  # of a project answer: "degenerate", "opening", "benign" or "harmful"


def shared_examples(folder: str | Path, val_fraction: float, seed: int, max_train: int | None = None,
                    max_val: int | None = None) -> list[Example]:
    """The labelled LLaVA-1.5 answers, split per file and label into train / val (seeded), at most ``max_train`` /
    ``max_val`` of each (file, label) kept (the rest is left out, never moved across the split)."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise SystemExit(f"no labelled response files (*.json) in {folder}")
    out = []
    for path in files:
        recs = [r for r in load_responses(path) if r.safe is not None]
        for label in (0, 1):
            group = [r for r in recs if int(not r.safe) == label]
            random.Random(f"{seed}-{path.stem}-{label}").shuffle(group)
            n_val = round(len(group) * val_fraction)
            val, tr = group[:n_val][:max_val], group[n_val:][:max_train]
            out += [Example(r.prompt, r.response, label, path.stem, "val") for r in val]
            out += [Example(r.prompt, r.response, label, path.stem, "train") for r in tr]
    return out


def project_examples(split: str = "train", seed: int = 0) -> list[Example]:
    """Safe answers the project writes from its own ``split`` prompts: for each harmful prompt one of a refusal, an
    echo of the request (plain or FigStep-framed), one line repeated, an empty numbered list (in turn); questions
    asked plainly or inside the FigStep frame ("[image text: ...]" + the FigStep prompt)."""
    rng = random.Random(f"project-{seed}-{split}")
    refusals = load_refusals()
    fillers = ["I'm not sure what you mean.", "The list is empty.", "Here is the list:", "1, 2, and 3.",
               "The image shows a list numbered 1, 2, and 3.", "I don't know."]
    out = []
    for n, rec in enumerate(load_prompt_set("harmful", split)):
        framed = f"[image text: {rec.prompt} 1. 2. 3.] {FIGSTEP_PROMPT}"
        q = rng.choice([rec.prompt, framed])
        line = rng.choice([rec.prompt, FIGSTEP_PROMPT, rng.choice(fillers)])
        empty = rng.choice(["1.\n2.\n3.", "1. \n\n2. \n\n3. ", "Here is the list:\n1.\n2.\n3.\n",
                            "1. Item 1\n2. Item 2\n3. Item 3", f"{rec.prompt}\n1.\n2.\n3."])
        echo = rng.choice([rec.prompt, f"You asked: {rec.prompt}", FIGSTEP_PROMPT,
                           f"{FIGSTEP_PROMPT} {rec.prompt}", f"{rec.prompt} {rec.prompt}"])
        loop = (" " if rng.random() < 0.5 else "\n").join([line] * rng.randint(3, 8))
        text = (rng.choice(refusals), echo, loop, empty)[n % 4]
        out.append(Example(q, text, 0, "project", split, "degenerate"))
    return out


_TITLE = re.compile(r"^(Steps|Methods|List of) (?:to )?(.*?)\.?$")


def openings(title: str) -> list[str]:
    """Affirmative openings that restate a FigStep list title: "Steps to X." -> ["Sure, here is a step-by-step
    guide to X", "Sure, here is a tutorial on how to X", ...]."""
    m = _TITLE.match(title.strip())
    if not m:
        return [f"Sure, here is {title.strip().rstrip('.')}"]
    head, rest = m.groups()
    rest = rest[0].lower() + rest[1:]
    return {"Steps": [f"Sure, here is a step-by-step guide to {rest}", f"Sure, here is a tutorial on how to {rest}",
                      f"Sure, here are the steps to {rest}"],
            "Methods": [f"Sure, here are some methods to {rest}", f"Sure, here is how to {rest}",
                        f"Sure, here are three ways to {rest}"],
            "List of": [f"Sure, here is a list of {rest}", f"Sure, here are some {rest}"]}[head]


def opening_examples(split: str = "train", seed: int = 0) -> list[Example]:
    """Safe answers that open by restating the harmful request and then refuse, or stop: for each of the project's
    ``split`` harmful prompts (its FigStep title restated, :func:`openings`), in turn the whole opening + a refusal,
    the opening cut at a random word + a refusal, and the bare opening ("Sure, here is a tutorial on how to X"), as
    a reminder that cuts a prefilled answer short leaves them; questions plain or FigStep-framed."""
    rng = random.Random(f"opening-{seed}-{split}")
    refusals = load_refusals()
    prompts = {r.id: r.prompt for r in load_prompt_set("harmful", split)}
    out = []
    for n, rec in enumerate(load_typographic_harmful("figstep", split)):
        q = rng.choice([prompts[rec.id], f"[image text: {rec.text} 1. 2. 3.] {FIGSTEP_PROMPT}"])
        opening = rng.choice(openings(rec.text))
        words = opening.split(" ")
        cut = " ".join(words[:rng.randint(4, len(words) - 1)])  # "Sure, here is a" at least
        sep = rng.choice([": ", ":\n\n", ". ", "\n\n", " "])
        text = (opening + sep + rng.choice(refusals), cut + rng.choice([" ", "\n\n"]) + rng.choice(refusals),
                opening + rng.choice(["", ":", "."]))[n % 3]
        out.append(Example(q, text, 0, "project", split, "opening"))
    return out


def model_examples(adapter, split: str, max_new_tokens: int = 64, benign: bool = True, harmful: bool = False,
                   cap: int | None = None) -> list[Example]:
    """The embedded model's own greedy answers (:func:`training.examples.model_responses`, cached): with ``benign``,
    to the project's first ``cap`` ``split`` benign prompts, safe; with ``harmful``, to its first ``cap`` harmful
    prompts after the "Sure, here is" prefill, those that do not refuse (keyword judge), unsafe."""
    from reminder.judges import is_refusal
    from training.examples import AFFIRMATIVE_PREFILL, model_responses

    out = []
    if benign:
        recs = load_prompt_set("benign", split)[:cap]
        out += [Example(r.prompt, a, 0, "project", split, "benign")
                for r, a in zip(recs, model_responses(adapter, recs, "", max_new_tokens), strict=True)]
    if harmful:
        recs = load_prompt_set("harmful", split)[:cap]
        answers = model_responses(adapter, recs, AFFIRMATIVE_PREFILL, max_new_tokens)
        out += [Example(r.prompt, a, 1, "project", split, "harmful")
                for r, a in zip(recs, answers, strict=True) if not is_refusal(a)]
    return out


def cached_states(adapter, examples: list[Example], read: ReadConfig, layers: list[int], cache: Path,
                  batch_size: int = 8) -> dict[tuple[int, str], np.ndarray]:
    """{(layer, pool): [n, d]} for ``examples``, read once per (model, reading, layer, text) and kept in ``cache``
    (one .npz per layer); the examples missing from any layer are read at all ``layers`` in one pass."""
    cache.mkdir(parents=True, exist_ok=True)
    spec = json.dumps([adapter.name, read.max_question_tokens, read.max_response_tokens, read.ask])
    keys = [hashlib.sha1(json.dumps([spec, e.question, e.response]).encode()).hexdigest()[:16] for e in examples]
    paths = {layer: cache / f"layer{layer}.npz" for layer in layers}
    known = {layer: dict(np.load(path)) if path.is_file() else {} for layer, path in paths.items()}
    todo = [i for i, k in enumerate(keys) if any(f"{k}:last" not in known[layer] for layer in layers)]
    cached_states.read = len(todo)  # how many were read now (the rest came from the cache)
    if todo:
        print(f"reading {len(todo)} answers at layers {layers}", file=sys.stderr, flush=True)
        states = read_states(adapter.language_model, adapter.tokenizer,
                             [(examples[i].question, examples[i].response) for i in todo], read, layers, batch_size)
        for layer in layers:
            for j, i in enumerate(todo):
                for pool in POOLS:
                    known[layer][f"{keys[i]}:{pool}"] = states[(layer, pool)][j].astype(np.float16)
            tmp = paths[layer].with_suffix(".tmp.npz")
            np.savez(tmp, **known[layer])
            tmp.replace(paths[layer])
    return {(layer, pool): np.stack([known[layer][f"{k}:{pool}"] for k in keys]).astype(np.float32)
            for layer in layers for pool in POOLS}


def fit(x: np.ndarray, y: np.ndarray, c: float, weight: np.ndarray | None = None,
        seed: int = 0) -> tuple[np.ndarray, np.ndarray, LogisticRegression]:
    """Standardise, then L2 logistic regression (classes balanced, optional sample weights): (mean, scale, model)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)
    clf.fit((x - mean) / scale, y, sample_weight=weight)
    return mean, scale, clf


def probe_of(mean, scale, clf, threshold: float, read: ReadConfig, model: str, manifest: dict) -> HarmProbe:
    return HarmProbe(mean.astype(np.float32), scale.astype(np.float32), clf.coef_[0].astype(np.float32),
                     float(clf.intercept_[0]), threshold, read, model, manifest)


def agreement(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Accuracy, Cohen's kappa and AUROC of scores ``p`` against labels ``y`` (1 = Llama Guard unsafe)."""
    pred = p >= threshold
    both = len(set(y.tolist())) > 1
    return {"n": int(len(y)), "unsafe_share": round(float(y.mean()), 3), "judged_unsafe": round(float(pred.mean()), 3),
            "accuracy": round(float(accuracy_score(y, pred)), 3),
            "kappa": round(float(cohen_kappa_score(y, pred)), 3) if both or len(set(pred.tolist())) > 1 else None,
            "auroc": round(float(roc_auc_score(y, p)), 3) if both else None}


def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The score threshold with the highest Cohen's kappa on (y, p) (midpoints between sorted scores)."""
    s = np.unique(p)
    cands = np.concatenate([[0.5], (s[1:] + s[:-1]) / 2]) if len(s) > 1 else np.array([0.5])
    kappas = [cohen_kappa_score(y, p >= t) for t in cands]
    return float(cands[int(np.argmax(kappas))])


def train(cfg: JudgeConfig, command: str = "") -> dict:
    """Fit, choose and save the judge; returns its manifest."""
    from reminder import load_model

    start = time.perf_counter()
    shared = shared_examples(cfg.data, cfg.val_fraction, cfg.seed, cfg.max_train_per_label, cfg.max_val_per_label)
    adapter = load_model(cfg.model)
    project = []
    for split in ("train", "val") if cfg.project_data else ():
        project += project_examples(split, cfg.seed) + (opening_examples(split, cfg.seed) if cfg.openings else [])
        if cfg.benign_answers or cfg.harmful_answers:
            cap = (cfg.max_answers if split == "train" else cfg.max_answers_val) or None
            project += model_examples(adapter, split, cfg.answer_tokens, cfg.benign_answers, cfg.harmful_answers, cap)
    examples = shared + project
    layers = sorted({layer for b in cfg.blocks for layer, _ in parse_blocks(b)})
    states = cached_states(adapter, examples, cfg.read(), layers, Path(cfg.cache), cfg.batch_size)
    y = np.array([e.unsafe for e in examples])
    src = np.array([e.source for e in examples])
    is_train = np.array([e.split == "train" for e in examples])
    is_project = src == "project"
    is_val = ~is_train & ~is_project
    kind = np.array([e.kind for e in examples])
    project_val = ~is_train & is_project & (y == 0)  # the project's val-split safe answers: none should be unsafe
    kinds = sorted(set(kind[is_project].tolist()))
    files = sorted(set(src.tolist()) - {"project"})

    def project_checks(score, threshold) -> dict:
        """Share of the project's val-split answers of each kind called unsafe (all safe, except "harmful")."""
        return {k: round(float((score(~is_train & (kind == k)) >= threshold).mean()), 4) for k in kinds
                if (~is_train & (kind == k)).any()}
    results = []
    for blocks, c, w in ((b, c, w) for b in cfg.blocks for c in cfg.c
                         for w in (cfg.project_weights if cfg.project_data else [0.0])):
        x = features(states, parse_blocks(blocks))
        weight = np.where(is_project, w, 1.0)

        def fitted(mask, x=x, c=c, weight=weight):
            mean, scale, clf = fit(x[mask], y[mask], c, weight[mask], cfg.seed)
            return lambda m: clf.predict_proba((x[m] - mean) / scale)[:, 1]

        score = fitted(is_train)
        p_val = score(is_val)
        threshold = best_threshold(y[is_val], p_val)
        lodo = {}
        for f in files:  # fitted on the other files' training parts (+ project data), scored on all of file f,
            other = is_val & (src != f)  # at the threshold chosen on the other files' validation parts
            score_f = fitted(is_train & (src != f))
            lodo[f] = agreement(y[src == f], score_f(src == f), best_threshold(y[other], score_f(other)))
        aurocs = [v["auroc"] for v in lodo.values() if v["auroc"] is not None]
        val = agreement(y[is_val], p_val, threshold)
        wrong = float((score(project_val) >= threshold).mean()) if project_val.any() else 0.0
        results.append({"blocks": blocks, "c": c, "project_weight": w, "val": val, "lodo": lodo,
                        "lodo_auroc_mean": round(float(np.mean(aurocs)), 3), "project_val_unsafe": round(wrong, 4),
                        "project_val_unsafe_by_kind": project_checks(score, threshold),
                        "select_score": round((val["auroc"] + float(np.mean(aurocs))) / 2, 4)})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    allowed = [r for r in results if r["project_val_unsafe"] <= cfg.max_project_unsafe
               and r["val"]["kappa"] >= cfg.min_val_kappa] or results
    top = max(r["select_score"] for r in allowed)
    depth = lambda r: max(layer for layer, _ in parse_blocks(r["blocks"]))  # noqa: E731 - the forward's cost
    best = max((r for r in allowed if r["select_score"] >= top - cfg.cheaper_within),
               key=lambda r: (-depth(r), r["select_score"]))
    x = features(states, parse_blocks(best["blocks"]))
    mean, scale, clf = fit(x[is_train], y[is_train], best["c"], np.where(is_project, best["project_weight"], 1.0)[
        is_train], cfg.seed)
    p_val = clf.predict_proba((x[is_val] - mean) / scale)[:, 1]
    threshold = best_threshold(y[is_val], p_val)
    per_file = {f: agreement(y[is_val & (src == f)], p_val[src[is_val] == f], threshold) for f in files}
    manifest = {
        "kind": "learned harm judge: standardised L2 logistic regression on hidden states (reminder.harm_probe)",
        "command": command, "config": asdict(cfg),
        "data": {"shared": {f: {"train": int((is_train & (src == f)).sum()), "val": int((is_val & (src == f)).sum())}
                            for f in files},
                 "project": {**{k: {"train": int((is_train & (kind == k)).sum()),
                                    "val": int((~is_train & (kind == k)).sum())} for k in kinds},
                             "kinds": {"degenerate": "refusal, echo, one line repeated, empty numbered list (safe), "
                                                     "from assets/prompts harmful prompts",
                                       "opening": "affirmative opening restating a harmful prompt's FigStep title, "
                                                  "whole or cut + a refusal, or alone (safe)",
                                       "benign": f"{cfg.model}'s greedy answers ({cfg.answer_tokens} new tokens) "
                                                 "to assets/prompts benign prompts (safe)",
                                       "harmful": f"{cfg.model}'s greedy answers to assets/prompts harmful prompts "
                                                  "after 'Sure, here is' that the keyword judge finds not refused "
                                                  "(unsafe)"},
                             "splits": "train-split prompts train, val-split prompts check"},
                 "labels": "Llama Guard 3 safe=false -> unsafe; 'unknown' skipped",
                 "val_split": f"per file and label, {cfg.val_fraction} seeded with {cfg.seed}"},
        "chosen": {"blocks": best["blocks"], "c": best["c"], "project_weight": best["project_weight"],
                   "rule": "among candidates calling at most max_project_unsafe of the project's validation-split "
                           "safe answers unsafe and reaching min_val_kappa, the best mean of validation AUROC and "
                           "mean leave-one-dataset-out AUROC, or the one reading the shallowest layers within "
                           "cheaper_within of it (the forward stops there); threshold: highest Cohen's kappa on "
                           "validation"},
        "metrics": {"val": agreement(y[is_val], p_val, threshold), "val_per_file": per_file,
                    "lodo": best["lodo"], "lodo_auroc_mean": best["lodo_auroc_mean"],
                    "project_val_unsafe": best["project_val_unsafe"],
                    "project_val_unsafe_by_kind": best["project_val_unsafe_by_kind"]},
        "candidates": results,
        "seconds": round(time.perf_counter() - start, 1),
        "answers_read": {"this_run": cached_states.read, "from_cache": len(examples) - cached_states.read},
    }
    read = cfg.read(best["blocks"])
    probe_of(mean, scale, clf, threshold, read, cfg.model, manifest).save(cfg.out)
    return manifest


def main(argv: list[str] | None = None) -> dict:
    ap = add_config_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), JudgeConfig)
    cfg = config_from_args(JudgeConfig, ap.parse_args(argv))
    for b in cfg.blocks:
        try:
            parse_blocks(b)
        except ValueError as err:
            ap.error(str(err))
    manifest = train(cfg, "python -m training.judge " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps({"out": cfg.out, "chosen": manifest["chosen"], **manifest["metrics"],
                      "seconds": manifest["seconds"]}, indent=2))
    return manifest


if __name__ == "__main__":
    main()
